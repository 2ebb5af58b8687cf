"""`postway serve --demo`: everything visible offline.

A seeded demo user with a verified identity, and a local inbox: a real SMTP server on loopback
that the managed channel's transport map points every domain at. It keeps what it accepts as
.eml files for the web app's Inbox page, and answers like the outside world would for the
reserved test domains: `bounce.test` refuses at RCPT (550 5.1.1), `defer.test` says later (451).

Gmail offline: the stand-in for Google (`google_standin`) is mounted in the web app at
`DEMO_GOOGLE_PATH` and Postway's Google endpoints point there, so connecting Gmail runs the
real OAuth code against a consent page with an "Allow" button. Its one account,
`demo@gmail.test`, has the verified send-as alias `DEMO_ALIAS`; what it sends lands in the
local inbox, and a `bounce.test` recipient comes back as Gmail's bounce in its mailbox, where
the bounce scan (`bounces.gmail_scan`) finds it.
"""

from __future__ import annotations

import asyncio
import email
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select
from starlette.applications import Starlette

from postway import google_standin
from postway.channels.gmail import PROVIDER as GMAIL_PROVIDER
from postway.domain.states import ChannelName
from postway.mta.verp import make_return_path
from postway.private_files import private_dir, write_private_file
from postway.runtime import Runtime
from postway.store.identities import create_identity, mark_verified
from postway.store.models import ConnectedAccount, Delivery, Message, User, utcnow
from postway.store.users import create_token, create_user, list_tokens, principal_of

DEMO_EMAIL = "demo@postway.test"
DEMO_PASSWORD = "postway-demo"  # noqa: S105 - a published demo login, on loopback only
BOUNCE_DOMAIN = "bounce.test"
DEFER_DOMAIN = "defer.test"
DEMO_GOOGLE_PATH = "/demo-google"
DEMO_ALIAS = "sales@postway.test"  # the demo Gmail account's verified send-as alias


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: str
    received_at: datetime
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    sender: str
    path: Path


class _InboxHandler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain == BOUNCE_DOMAIN:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if domain == DEFER_DOMAIN:
            return "451 4.7.1 Greylisted: please try again in 300 seconds"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        item = await keep(self.folder, envelope.mail_from or "", envelope.rcpt_tos, data)
        return f"250 2.0.0 OK: queued as {item[:12]}"


async def keep(folder: Path, mail_from: str, rcpt_tos: list[str], data: bytes) -> str:
    """Store one received message in the inbox folder; returns its item id."""
    item = uuid.uuid4().hex
    header = (
        f"X-Postway-Inbox-From: {mail_from}\r\nX-Postway-Inbox-To: {', '.join(rcpt_tos)}\r\n"
    ).encode()
    # 0600: the inbox holds other people's mail, confirmation links included
    await asyncio.to_thread(write_private_file, folder / f"{item}.eml", header + data)
    return item


class LocalInbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        private_dir(self.folder)
        handler = _InboxHandler(self.folder)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="inbox.postway.test", enable_SMTPUTF8=True),
            host="127.0.0.1",
            port=0,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def items(self, limit: int = 200) -> list[InboxItem]:
        files = sorted(self.folder.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [self._item(p) for p in files[:limit]]

    def get(self, item_id: str) -> InboxItem | None:
        if not item_id.isalnum():
            return None
        path = self.folder / f"{item_id}.eml"
        return self._item(path) if path.exists() else None

    @staticmethod
    def _item(path: Path) -> InboxItem:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        return InboxItem(
            id=path.stem,
            received_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            mail_from=str(msg.get("X-Postway-Inbox-From", "")),
            rcpt_tos=[a.strip() for a in str(msg.get("X-Postway-Inbox-To", "")).split(",")],
            subject=str(msg.get("Subject", "")),
            sender=str(msg.get("From", "")),
            path=path,
        )


DEMO_TOKEN_NAME = "demo"  # noqa: S105 - a label, not a secret


async def seed_demo(rt: Runtime) -> str | None:
    """Create the demo user and identity once, and its API token once.

    Returns the token when it was just made. A later start keeps the live demo token (not
    revoked, not expired) and returns None: only the token's hash is stored, so it cannot be
    shown again, and nothing else (no copy in the data folder) could leak it.
    """
    async with rt.db.session() as s, s.begin():
        user = await s.scalar(select(User).where(User.email == DEMO_EMAIL))
        if user is None:
            user = await create_user(s, DEMO_EMAIL, DEMO_PASSWORD, admin=True, org_name="Demo Co")
            await create_identity(
                s, principal_of(user), name="Demo Rep", email=DEMO_EMAIL, signature="-- Demo Rep"
            )
            await mark_verified(s, DEMO_EMAIL)
        live = any(
            t.name == DEMO_TOKEN_NAME and (t.expires_at is None or t.expires_at > utcnow())
            for t in await list_tokens(s, user.id)
        )
        return None if live else await create_token(s, user, DEMO_TOKEN_NAME)


def demo_banner(host: str, port: int, token: str | None) -> str:
    """What `serve --demo` prints: the login, and the API token only when it was just made."""
    head = (
        f"Demo: log in as {DEMO_EMAIL} / {DEMO_PASSWORD}; mail is delivered to the local inbox "
        f"at http://{host}:{port}/inbox (bounce.test bounces, defer.test defers)."
    )
    if token is not None:
        return f"{head}\nDemo API token:\n{token}"
    return (
        f"{head}\nDemo API token: kept from the first start (it was printed then). "
        f"`postway token list {DEMO_EMAIL}` lists it; after `postway token revoke ID` the next "
        "start makes and prints a new one."
    )


def demo_google(rt: Runtime, callback_path: str) -> Starlette:
    """The stand-in for Google, to mount at DEMO_GOOGLE_PATH, with Postway's Google settings
    pointed at it (call before anything builds a Google client). Mail it sends lands in the
    local inbox."""
    base = rt.public_url.rstrip("/")
    rt.settings.google_base_url = base + DEMO_GOOGLE_PATH
    rt.settings.google_client_id = google_standin.DEMO_CLIENT_ID
    rt.settings.google_client_secret = google_standin.DEMO_CLIENT_SECRET
    state = google_standin.demo_state(DEMO_ALIAS, alias_name="Demo Sales")
    state.redirect_uris = {base + callback_path}  # codes go back to this Postway only
    state.on_send = lambda sent: _to_inbox(rt, sent)
    return google_standin.create_app(state)


async def _to_inbox(rt: Runtime, sent: google_standin.SentMail) -> None:
    """Gmail delivered `sent`: put it in the local inbox. The inbox page shows an item to the
    organisation whose delivery its signed return path names, so the item gets the return
    path of the delivery it carries: one of the account owner's Gmail deliveries of this
    Message-ID and these recipients (Bcc copies included)."""
    if rt.inbox is None or not sent.recipients:
        return
    head = BytesHeaderParser(policy=policy.default).parsebytes(sent.raw)
    mid = str(head.get("Message-ID", "")).strip()
    ids = [mid, mid.strip("<>"), f"<{mid.strip('<>')}>"] if mid else []
    async with rt.db.reader() as s:
        owners = select(ConnectedAccount.user_id).where(
            ConnectedAccount.provider == GMAIL_PROVIDER,
            func.lower(ConnectedAccount.address) == sent.account.lower(),
        )
        delivery = await s.scalar(
            select(Delivery.id)
            .join(Message, Message.id == Delivery.message_id)
            .where(
                Message.message_id_header.in_(ids),
                Delivery.user_id.in_(owners),
                Delivery.channel == ChannelName.GMAIL.value,
                func.lower(Delivery.recipient).in_(list(sent.recipients)),
            )
            .limit(1)
        )
    settings = rt.settings
    mail_from = (
        make_return_path(delivery, settings.resolved_secret_key(), settings.bounce_domain)
        if delivery is not None
        else sent.account
    )
    await keep(rt.inbox.folder, mail_from, list(sent.recipients), sent.raw)
