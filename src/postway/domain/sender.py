"""Which address recipients see as From, per channel (no I/O).

Managed and custom SMTP: the identity's address. Gmail: the connected account's address,
unless the identity's address is one of the account's verified send-as aliases, in which
case it keeps its own (Gmail itself would rewrite any other From to the account's address,
so Postway writes what Gmail will send and stores what is sent).
"""

from __future__ import annotations

from collections.abc import Iterable

from postway.domain.states import ChannelName


def _same(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def effective_from(
    channel: ChannelName,
    identity_address: str,
    account_address: str | None = None,
    send_as: Iterable[str] = (),
) -> str | None:
    """The From address recipients will see; None when the channel needs a connected
    account and none is connected (nothing can be sent yet)."""
    if channel is not ChannelName.GMAIL:
        return identity_address
    if account_address is None:
        return None
    if _same(identity_address, account_address):
        return account_address
    if any(_same(identity_address, alias) for alias in send_as):
        return identity_address
    return account_address
