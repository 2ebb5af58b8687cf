"""Sending an identity's confirmation link; shared by the API route and the web page."""

from __future__ import annotations

from postway.delivery.submit import submit_system_message
from postway.runtime import Runtime
from postway.store import identities as ids
from postway.store.models import Identity
from postway.store.users import Principal


def confirmation_text(name: str, email: str, link: str) -> str:
    return (
        f"Someone asked to send email as {name} <{email}> through Postway.\n\n"
        f"If that was you, confirm the address by opening this link:\n\n{link}\n\n"
        "If it was not you, ignore this message; nothing will be sent as you."
    )


async def send_verification(rt: Runtime, who: Principal, identity_id: str) -> Identity:
    """Issue a fresh confirmation token and queue the link to the identity's address.

    The mail goes through Postway's own servers (the managed channel) whatever channel the
    identity sends through, so it is retried and its fate recorded like any other mail; it is
    committed before the worker is woken, so the worker always finds it.
    """
    async with rt.db.session() as s, s.begin():
        row, token = await ids.start_verification(s, who, identity_id)
        link = f"{rt.public_url}/verify/{token}"
        await submit_system_message(
            s,
            rt.settings,
            org_id=who.org_id,
            user_id=who.user_id,
            to=row.email,
            subject="Confirm your sending address",
            text=confirmation_text(row.name, row.email, link),
        )
    rt.wake_worker()
    return row
