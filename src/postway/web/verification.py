"""Sending an identity's confirmation link; shared by the API route and the web page."""

from __future__ import annotations

from postway.delivery.submit import submit_system_message
from postway.runtime import Runtime
from postway.store import identities as ids
from postway.store.confirmation_limits import count_confirmation_mail
from postway.store.models import Identity, utcnow
from postway.store.users import Principal

SUBJECT = "Confirm your sending address"


def confirmation_text(email: str, link: str) -> str:
    """Fixed words around the address and the link only: nothing the requester chose (such as
    the identity's name) goes into a mail sent to someone else's address under Postway's name."""
    return (
        f"Someone asked to send email as {email} through Postway.\n\n"
        f"If that was you, confirm the address by opening this link:\n\n{link}\n\n"
        "If it was not you, ignore this message; nothing will be sent as you."
    )


async def send_verification(rt: Runtime, who: Principal, identity_id: str) -> Identity:
    """Issue a fresh confirmation token and queue the link to the identity's address.

    Counted against the per-user and per-address limits (RateLimited past them, and then
    nothing is queued and the previous link stays valid). The mail goes through Postway's own
    servers (the managed channel) whatever channel the identity sends through, so it is
    retried and its fate recorded like any other mail; it is committed before the worker is
    woken, so the worker always finds it.
    """
    async with rt.db.session() as s, s.begin():
        row, token = await ids.start_verification(s, who, identity_id)
        await count_confirmation_mail(s, rt.settings, who, row.email, utcnow())
        link = f"{rt.public_url}/verify/{token}"
        await submit_system_message(
            s,
            rt.settings,
            org_id=who.org_id,
            user_id=who.user_id,
            to=row.email,
            subject=SUBJECT,
            text=confirmation_text(row.email, link),
        )
    rt.wake_worker()
    return row
