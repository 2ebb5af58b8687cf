"""Every answer of a real `postway serve` (pages, page parts, API, static files, errors, the
body gate's early refusals) carries a Content-Security-Policy without inline script or style,
frame-ancestors 'none', nosniff and a referrer policy; and no template or rendered page holds
inline script, event-handler attributes or style attributes, which that policy would block."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from served import EMAIL, raw_post, served_postway, status_of
from test_cli import cli_env
from test_demo import demo_token, start_demo
from web_login import web_login

from peers.smtp import free_port
from postway.demo import DEMO_EMAIL, DEMO_PASSWORD
from postway.web.admin_pages import ADMIN_PAGE_PATHS

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "postway" / "web" / "templates"
PASSWORD = "correct horse battery"

# what the policy would block, so none of it may be written
INLINE = {
    "a <script> without src": re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>", re.I),
    "a script body": re.compile(r"<script\b[^>]*\bsrc\s*=[^>]*>\s*[^<\s]", re.I),
    "an on*= handler": re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I),
    "a style= attribute": re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I),
    "a <style> element": re.compile(r"<style\b", re.I),
    "a javascript: URL": re.compile(r"""=\s*["']?\s*javascript:""", re.I),
}


def inline_code(html: str) -> list[str]:
    return [name for name, pattern in INLINE.items() if pattern.search(html)]


def directives(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def assert_secure(headers: httpx.Headers | dict[str, str], what: str) -> None:
    policy = headers.get("content-security-policy")
    assert policy, f"{what}: no Content-Security-Policy"
    d = directives(policy)
    assert d.get("default-src") == ["'self'"], (what, policy)
    assert d.get("script-src") == ["'self'"], (what, policy)
    assert d.get("style-src") == ["'self'"], (what, policy)
    assert d.get("frame-ancestors") == ["'none'"], (what, policy)
    assert d.get("base-uri") == ["'none'"], (what, policy)
    assert d.get("form-action") == ["'self'"], (what, policy)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (what, policy)
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer"), what


def raw_headers(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}


def test_no_template_holds_inline_script_handlers_or_styles() -> None:
    found = {
        p.name: bad for p in sorted(TEMPLATES.glob("*.html")) if (bad := inline_code(p.read_text()))
    }
    assert not found, found


def test_the_scan_finds_what_it_looks_for() -> None:
    assert inline_code("<script>alert(1)</script>") == ["a <script> without src"]
    assert inline_code('<script src="/static/x.js">go()</script>') == ["a script body"]
    assert inline_code('<button type="button" onclick="go()">') == ["an on*= handler"]
    assert inline_code('<p class="x" style="color:red">') == ["a style= attribute"]
    assert inline_code('<a href="javascript:go()">') == ["a javascript: URL"]
    assert inline_code('<script src="/static/app.js" defer></script><p>onion = 1</p>') == []


async def test_every_answer_of_a_served_instance_carries_the_headers(tmp_path: Path) -> None:
    with served_postway(tmp_path, POSTWAY_ALLOW_PRIVATE_RELAYS="1") as srv:
        api = {"Authorization": f"Bearer {srv.token}"}
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as web:
            # a message to show: a relay nobody listens on keeps it waiting
            ada = {"name": "Ada", "email": EMAIL}
            r = await web.post("/api/v1/identities", json=ada, headers=api)
            assert r.status_code == 201, r.text
            identity = r.json()["id"]
            relay = {"host": "127.0.0.1", "port": free_port(), "security": "none"}
            r = await web.put(
                "/api/v1/delivery-channel", json={"channel": "smtp", "smtp": relay}, headers=api
            )
            assert r.status_code == 200, r.text
            mail = {"identity_id": identity, "to": ["bo@example.org"], "subject": "Hi", "text": "x"}
            r = await web.post("/api/v1/messages", json=mail, headers=api)
            assert r.status_code == 202, r.text
            message = r.json()["id"]

            answers: dict[str, httpx.Response] = {
                "login page": await web.get("/login"),
                "page without session": await web.get("/conversations"),
                "API without token": await web.get("/api/v1/identities"),
                "API unknown route": await web.get("/api/v1/nothing-here", headers=api),
                "API": await web.get(f"/api/v1/messages/{message}", headers=api),
                "OpenAPI": await web.get("/openapi.json"),
                "health": await web.get("/healthz"),
                "static CSS": await web.get("/static/app.css"),
                "static JS": await web.get("/static/app.js"),
                "static 404": await web.get("/static/nothing.js"),
                "login without CSRF": await web.post("/login", data={"email": EMAIL}),
            }
            r = await web_login(web, EMAIL, PASSWORD)
            assert r.status_code == 303, r.text
            pages = [
                "/conversations",
                "/conversations?tab=failed",
                "/conversations/bo@example.org",
                f"/messages/{message}",
                f"/live/messages/{message}",
                "/live/conversations",
                "/messages/0123456789abcdef0123456789abcdef",
                "/compose",
                "/identities",
                "/settings/channel",
                *ADMIN_PAGE_PATHS,
            ]
            for path in pages:
                answers[path] = await web.get(path)
                assert answers[path].status_code in (200, 404), (path, answers[path].status_code)
                found = inline_code(answers[path].text)
                assert not found, (path, found)
            assert answers[f"/messages/{message}"].status_code == 200
            assert answers["/messages/0123456789abcdef0123456789abcdef"].status_code == 404

        for what, answer in answers.items():
            assert_secure(answer.headers, f"{what} ({answer.status_code})")
        # refused by the body gate before any route runs
        early = await asyncio.to_thread(raw_post, srv.port, "/api/v1/messages", 256 * 1024)
        assert status_of(early.response) == 401
        assert_secure(raw_headers(early.response), "body gate 401")


async def test_demo_docs_get_their_own_policy_and_pages_keep_theirs(tmp_path: Path) -> None:
    """Swagger UI and ReDoc (demo only) start from an inline script and load from a CDN: those
    two paths get a wider policy; nothing else does."""
    port = free_port()
    env = cli_env(tmp_path, f"sqlite:///{tmp_path / 'demo.db'}", POSTWAY_LOG_LEVEL="WARNING")
    proc = start_demo(env, port)
    try:
        await demo_token(proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
            for path in ("/docs", "/redoc"):
                docs = await web.get(path)
                assert docs.status_code == 200
                d = directives(docs.headers["content-security-policy"])
                assert "https://cdn.jsdelivr.net" in d["script-src"]
                assert d["frame-ancestors"] == ["'none'"]
                assert docs.headers["x-content-type-options"] == "nosniff"
            r = await web_login(web, DEMO_EMAIL, DEMO_PASSWORD)
            assert r.status_code == 303
            for path in ("/inbox", "/conversations", "/openapi.json"):
                answer = await web.get(path)
                assert answer.status_code == 200, path
                assert_secure(answer.headers, path)
                assert not inline_code(answer.text), path
    finally:
        proc.terminate()
        proc.wait(20)
