// Small progressive enhancements; every page works without them.
document.documentElement.classList.add("js");

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

// --- the menu button on narrow screens ------------------------------------------------------
document.addEventListener("click", (event) => {
  const button = event.target.closest(".menu-button");
  if (!button) return;
  const menu = document.getElementById(button.getAttribute("aria-controls"));
  const open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  menu.classList.toggle("open", open);
});

// --- copy buttons (data-copy) ---------------------------------------------------------------
function showCopyButtons(root) {
  if (!navigator.clipboard) return; // plain HTTP on another host: no clipboard API
  root.querySelectorAll("button[data-copy]").forEach((b) => { b.hidden = false; });
}
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const label = button.firstChild;
  if (!button.dataset.label) button.dataset.label = label.textContent;
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    label.textContent = "Copied ";
  } catch (err) {
    label.textContent = "Copy failed ";
  }
  window.setTimeout(() => { label.textContent = button.dataset.label; }, 2000);
});

// --- live parts (data-live-url): polled and swapped in place until nothing can change ------
const LIVE_EVERY_MS = 2500;
// <details> the person opened or closed by hand keep that state across swaps
const toggled = new Map();
document.addEventListener("toggle", (event) => {
  const key = event.target.dataset ? event.target.dataset.keepOpen : null;
  if (key) toggled.set(key, event.target.open);
}, true);

function schedule(part) {
  if (!part.dataset.liveUrl) return; // finished: nothing more to fetch
  window.setTimeout(() => refresh(part), LIVE_EVERY_MS);
}

async function refresh(part) {
  let answer;
  try {
    // a lost session redirects to the login page: stop instead of following it
    answer = await fetch(part.dataset.liveUrl, { credentials: "same-origin", redirect: "manual" });
  } catch (err) {
    schedule(part); // the network blinked: try again later
    return;
  }
  if (!answer.ok) {
    if (answer.status >= 500 || answer.status === 429) schedule(part);
    return;
  }
  const holder = document.createElement("template");
  holder.innerHTML = (await answer.text()).trim();
  const fresh = holder.content.firstElementChild;
  if (!fresh || fresh.id !== part.id) return;
  if (fresh.dataset.version === part.dataset.version) {
    if (!fresh.dataset.liveUrl) delete part.dataset.liveUrl;
    schedule(part);
    return;
  }
  fresh.querySelectorAll("details[data-keep-open]").forEach((d) => {
    if (toggled.has(d.dataset.keepOpen)) d.open = toggled.get(d.dataset.keepOpen);
  });
  showCopyButtons(fresh);
  part.replaceWith(fresh);
  schedule(fresh);
}

document.addEventListener("DOMContentLoaded", () => {
  syncRelay();
  showCopyButtons(document);
  document.querySelectorAll("[data-live-url]").forEach(schedule);
});
