"""Write the remote-fault table (tests/integration/fault_matrix.py) into docs/reliability.md.

    .venv/bin/python scripts/fault_table.py          # rewrite the section between the markers
    .venv/bin/python scripts/fault_table.py --check  # exit 1 when the docs differ

Only the text between `<!-- faults:begin -->` and `<!-- faults:end -->` is touched. Each row is
checked against the code by tests/integration/test_remote_faults.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from fault_matrix import render, section_of, with_section  # noqa: E402

DOCS = ROOT / "docs" / "reliability.md"


def main(argv: list[str]) -> int:
    text = DOCS.read_text()
    table = render()
    if "--check" in argv:
        if section_of(text) == table:
            return 0
        print(f"{DOCS} is out of date: run {Path(__file__).name}", file=sys.stderr)
        return 1
    DOCS.write_text(with_section(text, table))
    print(f"wrote {len(table.splitlines()) - 4} rows into {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
