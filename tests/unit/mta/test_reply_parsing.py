from __future__ import annotations

import pytest

from postway.channels.managed import queue_id, retry_after
from postway.mta.smtp_client import Reply, data_block


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("4.7.0 try again in 60 seconds", 60.0), ("Please retry after 5 minutes", 300.0),
     ("greylisted, try again in 2 mins", 120.0), ("4.2.2 Mailbox full", None),
     ("Try again later", None), ("come back in 1 hour", 3600.0)],
)  # fmt: skip
def test_retry_after(text, seconds):
    assert retry_after(text) == seconds


@pytest.mark.parametrize(
    ("text", "qid"),
    [("2.0.0 Ok: queued as 4XyZ1abc", "4XyZ1abc"), ("OK id=1rAbC-000123-XY", "1rAbC-000123-XY"),
     ("2.0.0 OK  1700000000 d75a77b69052e-42.7 - gsmtp", "d75a77b69052e-42.7"),
     ("2.0.0 Ok", None)],
)  # fmt: skip
def test_queue_id(text, qid):
    assert queue_id(text) == qid


def test_reply_status_and_data_block():
    assert Reply(550, "5.1.1 No such user").status == "5.1.1"
    assert Reply(250, "OK").status is None
    assert str(Reply(451, "4.3.0 a\nb")) == "451 4.3.0 a b"
    assert data_block(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"
