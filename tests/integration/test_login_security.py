"""Login: throttling per account and per client address, the same argon2 work for unknown
emails as for known ones, and a CSRF token (and Origin check) on the login form."""

from __future__ import annotations

import asyncio

import httpx
from web_login import form_token, web_login

from postway.security import password_verifications
from postway.store.users import create_user

PASSWORD = "correct horse battery"


async def _user(env, email: str = "ada@acme.example") -> str:
    async with env.rt.db.session() as s, s.begin():
        await create_user(s, email, PASSWORD)
    return email


def _browser(env, client_ip: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of the app as seen from `client_ip` (a loopback address: it only labels the
    ASGI scope, nothing is dialled)."""
    transport = httpx.ASGITransport(app=env.app_client._transport.app, client=(client_ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://postway.test")


async def test_fifty_guesses_lock_the_account_even_for_the_right_password(env):
    email = await _user(env)  # default lock: 30 s after 5 failures
    async with _browser(env) as web, _browser(env, "127.0.0.4") as elsewhere:
        codes = [(await web_login(web, email, f"guess-{i}")).status_code for i in range(50)]
        # five wrong answers, then refused without looking at the password
        assert codes == [401] * 5 + [429] * 45
        for client in (web, elsewhere):  # the account is locked, from any address
            r = await web_login(client, email, PASSWORD)
            assert r.status_code == 429 and "postway_session" not in r.cookies
            assert "Too many failed logins" in r.text and "Try again after" in r.text
            assert 1 <= int(r.headers["Retry-After"]) <= 30


async def test_the_lock_ends_and_each_failure_past_the_limit_locks_again_for_longer(env):
    env.rt.settings.login_lock_seconds = 2.0  # then 4 s (the doubling itself: test_lockout.py)
    email = await _user(env)
    async with _browser(env) as web:
        codes = [(await web_login(web, email, f"guess-{i}")).status_code for i in range(5)]
        assert codes == [401] * 5
        await asyncio.sleep(2.5)  # the first lock is over
        # the sixth failure is counted again and locks for 4 s
        assert (await web_login(web, email, "still wrong")).status_code == 401
        r = await web_login(web, email, PASSWORD)
        assert r.status_code == 429
        await asyncio.sleep(4.5)
        r = await web_login(web, email, PASSWORD)
        assert r.status_code == 303 and "postway_session" in r.cookies
        # a success starts the account afresh: one wrong answer is only a wrong answer
        assert (await web_login(web, email, "typo")).status_code == 401
        assert (await web_login(web, email, PASSWORD)).status_code == 303


async def test_many_accounts_guessed_from_one_address_lock_that_address(env):
    env.rt.settings.login_max_failures_per_address = 20
    email = await _user(env)
    async with _browser(env, "127.0.0.2") as guesser, _browser(env, "127.0.0.3") as other:
        # one guess per account stays under each account's limit, not under the address's
        for i in range(20):
            r = await web_login(guesser, f"user{i}@acme.example", "guess")
            assert r.status_code == 401, i
        r = await web_login(guesser, email, PASSWORD)
        assert r.status_code == 429 and "Retry-After" in r.headers
        # the account itself is not locked: the right password works from elsewhere
        assert (await web_login(other, email, PASSWORD)).status_code == 303


async def test_unknown_email_pays_the_same_argon2_verification_as_a_known_one(env):
    email = await _user(env)
    async with _browser(env) as web:
        before = password_verifications()
        unknown = await web_login(web, "nobody@acme.example", "some password")
        after_unknown = password_verifications()
        known = await web_login(web, email, "some password")
        after_known = password_verifications()
    assert (after_unknown - before, after_known - after_unknown) == (1, 1)
    # and the answers are the same words and code
    assert unknown.status_code == known.status_code == 401
    assert "wrong email or password" in unknown.text and "wrong email or password" in known.text


async def test_login_post_without_the_forms_token_or_from_another_site_is_refused(env):
    email = await _user(env)
    async with _browser(env) as web:
        # no token at all (what a cross-site form post sends: it cannot read the page)
        r = await web.post("/login", data={"email": email, "password": PASSWORD})
        assert r.status_code == 403 and "postway_session" not in r.cookies
        assert "did not come from Postway" in r.text

        token = form_token(await web.get("/login"))
        form = {"email": email, "password": PASSWORD, "csrf": token}
        # a token that is not the form's
        r = await web.post("/login", data={**form, "csrf": token[:-2] + "xx"})
        assert r.status_code == 403
        # the right token, but posted from another site's page
        r = await web.post("/login", data=form, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = await web.post("/login", data=form, headers={"Origin": "null"})
        assert r.status_code == 403
        r = await web.post("/login", data=form, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        assert "postway_session" not in web.cookies

        # the form as served, from its own origin: logged in
        r = await web.post("/login", data=form, headers={"Origin": "http://postway.test"})
        assert r.status_code == 303 and "postway_session" in r.cookies

    # a token is bound to its browser's cookie: another browser cannot replay it
    async with _browser(env) as stranger:
        await stranger.get("/login")
        r = await stranger.post("/login", data=form)
        assert r.status_code == 403


async def test_guesses_sent_together_are_counted_before_any_is_checked(env):
    email = await _user(env)
    async with _browser(env) as web:
        token = form_token(await web.get("/login"))
        before = password_verifications()
        answers = await asyncio.gather(
            *(
                web.post("/login", data={"email": email, "password": f"g{i}", "csrf": token})
                for i in range(20)
            )
        )
        checked = password_verifications() - before
    # only the attempts counted below the limit reach argon2; the rest are refused unchecked
    assert sorted(r.status_code for r in answers) == [401] * 5 + [429] * 15
    assert checked == 5
