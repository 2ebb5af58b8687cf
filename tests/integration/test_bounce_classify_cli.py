"""`postway bounce classify`, run as a real subprocess: one JSON object per line, never a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "bounces"
KEYS = {"file", "recipient", "status", "reason", "hard"}


NOT_A_BOUNCE = b"""From: Alice <alice@example.org>
To: Bob <bob@example.net>
Subject: Lunch on Friday?
Message-ID: <lunch-1@example.org>
Date: Fri, 27 Nov 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hi Bob, are we still on for lunch on Friday? Alice
"""


def classify(*paths: Path | str) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run(
        [sys.executable, "-m", "postway", "bounce", "classify", *map(str, paths)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, rows, done.stderr


def expected(name: str) -> dict[str, Any]:
    with (CORPUS / "expected.jsonl").open() as fh:
        for line in fh:
            entry = json.loads(line)
            if entry["file"] == name:
                return entry
    raise KeyError(name)


def assert_row_shape(row: dict[str, Any]) -> None:
    assert set(row) >= KEYS, row
    assert set(row) - KEYS <= {"error"}, row
    assert isinstance(row["hard"], bool)
    assert row["recipient"] is None or isinstance(row["recipient"], str)


def test_corpus_files_give_one_row_per_recipient_in_report_order() -> None:
    names = ["lhost-postfix-01.eml", "lhost-v5sendmail-05.eml", "arf-01.eml"]
    code, rows, stderr = classify(*(CORPUS / n for n in names))
    assert code == 0, stderr
    for row in rows:
        assert_row_shape(row)
        assert "error" not in row
    by_file: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_file.setdefault(Path(row["file"]).name, []).append(row)
    assert list(by_file) == names  # the order given on the command line

    sendmail = by_file["lhost-v5sendmail-05.eml"]
    want = expected("lhost-v5sendmail-05.eml")["results"]
    assert [r["recipient"] for r in sendmail] == [w["recipient"] for w in want]
    assert [(r["reason"], r["hard"]) for r in sendmail] == [
        ("blocked", False),
        ("hostunknown", True),
        ("hostunknown", True),
        ("userunknown", True),
    ]

    postfix = by_file["lhost-postfix-01.eml"][0]
    assert postfix["recipient"] == expected("lhost-postfix-01.eml")["recipient"]
    assert postfix["status"] and postfix["status"][0] == "5"

    (arf,) = by_file["arf-01.eml"]
    assert (arf["reason"], arf["hard"]) == ("feedback", False)


def test_folder_is_searched_recursively_in_sorted_order(tmp_path: Path) -> None:
    layout = {
        "b/lhost-qmail-11.eml": "lhost-qmail-11.eml",
        "a/deeper/lhost-postfix-06.eml": "lhost-postfix-06.eml",
        "a/lhost-exim-01.eml": "lhost-exim-01.eml",
        "c.eml": "lhost-opensmtpd-01.eml",
    }
    for target, source in layout.items():
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / source, tmp_path / target)
    (tmp_path / "a" / "notes.txt").write_text("not an .eml file: skipped")

    code, rows, stderr = classify(tmp_path)
    assert code == 0, stderr
    for row in rows:
        assert_row_shape(row)
    files = list(dict.fromkeys(row["file"] for row in rows))
    assert files == [str(p) for p in sorted(tmp_path.rglob("*.eml"))]
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == [
        "a/deeper/lhost-postfix-06.eml",
        "a/lhost-exim-01.eml",
        "b/lhost-qmail-11.eml",
        "c.eml",
    ]
    first = {Path(r["file"]).relative_to(tmp_path).as_posix(): r for r in reversed(rows)}
    for target, source in layout.items():
        want = expected(source)
        assert first[target]["recipient"] == want["recipient"]
        assert first[target]["hard"] is want["hardbounce"]


def test_not_a_bounce_gives_one_row_with_reason_null(tmp_path: Path) -> None:
    mail = tmp_path / "lunch.eml"
    mail.write_bytes(NOT_A_BOUNCE)
    code, rows, stderr = classify(mail)
    assert code == 0, stderr
    assert rows == [
        {"file": str(mail), "recipient": None, "status": None, "reason": None, "hard": False}
    ]


def test_unreadable_path_gives_an_error_row_and_exit_code_0(tmp_path: Path) -> None:
    missing = tmp_path / "missing.eml"
    mail = tmp_path / "lunch.eml"
    mail.write_bytes(NOT_A_BOUNCE)
    code, rows, stderr = classify(missing, mail)
    assert code == 0, stderr
    assert len(rows) == 2
    bad, good = rows
    assert_row_shape(bad)
    assert bad["file"] == str(missing)
    assert (bad["recipient"], bad["status"], bad["reason"], bad["hard"]) == (
        None,
        None,
        None,
        False,
    )
    assert isinstance(bad["error"], str) and bad["error"]
    assert "error" not in good and good["file"] == str(mail)  # the run goes on after it


UNKNOWN_USER = b"""From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: sender@example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

<bob@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>:
    Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO
    command)

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; bob@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User
    unknown in virtual mailbox table

--B--
"""


def classify_explained(*paths: Path | str) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run(
        [sys.executable, "-m", "postway", "bounce", "classify", "--explain", *map(str, paths)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, rows, done.stderr


def test_explain_names_the_deciding_rule_its_source_and_the_text(tmp_path: Path) -> None:
    from postway.domain.bounce_rules import BY_ID

    mail = tmp_path / "unknown.eml"
    mail.write_bytes(UNKNOWN_USER)
    lunch = tmp_path / "lunch.eml"
    lunch.write_bytes(NOT_A_BOUNCE)
    code, rows, stderr = classify_explained(mail, CORPUS / "lhost-postfix-46.eml", lunch)
    assert code == 0, stderr
    first, corpus_row, not_bounce = rows
    assert (first["reason"], first["hard"]) == ("userunknown", True)
    explained = first["explain"]
    # The status code decided: the RFC 3463 X.1.1 rule, with the code as its evidence.
    assert explained["rule"] == "status.bad-mailbox"
    assert explained["source"] == BY_ID["status.bad-mailbox"].source
    assert "RFC 3463" in explained["source"]
    assert "5.1.1" in explained["evidence"]
    # A reply with no enhanced code and no decisive words: RFC 5321's 550 at RCPT decides.
    assert corpus_row["reason"] == "userunknown"
    assert corpus_row["explain"]["rule"] == "reply.mailbox-unavailable-at-rcpt"
    assert "550" in corpus_row["explain"]["evidence"]
    assert "RFC 5321" in corpus_row["explain"]["source"]
    assert not_bounce["reason"] is None and not_bounce["explain"]["rule"] is None
    # Without --explain the rows keep their plain shape.
    _, plain, _ = classify(mail)
    assert "explain" not in plain[0]


def test_explain_shows_the_matched_words(tmp_path: Path) -> None:
    code, rows, stderr = classify_explained(CORPUS / "lhost-postfix-01.eml")
    assert code == 0, stderr
    (row,) = rows
    assert row["explain"]["rule"].startswith("words.")
    assert "procmail" in row["explain"]["evidence"]  # the text the rule matched
