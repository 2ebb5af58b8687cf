"""Running the roles: web + API, the delivery worker, or all of them in one process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy import func, select

from postway import setup_token
from postway.bounces.gmail_scan import GmailBounceScanner
from postway.bounces.imap_scan import ImapBounceScanner
from postway.config import Settings
from postway.demo import LocalInbox, demo_banner, seed_demo
from postway.logs import setup_logging
from postway.runtime import Runtime
from postway.store.models import User
from postway.wake import WakeListener, WakeSender

if TYPE_CHECKING:
    from postway.bounces.intake import BounceIntake

log = logging.getLogger("postway")


async def run_server(
    settings: Settings,
    host: str,
    port: int,
    bounce_port: int,
    *,
    worker: bool,
    web: bool,
    demo: bool = False,
    announce: bool = True,
    wake_fds: list[int] | None = None,
) -> None:
    setup_logging(settings.log_level, settings.log_format)
    configured_base_url = settings.base_url  # the setup link uses it only when configured
    if web and not settings.base_url:
        settings.base_url = f"http://{host}:{port}"
    inbox: LocalInbox | None = None
    if demo:
        # every domain goes to the built-in inbox, so nothing leaves the machine
        inbox = LocalInbox(settings.data_dir / "inbox")
        await inbox.start()
        settings.transport = f"*=127.0.0.1:{inbox.port}"
    rt = Runtime(settings)
    rt.inbox = inbox
    listener: WakeListener | None = None
    if wake_fds and web:
        rt.wake_sender = WakeSender(wake_fds)
    elif wake_fds and worker:
        listener = WakeListener(wake_fds[0], rt.worker.wake)
        listener.start()
    await rt.start()
    tasks: list[asyncio.Task[None]] = []
    server: uvicorn.Server | None = None
    intake: BounceIntake | None = None
    scanner: ImapBounceScanner | None = None
    gmail_scanner: GmailBounceScanner | None = None
    try:
        if bounce_port:
            intake = await _start_intake(rt, host, bounce_port)
        if web:
            from postway.web.app import create_app

            # proxy_headers off: the client address is always the socket's, never one that
            # an X-Forwarded-For header claims (uvicorn trusts it from loopback by default)
            config = uvicorn.Config(
                create_app(rt),
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                http="httptools",
                proxy_headers=False,
            )
            server = uvicorn.Server(config)
            # uvicorn < 0.29's hook (the ignore: newer uvicorn has no such attribute; there
            # Server.serve() captures SIGINT/SIGTERM itself and this line changes nothing)
            server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
            tasks.append(asyncio.create_task(server.serve()))
            if demo:
                print(demo_banner(host, port, await seed_demo(rt)), flush=True)
            if announce:  # a restarted web process under `postway serve` says nothing
                await _listening(server, tasks[-1])
                await _announce(rt, host, port, configured_base_url)
        if worker:
            tasks.append(asyncio.create_task(rt.worker.run()))
            # custom SMTP senders' bounce mailboxes (IMAP), read next to the queue
            scanner = ImapBounceScanner(rt.db, rt.settings, rt.box)
            tasks.append(asyncio.create_task(scanner.run()))
            # Gmail senders' mailboxes (accounts connected with bounce scanning)
            gmail_scanner = GmailBounceScanner(rt.db, rt.settings, rt.accounts, rt.new_google_api)
            tasks.append(asyncio.create_task(gmail_scanner.run()))
        # what start-up built lives as long as the process: out of the collector's sight, so
        # full collections under load do not walk it again and again (fewer long pauses)
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception():
                raise t.exception()  # type: ignore[misc]
    finally:
        if server is not None:
            server.should_exit = True
        rt.worker.stop() if worker else None
        if scanner is not None:
            scanner.stop()
        if gmail_scanner is not None:
            gmail_scanner.stop()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 10)
        if intake is not None:
            await intake.stop()
        if listener is not None:
            listener.close()
        await rt.aclose()
        if inbox is not None:
            await inbox.aclose()


async def _listening(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    """Until the server accepts connections (or has stopped trying): the link printed next
    must work when it is clicked."""
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)


async def _start_intake(rt: Runtime, host: str, port: int) -> BounceIntake:
    from postway.bounces.intake import BounceIntake

    intake = BounceIntake(rt.db, rt.settings)
    bound = await intake.start(host or "127.0.0.1", port)
    print(f"Bounce intake (SMTP) for {intake.domain} on {host or '127.0.0.1'}:{bound}", flush=True)
    return intake


async def _announce(rt: Runtime, host: str, port: int, configured_base_url: str) -> None:
    async with rt.db.session() as s, s.begin():
        users = await s.scalar(select(func.count()).select_from(User)) or 0
    print(
        f"Postway is running at http://{host}:{port}/  (API: /api/v1, OpenAPI: /openapi.json)",
        flush=True,
    )
    print(
        f"Database: {rt.db.url.split('://', 1)[0]}; data folder: {rt.settings.data_dir}", flush=True
    )
    if users == 0:
        token = setup_token.issue(rt.settings.data_dir)
        print(
            "No users yet. Open this one-time link (valid for an hour) to create the first "
            "administrator:\n"
            f"  {setup_token.link(token, configured_base_url, host, port)}\n"
            "or create one in a terminal: postway user create you@example.com --admin",
            flush=True,
        )
    else:
        setup_token.discard(rt.settings.data_dir)
        print("Log in with your email and password.", flush=True)
