"""The row every reliability harness prints (bench/chaos.py, bench/soak.py, bench/restart.py,
bench/outage.py), so `docs/reliability.md` holds one table whose rows come from the commands
it names. A harness prints its rows with `print_rows`; with `--markdown` they are table lines
ready to paste under `HEADER`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

COLUMNS = (
    "scenario",
    "database",
    "runs",
    "messages",
    "kills or faults",
    "lost",
    "duplicated",
    "errors",
    "command",
)
HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + "|".join(
    "---" if c in ("scenario", "database", "command") else "---:" for c in COLUMNS
) + "|"


@dataclass
class ReliabilityRow:
    scenario: str
    database: str  # "sqlite" or "postgres"
    runs: int
    messages: int  # accepted (202) by the API, i.e. acknowledged to the sender
    faults: str  # e.g. "24 kills (12 web, 12 worker)" or "PostgreSQL down 30 s"
    lost: int  # acknowledged but never delivered nor in a final failed state
    duplicated: int  # extra copies seen by the receiving peer
    errors: str  # what the API answered besides 202, e.g. "0 500; 31 503"
    command: str  # the command that produced the row

    def cells(self) -> list[str]:
        return [
            self.scenario,
            self.database,
            str(self.runs),
            f"{self.messages:,}",
            self.faults,
            str(self.lost),
            str(self.duplicated),
            self.errors,
            f"`{self.command}`",
        ]


def render(rows: Iterable[ReliabilityRow], markdown: bool) -> str:
    rows = list(rows)
    if markdown:
        return "\n".join([HEADER, *("| " + " | ".join(r.cells()) + " |" for r in rows)])
    table = [list(COLUMNS), *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table)


def print_rows(rows: Iterable[ReliabilityRow], markdown: bool) -> None:
    print(render(rows, markdown), flush=True)
