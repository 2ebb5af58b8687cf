// Small progressive enhancements; every page works without them.
document.addEventListener("submit", (event) => {
  // Ask before destructive actions (forms marked data-confirm).
  const form = event.target;
  const question = form.dataset ? form.dataset.confirm : null;
  if (question && !window.confirm(question)) event.preventDefault();
});

function syncRelay() {
  // Dim the SMTP server fields unless "Your own SMTP server" is the chosen channel.
  const chosen = document.querySelector("input[name=channel]:checked");
  const relay = document.querySelector("fieldset.relay");
  if (!relay) return;
  relay.classList.toggle("inactive", !chosen || chosen.value !== "smtp");
  document.querySelectorAll(".compare [data-col]").forEach((cell) => {
    cell.classList.toggle("col-chosen", chosen && cell.dataset.col === chosen.value);
  });
}
document.addEventListener("change", (event) => {
  if (event.target.name === "channel") syncRelay();
});
document.addEventListener("DOMContentLoaded", syncRelay);
