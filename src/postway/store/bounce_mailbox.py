"""The IMAP mailbox where a custom SMTP sender's bounces arrive: its settings on the user's
channel row, checked on the way in, and read back with the password decrypted."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.addresses import check_header_text
from postway.errors import InvalidInput
from postway.security import SecretBox
from postway.store.channel_settings import check_host_syntax
from postway.store.models import ChannelSetting

IMAP_SECURITY = ("tls", "starttls", "none")
DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}
DEFAULT_FOLDER = "INBOX"


@dataclass(frozen=True, slots=True)
class ImapMailbox:
    """A bounce mailbox's connection, password decrypted (never logged or returned)."""

    host: str
    port: int
    security: str
    username: str
    password: str
    folder: str = DEFAULT_FOLDER

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (
            f"ImapMailbox(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"folder={self.folder!r})"
        )

    @property
    def key(self) -> str:
        """Names the mailbox in `MailboxReport.mailbox`: another mailbox is read afresh."""
        return f"imap://{self.username}@{self.host}:{self.port}/{self.folder}"


def validate_mailbox(data: dict[str, object], row: ChannelSetting | None) -> dict[str, object]:
    """Check a bounce mailbox as given by the API; a missing password keeps the stored one
    when the host and username are unchanged."""
    host = data.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput("host: give the IMAP server's host name", field="host")
    host = check_header_text(host.strip(), field="host", max_len=253)
    try:
        host = check_host_syntax(host)
    except InvalidInput as exc:
        raise InvalidInput(str(exc).replace("smtp.host", "host"), field="host") from None
    security = str(data.get("security") or "tls")
    if security not in IMAP_SECURITY:
        raise InvalidInput(f"security: use one of {', '.join(IMAP_SECURITY)}", field="security")
    port = data.get("port") or DEFAULT_PORTS[security]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidInput("port: a number from 1 to 65535", field="port")
    folder = str(data.get("folder") or DEFAULT_FOLDER)
    folder = check_header_text(folder, field="folder", max_len=200)
    if any(c in folder for c in '"\\') or not folder.isprintable():
        raise InvalidInput("folder: quotes, backslashes and control characters are not allowed",
                           field="folder")  # fmt: skip
    reuse = bool(data.get("reuse_relay_credentials"))
    username, password = data.get("username"), data.get("password")
    for name, value in (("username", username), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{name}: must be text", field=name)
        if isinstance(value, str) and any(c in value for c in "\r\n\x00"):
            raise InvalidInput(f"{name}: line breaks are not allowed", field=name)
    if reuse:
        if row is None or not row.smtp_host:
            raise InvalidInput(
                "reuse_relay_credentials: no relay is configured; set up the custom SMTP "
                "relay first, or give a username and password",
                field="reuse_relay_credentials",
            )
        if not row.smtp_username or not row.smtp_password_enc:
            raise InvalidInput(
                "reuse_relay_credentials: the relay has no username and password to reuse",
                field="reuse_relay_credentials",
            )
        username, password = None, None
    elif not username:
        raise InvalidInput("username: give the mailbox's username", field="username")
    same = (
        row is not None
        and row.imap_host == host
        and row.imap_username == username
        and not row.imap_reuse_relay
    )
    if not reuse and password is None and not (same and row and row.imap_password_enc):
        raise InvalidInput("password: give the mailbox's password", field="password")
    return {
        "host": host,
        "port": port,
        "security": security,
        "username": username,
        "password": password,
        "folder": folder,
        "reuse": reuse,
    }


def save_mailbox(row: ChannelSetting, box: SecretBox, data: dict[str, object]) -> None:
    row.imap_host = str(data["host"])
    row.imap_port = int(data["port"])  # type: ignore[call-overload]
    row.imap_security = str(data["security"])
    row.imap_folder = str(data["folder"])
    row.imap_reuse_relay = bool(data["reuse"])
    row.imap_username = data["username"]  # type: ignore[assignment]
    if data["reuse"]:
        row.imap_password_enc = None
    elif data["password"] is not None:
        row.imap_password_enc = box.encrypt(str(data["password"]))
    row.imap_checked_at, row.imap_error = None, None


def clear_mailbox(row: ChannelSetting) -> None:
    row.imap_host = row.imap_port = row.imap_security = row.imap_folder = None
    row.imap_username = row.imap_password_enc = row.imap_error = None
    row.imap_checked_at = None
    row.imap_reuse_relay = False


def mailbox_from(
    data: dict[str, object], row: ChannelSetting | None, box: SecretBox
) -> ImapMailbox:
    """The mailbox as validated data describes it, stored secrets filled in."""
    if data["reuse"]:
        assert row is not None and row.smtp_password_enc  # checked by validate_mailbox
        username, password = str(row.smtp_username), box.decrypt(row.smtp_password_enc)
    else:
        username = str(data["username"])
        given = data["password"]
        if given is None and row is not None and row.imap_password_enc:
            given = box.decrypt(row.imap_password_enc)
        password = str(given or "")
    return ImapMailbox(
        host=str(data["host"]),
        port=int(data["port"]),  # type: ignore[call-overload]
        security=str(data["security"]),
        username=username,
        password=password,
        folder=str(data["folder"]),
    )


def mailbox_of(row: ChannelSetting, box: SecretBox) -> ImapMailbox | None:
    """The stored bounce mailbox of a channel row, or None when none is set (or the relay
    whose credentials it reuses lost them)."""
    if not row.imap_host:
        return None
    if row.imap_reuse_relay:
        if not row.smtp_username or not row.smtp_password_enc:
            return None
        username, password = row.smtp_username, box.decrypt(row.smtp_password_enc)
    else:
        if not row.imap_username or not row.imap_password_enc:
            return None
        username, password = row.imap_username, box.decrypt(row.imap_password_enc)
    security = row.imap_security or "tls"
    return ImapMailbox(
        host=row.imap_host,
        port=row.imap_port or DEFAULT_PORTS.get(security, 993),
        security=security,
        username=username,
        password=password,
        folder=row.imap_folder or DEFAULT_FOLDER,
    )


async def record_check(s: AsyncSession, row_id: str, error: str | None, when: object) -> None:
    """Note the last scan's time and error on the row (shown to the user)."""
    row = await s.get(ChannelSetting, row_id)
    if row is not None:
        row.imap_checked_at, row.imap_error = when, error  # type: ignore[assignment]
