"""Choosing a delivery channel and testing a relay; shared by the API routes and the web page
so that both apply the same checks (Gmail needs a connection, relays must resolve, a missing
password keeps the stored one)."""

from __future__ import annotations

from dataclasses import dataclass

from postway.channels.gmail import PROVIDER as GMAIL_PROVIDER
from postway.channels.smtp import RelayCheck, SmtpChannel, resolve_relay
from postway.domain.states import ChannelName
from postway.errors import ChannelError, Conflict, InvalidInput
from postway.runtime import Runtime
from postway.store import channel_settings as cs
from postway.store.accounts import account_of
from postway.store.models import ChannelSetting
from postway.store.users import Principal


@dataclass(frozen=True, slots=True)
class ChannelView:
    """The channel a user sends through and where that choice comes from."""

    channel: ChannelName
    source: str  # "user" (their own choice), "team" (the admin's), or "default" (managed)
    setting: ChannelSetting | None  # the row holding relay details and `attention`


async def current_channel(rt: Runtime, who: Principal) -> ChannelView:
    async with rt.db.session() as s, s.begin():
        row = await cs.user_setting(s, who)
        source = "user"
        if row is None:
            row = await cs.team_setting(s, who.org_id)
            source = "team" if row is not None else "default"
    name = ChannelName(row.channel) if row else ChannelName.MANAGED
    return ChannelView(name, source, row)


async def save_channel(
    rt: Runtime,
    org_id: str,
    user_id: str | None,
    channel: str,
    smtp: dict[str, object] | None,
) -> None:
    """Store a user's (or, with user_id None, the team's) channel; `smtp` is the relay as
    given by the caller, checked by `channel_settings.validate_relay`."""
    name = cs.parse_channel(channel)
    async with rt.db.session() as s, s.begin():
        if name is ChannelName.GMAIL:
            if user_id is None:
                raise Conflict(
                    "the team channel cannot be a Gmail account: each rep connects their own "
                    "and chooses it for themselves"
                )
            if await account_of(s, user_id, GMAIL_PROVIDER) is None:
                raise Conflict(
                    "connect a Gmail account before choosing the gmail channel "
                    "(GET /api/v1/delivery-channel/gmail/connect, or Connect Gmail on the "
                    "Delivery channel page)"
                )
        previous = await cs.setting_row(s, org_id, user_id)
        relay = None
        if smtp is not None:
            relay = cs.validate_relay(smtp, previous)
            try:
                await resolve_relay(str(relay["host"]), 0, rt.settings.allow_private_relays)
            except ChannelError as exc:
                raise InvalidInput(f"smtp.host: {exc}", field="smtp.host") from exc
        await cs.save_setting(s, rt.box, org_id, user_id, name, relay)


async def check_relay(rt: Runtime, who: Principal, smtp: dict[str, object] | None) -> RelayCheck:
    """Connect, negotiate TLS and authenticate against the given relay, or the stored one
    when none (or no host) is given. A relay given without a password for the stored host
    is tested with the stored password."""
    async with rt.db.session() as s, s.begin():
        row = await cs.user_setting(s, who)
        if smtp is not None and smtp.get("host"):
            data = cs.validate_relay(smtp, row)
            password = data["password"]
            if password is None and data["keep_password"] and row and row.smtp_password_enc:
                password = rt.box.decrypt(row.smtp_password_enc)
            relay = cs.SmtpRelay(
                host=str(data["host"]),
                port=int(data["port"]),  # type: ignore[call-overload]
                security=str(data["security"]),
                username=data["username"],  # type: ignore[arg-type]
                password=password,  # type: ignore[arg-type]
                auth=str(data["auth"]),
            )
        elif row is not None and row.smtp_host:
            relay = cs.relay_of(row, rt.box)
        else:
            raise InvalidInput("smtp: no relay is configured; give one to test", field="smtp")
    return await SmtpChannel(relay, rt.settings).check()
