"""Bounces for Gmail senders: reading the connected Gmail mailbox for delivery reports,
never changing it.

Gmail hands Postway no bounce address (mail leaves with the account's own return path), so a
bounce comes back as a report from mailer-daemon in the sender's own mailbox. For every
account connected with bounce scanning (and the `gmail.readonly` scope granted), one pass:

1. finds the oldest send through Gmail still awaiting its verdict (`sent` within the last
   `WINDOW_DAYS`); none: the mailbox is not read at all;
2. asks `users.messages.list` for report-looking messages since then (`QUERY_SIGNS
   after:<epoch>`, a query real Gmail and the stand-in both understand);
3. fetches each message not read before with `format=raw` and hands it to
   `mailbox_match.apply_mailbox_report`, which parses it in the isolated parser, matches it
   by the quoted Message-ID and recipient to that user's Gmail deliveries only, marks them
   `bounced` and remembers the message, so no pass applies it twice.

Invariant: only `messages.list` and `messages.get` are called. Nothing is deleted, labelled,
moved or marked read (the readonly scope could not do it anyway).

A refused token (401, or `invalid_grant` at refresh) marks the account `needs_reconnect`
through the account interface, as sending does; a missing readonly scope only stops the
scanning (sending does not need it). Each worker process runs one `GmailBounceScanner`;
two scanning the same mailbox at once cannot apply a report twice (`mailbox_match`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from postway.bounces.mailbox_match import (
    IGNORED,
    MailboxOwner,
    Matched,
    apply_mailbox_report,
    oldest_awaiting_send,
    remember,
    seen_ids,
)
from postway.channels.base import AccountAccess, AccountNeedsReconnect, AccountStatus
from postway.channels.gmail import PROVIDER
from postway.channels.google_api import (
    SCOPE_READONLY,
    GoogleApi,
    GoogleAuthError,
    GoogleError,
    GoogleInvalidRequest,
    GoogleTooLarge,
)
from postway.config import Settings
from postway.domain.states import ChannelName
from postway.errors import ChannelError
from postway.store.db import Database
from postway.store.models import ConnectedAccount

log = logging.getLogger("postway.bounces")

CHANNELS = (ChannelName.GMAIL.value,)
# Delivery reports come from the receiving side's mailer-daemon or postmaster (Gmail's own:
# "Mail Delivery Subsystem <mailer-daemon@googlemail.com>"); each one is confirmed by
# parsing it. `in:anywhere`: a report the user already deleted, or that went to spam, counts.
QUERY_SIGNS = "{from:mailer-daemon from:postmaster} in:anywhere"
WINDOW_DAYS = 7.0  # late reports (a server retrying for days) still find their delivery
CLOCK_SLACK = timedelta(minutes=10)  # Gmail's clock and ours may differ a little
MAX_LISTED = 2000  # message ids listed per account and pass (20 pages)
MAX_FETCHED = 200  # messages fetched per account and pass; the rest wait for the next pass
CONCURRENT_ACCOUNTS = 4
# Google's reasons for a token without the readonly scope: scanning stops, sending does not.
_SCOPE_REASONS = ("insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")


@dataclass
class AccountScan:
    """What one pass did for one account."""

    account_id: str
    skipped: str | None = None  # why the mailbox was not read, when it was not
    listed: int = 0  # report-looking messages Gmail listed
    fetched: int = 0  # of them, fetched (not read before)
    results: list[Matched] = field(default_factory=list)
    error: str | None = None

    @property
    def bounced(self) -> list[str]:
        return [d for r in self.results for d in r.bounced]


def mailbox_key(address: str) -> str:
    """Names the mailbox in `MailboxReport.mailbox`: another connected address is read afresh."""
    return f"gmail://{address.lower()}"


def report_query(since: datetime) -> str:
    """The search for delivery reports that arrived after `since` (epoch seconds: exact)."""
    return f"{QUERY_SIGNS} after:{int((since - CLOCK_SLACK).timestamp())}"


class GmailBounceScanner:
    """Scans every Gmail account connected with bounce scanning, each
    `settings.gmail_poll_seconds`, until `stop()`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        accounts: AccountAccess,
        google: Callable[[], GoogleApi],
    ) -> None:
        self.db = db
        self.settings = settings
        self.accounts = accounts
        self._google = google
        self._api: GoogleApi | None = None
        self._stop = asyncio.Event()

    @property
    def api(self) -> GoogleApi:
        if self._api is None:  # built at first use: demo mode points Google at its stand-in
            self._api = self._google()
        return self._api

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self.scan_once()
                except Exception:  # noqa: BLE001 - a database hiccup: look again next pass
                    log.exception("scanning Gmail mailboxes for bounces failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.settings.gmail_poll_seconds)
        finally:
            await self.aclose()

    def stop(self) -> None:
        self._stop.set()

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    async def scan_once(self) -> list[AccountScan]:
        """One pass over every account connected with bounce scanning."""
        async with self.db.reader() as s:
            rows = list(
                await s.scalars(
                    select(ConnectedAccount)
                    .where(
                        ConnectedAccount.provider == PROVIDER,
                        ConnectedAccount.bounce_scanning.is_(True),
                        ConnectedAccount.status != AccountStatus.NEEDS_RECONNECT,
                    )
                    .order_by(ConnectedAccount.created_at, ConnectedAccount.id)
                )
            )
            todo = [(r.id, r.org_id, r.user_id, r.address, list(r.scopes or ())) for r in rows]
        gate = asyncio.Semaphore(CONCURRENT_ACCOUNTS)

        async def one(item: tuple[str, str, str, str, list[str]]) -> AccountScan:
            async with gate:
                return await self._scan_guarded(*item)

        return list(await asyncio.gather(*(one(item) for item in todo)))

    async def _scan_guarded(
        self, account_id: str, org_id: str, user_id: str, address: str, scopes: list[str]
    ) -> AccountScan:
        scan = AccountScan(account_id)
        if SCOPE_READONLY not in scopes:
            scan.skipped = "the account did not grant Postway read access (gmail.readonly)"
            return scan
        try:
            await self.scan_account(
                scan, account_id, MailboxOwner(org_id, user_id, CHANNELS), address
            )
        except AccountNeedsReconnect as exc:  # marked by the account interface already
            scan.error = str(exc)
        except GoogleAuthError as exc:
            scan.error = str(exc)
            if exc.reason in _SCOPE_REASONS:
                log.warning("gmail account %s: no read access for bounce scanning: %s",
                            account_id, exc)  # fmt: skip
            else:
                await self.accounts.mark_needs_reconnect(
                    account_id,
                    f"Google refused the account's access ({exc}); connect the account again",
                )
        except (GoogleError, ChannelError) as exc:  # rate limits, 5xx, network: next pass
            scan.error = str(exc)
            log.warning("gmail account %s: bounce scan failed for now: %s", account_id, exc)
        except Exception:  # noqa: BLE001 - one account's bug must not stop the others
            scan.error = "scanning failed (see the server log)"
            log.exception("gmail account %s: bounce scan failed", account_id)
        if scan.bounced:
            log.info("gmail account %s: %d deliveries bounced", account_id, len(scan.bounced))
        return scan

    async def scan_account(
        self, scan: AccountScan, account_id: str, owner: MailboxOwner, address: str
    ) -> None:
        """List, fetch and apply one account's new reports (see the module docstring)."""
        since = await oldest_awaiting_send(self.db, owner, WINDOW_DAYS)
        if since is None:
            scan.skipped = "no message sent through Gmail awaits its verdict"
            return
        token = await self.accounts.fresh_token(account_id)
        listed: list[str] = []
        page: str | None = None
        while len(listed) < MAX_LISTED:
            ids, page = await self.api.list_message_ids(
                token, query=report_query(since), page_token=page
            )
            listed.extend(ids)
            if page is None:
                break
        listed = list(dict.fromkeys(listed))
        scan.listed = len(listed)
        key = mailbox_key(address)
        seen = await seen_ids(self.db, owner.user_id, key, listed)
        # oldest first, so a backlog is worked off in the order the reports arrived
        new = [m for m in reversed(listed) if m not in seen][:MAX_FETCHED]
        for message_id in new:
            if self._stop.is_set():
                return
            try:
                raw = await self.api.get_raw(token, message_id)
            except GoogleTooLarge as exc:
                scan.results.append(await remember(
                    self.db, owner, key, message_id, Matched(IGNORED, note=str(exc))
                ))  # fmt: skip
                continue
            except GoogleInvalidRequest as exc:
                if exc.status == 404:  # deleted between listing and fetching
                    continue
                raise
            scan.fetched += 1
            scan.results.append(
                await apply_mailbox_report(self.db, self.settings, owner, key, message_id, raw)
            )
