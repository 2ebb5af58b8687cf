"""What the API and the pages show of a user's connected Gmail account and of the From
address recipients will see, per channel (the rule itself is `domain.sender`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from postway.channels.gmail import PROVIDER
from postway.domain.sender import effective_from
from postway.domain.states import ChannelName
from postway.runtime import Runtime
from postway.store.accounts import account_of
from postway.store.models import ConnectedAccount, Identity
from postway.store.users import Principal
from postway.web.schemas import GmailAccountOut


def account_out(row: ConnectedAccount | None) -> GmailAccountOut | None:
    if row is None:
        return None
    return GmailAccountOut(
        address=row.address,
        status=row.status,
        reason=row.reason,
        paused_until=row.paused_until,
        send_as=list(row.send_as or []),
        bounce_scanning=bool(row.bounce_scanning),
    )


async def gmail_account_out(rt: Runtime, who: Principal) -> GmailAccountOut | None:
    async with rt.db.reader() as s, s.begin():
        return account_out(await account_of(s, who.user_id, PROVIDER))


async def from_by_channel(db: AsyncSession, identity: Identity) -> dict[str, str | None]:
    """channel name -> the From address recipients see when `identity` sends through it."""
    account = await account_of(db, identity.user_id, PROVIDER)
    return {
        c.value: effective_from(
            c,
            identity.email,
            account.address if account else None,
            account.send_as if account else (),
        )
        for c in ChannelName
    }
