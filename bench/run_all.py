"""`make bench`: every benchmark in turn, each printing its own table.

    .venv/bin/python bench/run_all.py [--quick]

--reliability runs instead the reliability harnesses whose rows are docs/reliability.md's
table (kill chaos, database outages, restarts, the 10-minute soak; about 75 minutes).

--quick runs smaller workloads (8 s HTTP runs, 10,000 backlog, 2,000 messages, 100,000 queued
rows) for a fast look. The headline throughput figure is api_throughput.py (Postway over HTTP
against Postfix over SMTP); throughput.py is the in-process view of the delivery side.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    quick = "--quick" in sys.argv
    if "--reliability" in sys.argv:  # the harnesses behind docs/reliability.md (about 75 min)
        runs = [
            ["chaos.py", "--database", "sqlite,postgres", "--channel", "managed,gmail",
             "--kills", "20", "--markdown"],
            ["outage.py", "--markdown"],
            ["restart.py", "--database", "sqlite,postgres", "--messages", "10000", "--markdown"],
            ["restart.py", "--database", "sqlite,postgres", "--messages", "10000",
             "--mode", "kill", "--markdown"],
            ["soak.py", "--database", "sqlite,postgres", "--minutes", "10", "--measure-max",
             "--markdown"],
        ]  # fmt: skip
        return _run(runs)
    runs = [
        ["api_throughput.py", *(["--quick"] if quick else [])],
        ["bounce_corpus.py"],
        ["bounce_scaling.py", *(["--max-mb", "1"] if quick else [])],
        ["pipelining.py"],
        ["queue_scale.py", *(["--rows", "100000"] if quick else [])],
        ["throughput.py", *(["--messages", "2000"] if quick else [])],  # in-process
    ]
    _run(runs)


def _run(runs: list[list[str]]) -> None:
    failed = 0
    for args in runs:
        print(f"\n## {' '.join(args)}\n", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]]).returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
