"""The From rule: what recipients see per channel."""

from __future__ import annotations

from postway.domain.sender import effective_from
from postway.domain.states import ChannelName


def test_managed_and_smtp_keep_the_identity_address() -> None:
    for channel in (ChannelName.MANAGED, ChannelName.SMTP):
        assert effective_from(channel, "ada@acme.example", "x@gmail.test") == "ada@acme.example"


def test_gmail_shows_the_account_unless_the_identity_is_a_verified_alias() -> None:
    aliases = ["Sales@Acme.example"]
    assert (
        effective_from(ChannelName.GMAIL, "sales@acme.example", "rep@gmail.test", aliases)
        == "sales@acme.example"
    )
    assert (
        effective_from(ChannelName.GMAIL, "other@acme.example", "rep@gmail.test", aliases)
        == "rep@gmail.test"
    )
    assert effective_from(ChannelName.GMAIL, "REP@gmail.test", "rep@gmail.test") == (
        "rep@gmail.test"
    )


def test_gmail_without_an_account_has_no_from() -> None:
    assert effective_from(ChannelName.GMAIL, "ada@acme.example", None) is None
