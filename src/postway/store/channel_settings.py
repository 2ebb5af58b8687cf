"""Which channel a user (or the team) sends through, and the custom relay's connection."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postway.domain.addresses import check_header_text
from postway.domain.states import ChannelName
from postway.errors import InvalidInput
from postway.security import SecretBox
from postway.store.models import ChannelSetting, Identity
from postway.store.users import Principal

SECURITY_MODES = ("starttls", "tls", "none")
AUTH_MODES = ("auto", "plain", "login", "xoauth2")


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """A custom relay's connection, with the password decrypted (never logged or returned)."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    auth: str

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"SmtpRelay(host={self.host!r}, port={self.port}, security={self.security!r})"


def parse_channel(value: object) -> ChannelName:
    try:
        return ChannelName(str(value))
    except ValueError:
        names = ", ".join(c.value for c in ChannelName)
        raise InvalidInput(f"channel: '{value}' is not one of {names}", field="channel") from None


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def check_host_syntax(host: str) -> str:
    """`host` if it is an IP address literal (`[::1]`, `192.0.2.1`) or a host name whose labels
    are 1 to 63 characters (after IDNA encoding) and 253 in all; InvalidInput naming
    smtp.host otherwise, before anything tries to look the name up."""
    if host.startswith("["):
        try:
            ipaddress.ip_address(host[1:-1] if host.endswith("]") else "")
        except ValueError:
            raise InvalidInput(
                f"smtp.host: '{host}' is not an IP address in brackets", field="smtp.host"
            ) from None
        return host
    name = host.removesuffix(".")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:  # what the resolver would raise for the same name
        raise InvalidInput(
            f"smtp.host: '{host}' is not a host name: each part between dots must have "
            "1 to 63 characters",
            field="smtp.host",
        ) from exc
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(p) for p in ascii_name.split(".")):
        raise InvalidInput(
            f"smtp.host: '{host}' is not a host name: use letters, digits and hyphens, "
            "with parts of 1 to 63 characters separated by dots",
            field="smtp.host",
        )
    return host


def validate_relay(data: dict[str, object], previous: ChannelSetting | None) -> dict[str, object]:
    """Check the `smtp` object of a channel update; a missing password keeps the stored one."""
    host = data.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput("smtp.host: give the relay's host name", field="smtp.host")
    host = check_header_text(host, field="smtp.host", max_len=253)
    if any(c.isspace() or c in "/@:" for c in host.strip("[]")) and not host.startswith("["):
        raise InvalidInput(f"smtp.host: '{host}' is not a host name", field="smtp.host")
    host = check_host_syntax(host.strip())
    security = str(data.get("security") or "starttls")
    if security not in SECURITY_MODES:
        raise InvalidInput(
            f"smtp.security: use one of {', '.join(SECURITY_MODES)}", "smtp.security"
        )
    port = data.get("port") or (465 if security == "tls" else 587)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidInput("smtp.port: a number from 1 to 65535", field="smtp.port")
    auth = str(data.get("auth") or "auto")
    if auth not in AUTH_MODES:
        raise InvalidInput(f"smtp.auth: use one of {', '.join(AUTH_MODES)}", field="smtp.auth")
    username = data.get("username")
    if username is not None and not isinstance(username, str):
        raise InvalidInput("smtp.username: must be text", field="smtp.username")
    password = data.get("password")
    if password is not None and not isinstance(password, str):
        raise InvalidInput("smtp.password: must be text", field="smtp.password")
    for name, value in (("username", username), ("password", password)):
        if value and any(c in value for c in "\r\n\x00"):
            raise InvalidInput(f"smtp.{name}: line breaks are not allowed", field=f"smtp.{name}")
    same_server = previous is not None and previous.smtp_host == host.strip()
    return {
        "host": host.strip(),
        "port": port,
        "security": security,
        "username": username or None,
        "password": password,
        "keep_password": password is None and same_server,
        "auth": auth,
    }


async def setting_row(db: AsyncSession, org_id: str, user_id: str | None) -> ChannelSetting | None:
    """A user's row, or with user_id None the organisation's team row."""
    owner = (
        ChannelSetting.user_id.is_(None) if user_id is None else ChannelSetting.user_id == user_id
    )
    return await db.scalar(select(ChannelSetting).where(ChannelSetting.org_id == org_id, owner))


async def user_setting(db: AsyncSession, who: Principal) -> ChannelSetting | None:
    return await setting_row(db, who.org_id, who.user_id)


async def team_setting(db: AsyncSession, org_id: str) -> ChannelSetting | None:
    return await setting_row(db, org_id, None)


async def save_setting(
    db: AsyncSession,
    box: SecretBox,
    org_id: str,
    user_id: str | None,
    channel: ChannelName,
    relay: dict[str, object] | None,
) -> ChannelSetting:
    row = await setting_row(db, org_id, user_id)
    if row is None:
        row = ChannelSetting(org_id=org_id, user_id=user_id)
        db.add(row)
    row.channel = channel.value
    row.attention = None
    if relay is not None:
        row.smtp_host = str(relay["host"])
        row.smtp_port = int(relay["port"])  # type: ignore[call-overload]
        row.smtp_security = str(relay["security"])
        row.smtp_username = relay["username"]  # type: ignore[assignment]
        row.smtp_auth = str(relay["auth"])
        if relay["password"] is not None:
            row.smtp_password_enc = box.encrypt(str(relay["password"]))
        elif not relay["keep_password"]:
            row.smtp_password_enc = None
    elif channel is ChannelName.SMTP and row.smtp_host is None:
        raise InvalidInput("smtp: give the relay's connection to use the smtp channel", "smtp")
    await db.flush()
    return row


def relay_of(row: ChannelSetting, box: SecretBox) -> SmtpRelay:
    if not row.smtp_host:
        raise InvalidInput("smtp: no relay is configured", field="smtp")
    return SmtpRelay(
        host=row.smtp_host,
        port=row.smtp_port or 587,
        security=row.smtp_security or "starttls",
        username=row.smtp_username,
        password=box.decrypt(row.smtp_password_enc) if row.smtp_password_enc else None,
        auth=row.smtp_auth or "auto",
    )


async def effective_setting(
    db: AsyncSession, identity: Identity
) -> tuple[ChannelName, ChannelSetting | None]:
    """The channel an identity sends through: its own choice, else the user's, else the team's,
    else managed. The returned setting row holds the relay when the channel is smtp."""
    user_row = await setting_row(db, identity.org_id, identity.user_id)
    team_row = await team_setting(db, identity.org_id)
    if identity.channel:
        chosen = ChannelName(identity.channel)
        # an identity that names smtp uses the user's relay, falling back to the team's
        for row in (user_row, team_row):
            if row is not None and (chosen is not ChannelName.SMTP or row.smtp_host):
                return chosen, row
        return chosen, None
    for row in (user_row, team_row):
        if row is not None:
            return ChannelName(row.channel), row
    return ChannelName.MANAGED, None
