"""Agreement of postway's bounce parser with the reference classifier over the corpus.

    .venv/bin/python bench/bounce_corpus.py [CORPUS_DIR] [--misses]

Prints agreement on reason, hard/soft and recipient (first result per file, then every
recipient), a confusion matrix, agreement per expected reason and per sending system, for
every rule of the classifier the emails and sending systems it fires on (a rule that fires on
one email only is listed as suspect), and the bounces classified per second on one core.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from postway.bounces import parse_bounce  # noqa: E402
from postway.bounces.model import BounceReport  # noqa: E402

DEFAULT_CORPUS = ROOT / "tests" / "data" / "bounces"
# The reference classifier's stand-in when an email names no recipient at all.
_PLACEHOLDER = "undisclosed-recipient-in-headers@libsisimai.org.invalid"


def load_expected(corpus: Path) -> list[dict[str, Any]]:
    with (corpus / "expected.jsonl").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def same_recipient(expected: str | None, got: str | None) -> bool:
    if expected in (None, _PLACEHOLDER):
        return got is None or got == expected
    return (got or "").lower() == expected.lower()


def evaluate(corpus: Path) -> dict[str, Any]:
    """Parse every file; return per-file comparison rows and the parse time."""
    rows = []
    elapsed = 0.0
    for exp in load_expected(corpus):
        raw = (corpus / exp["file"]).read_bytes()
        started = time.perf_counter()
        report: BounceReport = parse_bounce(raw)
        elapsed += time.perf_counter() - started
        got = report.results
        first = got[0] if got else None
        per_rcpt = []
        for i, want in enumerate(exp["results"]):
            mine = got[i] if i < len(got) else None
            per_rcpt.append((want, mine))
        rows.append({"exp": exp, "first": first, "kind": report.kind, "per": per_rcpt})
    return {"rows": rows, "elapsed": elapsed}


def _grouped(rows: list[dict[str, Any]], key: Any) -> list[list[Any]]:  # noqa: ANN401
    """Per group: files, reason agreement and hard/soft agreement (first result per file)."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        g = groups[key(r)]
        g[0] += 1
        g[1] += bool(r["first"] and r["first"].reason == r["exp"]["reason"])
        g[2] += bool(r["first"] and r["first"].hard) == r["exp"]["hardbounce"]
    return [[k, v[0], pct(v[1], v[0]), pct(v[2], v[0])]
            for k, v in sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))]


def rule_support(rows: list[dict[str, Any]]) -> dict[str, tuple[set[str], set[str], int, int]]:
    """For each rule that decided a recipient: the emails and engines it decided on, how many
    recipients it decided and how many of those agree with the reference."""
    support: dict[str, tuple[set[str], set[str], list[int]]] = {}
    for r in rows:
        for want, mine in r["per"]:
            if mine is None or not mine.rule:
                continue
            files, engines, counts = support.setdefault(mine.rule, (set(), set(), [0, 0]))
            files.add(r["exp"]["file"])
            engines.add(r["exp"]["engine"])
            counts[0] += 1
            counts[1] += mine.reason == want["reason"]
    return {k: (f, e, c[0], c[1]) for k, (f, e, c) in support.items()}


def speed(corpus: Path, passes: int = 5) -> tuple[float, float]:
    """Bounces classified per second on one core: the best of `passes` runs over the corpus,
    timed in CPU time (what one core delivers, whatever else the machine is doing) and, next
    to it, in wall-clock time (depressed when other processes share the cores)."""
    raws = [(corpus / exp["file"]).read_bytes() for exp in load_expected(corpus)]
    best_cpu = best_wall = float("inf")
    for _ in range(passes):
        cpu, wall = time.process_time(), time.perf_counter()
        for raw in raws:
            parse_bounce(raw)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return (len(raws) / best_cpu if best_cpu else float("inf"),
            len(raws) / best_wall if best_wall else float("inf"))


def _loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (what else the machine was doing), or "n/a"."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def pct(n: int, d: int) -> str:
    return f"{n}/{d} = {100.0 * n / d:.1f}%" if d else "n/a"


def table(headers: list[str], body: list[list[Any]]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(result: dict[str, Any]) -> dict[str, float]:
    rows = result["rows"]
    n = len(rows)
    reason = sum(1 for r in rows if r["first"] and r["first"].reason == r["exp"]["reason"])
    hard = sum(1 for r in rows if bool(r["first"] and r["first"].hard) == r["exp"]["hardbounce"])
    rcpt = sum(1 for r in rows
               if same_recipient(r["exp"]["recipient"], r["first"] and r["first"].recipient))
    pairs = [p for r in rows for p in r["per"]]
    p_reason = sum(1 for w, m in pairs if m and m.reason == w["reason"])
    p_hard = sum(1 for w, m in pairs if bool(m and m.hard) == w["hardbounce"])
    p_rcpt = sum(1 for w, m in pairs if same_recipient(w["recipient"], m and m.recipient))
    return {"files": n, "reason": reason, "hard": hard, "recipient": rcpt, "pairs": len(pairs),
            "p_reason": p_reason, "p_hard": p_hard, "p_rcpt": p_rcpt}


def print_scaling() -> None:
    """Parse time against input size for inputs built to trip backtracking patterns: the
    per-KB cost should stay flat as size grows 4x and 16x (linear time)."""

    def prose(n: int) -> bytes:
        lines = [f"<user{i}@example.net>: 550 5.1.1 user unknown, host said: nope ({i})"
                 for i in range(n)]
        return b"From: MAILER-DAEMON@example.org\nSubject: Undelivered\n\n" + "\n".join(lines).encode()

    def filler(n: int) -> bytes:
        return (b"From: MAILER-DAEMON@example.org\nSubject: failure notice\n\n"
                + b"user@ " * n + b"5.1.1." * n + b"<" * n + b"x@y." * n)

    rows = []
    for name, build, base in (("prose", prose, 400), ("filler", filler, 20_000)):
        for mult in (1, 4, 16):
            raw = build(base * mult)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                parse_bounce(raw)
                best = min(best, time.perf_counter() - t)
            rows.append([name, f"{len(raw) / 1024:.0f}", f"{best * 1000:.1f}",
                         f"{best * 1e6 / (len(raw) / 1024):.1f}"])
    print("\nScaling (pathological inputs)\n")
    print(table(["input", "KB", "parse ms", "us per KB"], rows))


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    corpus = Path(args[0]) if args else DEFAULT_CORPUS
    result = evaluate(corpus)
    rows = result["rows"]
    s = summarize(result)
    print(f"Bounce corpus: {corpus} ({s['files']} emails, {s['pairs']} recipients)\n")
    print(table(["measure", "first result per file", "every recipient"], [
        ["reason", pct(s["reason"], s["files"]), pct(s["p_reason"], s["pairs"])],
        ["hard/soft", pct(s["hard"], s["files"]), pct(s["p_hard"], s["pairs"])],
        ["recipient", pct(s["recipient"], s["files"]), pct(s["p_rcpt"], s["pairs"])],
    ]))

    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        confusion[r["exp"]["reason"]][r["first"].reason if r["first"] else "(none)"] += 1
    body = []
    for want in sorted(confusion, key=lambda k: -sum(confusion[k].values())):
        got = confusion[want]
        wrong = ", ".join(f"{k} {v}" for k, v in got.most_common() if k != want)
        body.append([want, sum(got.values()), got[want], wrong or "-"])
    print("\nConfusion by expected reason (first result per file)\n")
    print(table(["expected", "files", "agree", "classified instead as"], body))

    print("\nBy expected reason (first result per file)\n")
    print(table(["reason", "files", "reason agrees", "hard/soft agrees"],
                _grouped(rows, lambda r: r["exp"]["reason"])))
    print("\nBy sending system (first result per file)\n")
    print(table(["engine", "files", "reason agrees", "hard/soft agrees"],
                _grouped(rows, lambda r: r["exp"]["engine"])))

    support = rule_support(rows)
    print("\nRules: the emails and sending systems each fires on (every recipient), and how "
          "often its answer agrees\n")
    print(table(["rule", "emails", "engines", "agrees"], [
        [rule, len(files), len(engines), pct(agree, fired)]
        for rule, (files, engines, fired, agree) in sorted(
            support.items(), key=lambda kv: (-len(kv[1][0]), kv[0]))
    ]))
    single = sorted(rule for rule, (files, _, _, _) in support.items() if len(files) == 1)
    print(f"\nRules that fire on one email only (suspect): {', '.join(single) or 'none'}")
    for rule in single:
        files = support[rule][0]
        print(f"  {rule}: {', '.join(sorted(files))}")
    from postway.domain.bounce_rules import RULES

    idle = [r.id for r in RULES if r.id not in support]
    print(f"Table rules that fire on no email here: {', '.join(idle) or 'none'}")

    cpu_rate, wall_rate = speed(corpus)
    load = _loadavg()
    print(f"\nParse speed (one core): {cpu_rate:.0f} bounces/s by CPU time, {wall_rate:.0f}"
          " bounces/s by wall clock (best of 5 passes over the corpus each; load average"
          f" {load}; judge by the CPU-time rate when the machine is shared)")

    if "--scaling" in argv:
        print_scaling()

    if "--misses" in argv:
        print("\nMisses (file: expected -> got)\n")
        for r in rows:
            f, exp = r["first"], r["exp"]
            if not f or f.reason != exp["reason"] or not same_recipient(exp["recipient"],
                                                                      f.recipient):
                got = f"{f.reason} {f.status} {f.recipient}" if f else "(none)"
                print(f"{exp['file']}: {exp['reason']} {exp['status']} {exp['recipient']}"
                      f" -> {got} [{r['kind']}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
