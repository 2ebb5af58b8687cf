"""Helpers for the Gmail tests: connecting through the stand-in as a browser would, and
reading what the stand-in saw."""

from __future__ import annotations

import base64
import email
import email.policy
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select

from peers.google import GooglePeer
from postway.store.models import ConnectedAccount, Delivery, Message


async def connect(acct: Any, env: Any, **params: str) -> httpx.Response:
    """GET .../gmail/connect, follow the authorization URL to the stand-in (which approves at
    once), then call Postway's callback with what it redirected to; returns the callback's
    answer (303 to the channel page)."""
    r = await acct.client.get("/api/v1/delivery-channel/gmail/connect", params=params)
    assert r.status_code == 200, r.text
    url = r.json()["authorization_url"]
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(url)
    assert consent.status_code == 303, consent.text
    back = urlsplit(consent.headers["location"])
    assert back.path == "/oauth/google/callback", back
    return await env.app_client.get(f"{back.path}?{back.query}")


def auth_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def gmail_sender(env: Any, email_addr: str, identity: str) -> tuple[Any, str]:
    """A user who connected rep@gmail.test and chose Gmail, with one identity; returns the
    account and the identity id."""
    acct = await env.account(email_addr)
    r = await connect(acct, env)
    assert r.status_code == 303, r.text
    r = await acct.client.put("/api/v1/delivery-channel", json={"channel": "gmail"})
    assert r.status_code == 200, r.text
    r = await acct.client.post("/api/v1/identities", json={"name": "Rep", "email": identity})
    assert r.status_code == 201, r.text
    return acct, r.json()["id"]


async def send(acct: Any, identity: str, **fields: Any) -> str:
    body = {"identity_id": identity, "text": "hello", **fields}
    r = await acct.client.post("/api/v1/messages", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def sent_raws(google: GooglePeer) -> list[bytes]:
    """Every raw message Postway handed to Gmail's send endpoint, decoded, in order."""
    out = []
    for req in google.state.requests_to("/messages/send"):
        raw = req.json()["raw"]
        out.append(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return out


def header(raw: bytes, name: str) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return str(msg.get(name, ""))


async def deliveries(env: Any, message_id: str) -> list[Delivery]:
    async with env.rt.db.session() as s:
        rows = await s.scalars(
            select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.recipient)
        )
        return list(rows)


async def stored_raw(env: Any, message_id: str) -> bytes:
    async with env.rt.db.session() as s:
        m = await s.get(Message, message_id)
        assert m is not None
        return m.raw


async def account_row(env: Any) -> ConnectedAccount | None:
    async with env.rt.db.session() as s:
        return await s.scalar(select(ConnectedAccount))
