"""POST /messages stored by group commit: concurrent sends share a write transaction, each is
answered only after it, facts cached by the process are read again inside it, and a request
that cannot be stored does not take the others in its group down."""

from __future__ import annotations

import asyncio
import email
from datetime import timedelta
from email import policy
from typing import Any

from sqlalchemy import select, text, update

from postway.security import token_hash
from postway.store.models import ApiToken, Message, utcnow
from postway.store.users import revoke_token


def send(iid: str, to: str, subject: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"identity_id": iid, "to": [to], "subject": subject, "text": "Hi there", **extra}


async def stored_subjects(env: Any) -> list[str]:
    async with env.rt.db.reader() as s, s.begin():
        return sorted((await s.scalars(select(Message.subject))).all())


async def test_concurrent_sends_share_transactions_and_refused_ones_spare_the_others(
    env, smtp_server
):
    srv = await smtp_server()
    ada, ada_iid = await env.relay_sender(srv.port, "ada@acme.example")
    bob, bob_iid = await env.relay_sender(srv.port, "bob@acme.example")
    r = await ada.client.post(
        "/api/v1/identities", json={"name": "Old", "email": "ada.old@acme.example"}
    )
    old_iid = r.json()["id"]
    # one send each puts the token's owner and the identity's context in the process's cache
    for acct, iid in ((ada, ada_iid), (bob, bob_iid), (ada, old_iid)):
        assert (
            await acct.client.post("/api/v1/messages", json=send(iid, "w@c.example"))
        ).status_code == 202
    # behind the cache's back: bob's token revoked, ada's second identity deleted
    async with env.rt.db.session() as s, s.begin():
        bob_token = await s.scalar(
            select(ApiToken.id).where(ApiToken.token_hash == token_hash(bob.token))
        )
        await revoke_token(s, bob_token)
    assert (await ada.client.delete(f"/api/v1/identities/{old_iid}")).status_code == 204
    groups_before = env.rt.group_commit.groups

    calls = (
        [
            ada.client.post(
                "/api/v1/messages", json=send(ada_iid, f"lead{i}@c.example", f"ok{i:02d}")
            )
            for i in range(20)
        ]
        + [
            bob.client.post("/api/v1/messages", json=send(bob_iid, "x@c.example", "revoked"))
            for _ in range(4)
        ]
        + [
            ada.client.post("/api/v1/messages", json=send(old_iid, "x@c.example", "deleted"))
            for _ in range(4)
        ]
        + [
            ada.client.post("/api/v1/messages", json=send(ada_iid, "not-an-address", "invalid"))
            for _ in range(4)
        ]
    )
    answers = await asyncio.gather(*calls)
    codes = [r.status_code for r in answers]
    assert codes == [202] * 20 + [401] * 4 + [404] * 4 + [400] * 4, [r.text for r in answers]
    # concurrent requests were written together: fewer transactions than accepted messages
    assert env.rt.group_commit.groups - groups_before < 20
    subjects = await stored_subjects(env)
    assert [x for x in subjects if x.startswith("ok")] == [f"ok{i:02d}" for i in range(20)]
    assert not {"revoked", "deleted", "invalid"} & set(subjects)
    # bob's revoked token is now refused before its body is read, too
    r = await bob.client.post("/api/v1/messages", json=send(bob_iid, "x@c.example"))
    assert r.status_code == 401
    await env.drain()
    got = {t.rcpt_tos[0] for t in srv.received}
    assert {f"lead{i}@c.example" for i in range(20)} <= got
    assert "x@c.example" not in got


async def test_an_identity_changed_after_it_was_cached_is_sent_as_it_is_now(env, smtp_server):
    srv = await smtp_server()
    ada, iid = await env.relay_sender(srv.port, "ada@acme.example")
    assert (
        await ada.client.post("/api/v1/messages", json=send(iid, "a@c.example"))
    ).status_code == 202
    r = await ada.client.patch(f"/api/v1/identities/{iid}", json={"name": "Ada Lovelace"})
    assert r.status_code == 200, r.text
    assert (
        await ada.client.post("/api/v1/messages", json=send(iid, "b@c.example"))
    ).status_code == 202
    await env.drain()
    by_rcpt = {
        t.rcpt_tos[0]: email.message_from_bytes(t.data, policy=policy.default) for t in srv.received
    }
    assert by_rcpt["a@c.example"]["From"].addresses[0].display_name == "Rep"
    assert by_rcpt["b@c.example"]["From"].addresses[0].display_name == "Ada Lovelace"


async def test_a_group_that_cannot_be_stored_is_retried_one_request_at_a_time(env, smtp_server):
    srv = await smtp_server()
    ada, iid = await env.relay_sender(srv.port, "ada@acme.example")
    # the database itself refuses one message (a trigger), as a constraint would
    async with env.rt.db.session() as s, s.begin():
        if env.rt.db.is_sqlite:
            await s.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.subject = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned message'); END"
                )
            )
        else:
            await s.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.subject = 'poison' THEN RAISE EXCEPTION 'poisoned message' "
                    "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await s.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON messages "
                    "FOR EACH ROW EXECUTE FUNCTION poison()"
                )
            )
    assert (
        await ada.client.post("/api/v1/messages", json=send(iid, "w@c.example"))
    ).status_code == 202
    calls = [
        ada.client.post("/api/v1/messages", json=send(iid, f"l{i}@c.example", f"fine{i:02d}"))
        for i in range(10)
    ]
    calls.insert(5, ada.client.post("/api/v1/messages", json=send(iid, "p@c.example", "poison")))
    answers = await asyncio.gather(*calls)
    codes = [r.status_code for r in answers]
    assert codes[5] == 500 and codes[:5] + codes[6:] == [202] * 10, codes
    assert answers[5].json()["error"].startswith("the message could not be stored")
    subjects = await stored_subjects(env)
    assert "poison" not in subjects
    assert [x for x in subjects if x.startswith("fine")] == [f"fine{i:02d}" for i in range(10)]


async def test_token_use_is_recorded_at_most_once_a_minute(env, smtp_server):
    srv = await smtp_server()
    ada, iid = await env.relay_sender(srv.port, "ada@acme.example")

    async def last_used() -> Any:
        async with env.rt.db.reader() as s, s.begin():
            return await s.scalar(select(ApiToken.last_used_at))

    first = await last_used()
    assert first is not None  # set-up calls recorded it
    for path in ("/api/v1/messages", "/api/v1/identities"):
        for _ in range(3):
            if path.endswith("messages"):
                r = await ada.client.post(path, json=send(iid, "a@c.example"))
            else:
                r = await ada.client.get(path)
            assert r.status_code in (200, 202)
        assert await last_used() == first  # no write per request
    # a minute later the next call records it again, on either path
    for path in ("/api/v1/messages", "/api/v1/identities"):
        async with env.rt.db.session() as s, s.begin():
            await s.execute(update(ApiToken).values(last_used_at=utcnow() - timedelta(minutes=2)))
        old = await last_used()
        if path.endswith("messages"):
            r = await ada.client.post(path, json=send(iid, "a@c.example"))
        else:
            r = await ada.client.get(path)
        assert r.status_code in (200, 202)
        assert await last_used() > old
