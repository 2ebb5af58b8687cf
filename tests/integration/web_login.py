"""Logging in to the web pages as a browser does: fetch the form (its CSRF token and cookie),
then post it."""

from __future__ import annotations

import re

import httpx

_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


def form_token(page: httpx.Response) -> str:
    m = _TOKEN.search(page.text)
    assert m, page.text
    return m.group(1)


async def web_login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    """POST /login with the token of a freshly fetched form; the client keeps the cookies."""
    token = form_token(await client.get("/login"))
    return await client.post("/login", data={"email": email, "password": password, "csrf": token})
