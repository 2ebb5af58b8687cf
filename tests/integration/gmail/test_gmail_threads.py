"""A reply (In-Reply-To names a message sent through the same account) stays in its Gmail
conversation: it is sent with that message's threadId."""

from __future__ import annotations

import dataclasses

from gmail_support import deliveries, gmail_sender, send
from sqlalchemy import select

from peers.google import ACCOUNT
from postway.delivery.submit import SendRequest, prepare_message, store_message
from postway.domain.message import build_message
from postway.store.models import Message, User
from postway.store.users import principal_of


async def test_a_reply_is_sent_into_the_thread_of_the_message_it_answers(genv, google):
    acct, identity = await gmail_sender(genv, "ada@acme.example", ACCOUNT)
    first = await send(acct, identity, to=["lead@client.example"], subject="Question")
    await genv.drain()
    thread = google.state.sent[0].thread_id
    async with genv.rt.db.session() as s, s.begin():
        original = await s.get(Message, first)
        assert original is not None
        who = principal_of(await s.scalar(select(User).where(User.email == acct.email)))
        req = SendRequest(identity_id=identity, to=["lead@client.example"], text="answer")
        p = await prepare_message(s, genv.rt.settings, who, req)
        # the reply names what it answers (what a CRM's reply would carry)
        draft = dataclasses.replace(
            p.draft, subject="Re: Question", headers=(("In-Reply-To", original.message_id_header),)
        )
        built = build_message(draft, message_id_domain=genv.rt.settings.hostname)
        reply, _ = store_message(
            s, genv.rt.settings, who, dataclasses.replace(p, draft=draft, built=built)
        )
    await genv.drain()
    [d] = await deliveries(genv, reply.id)
    assert d.state == "sent"
    requests = google.state.requests_to("/messages/send")
    assert "threadId" not in requests[0].json()
    assert requests[1].json()["threadId"] == thread
    assert google.state.sent[1].thread_id == thread
    events = (await acct.client.get(f"/api/v1/messages/{reply.id}/events")).json()
    assert [e["detail"]["thread_id"] for e in events if e["type"] == "sent"] == [thread]
