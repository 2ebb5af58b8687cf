"""GooglePeer: the Google stand-in (`postway.google_standin`) served over HTTP on loopback.

Runs uvicorn on its own thread and event loop, so it serves tests that block their own loop.
Point Postway at it with `Settings(google_base_url=peer.base_url, google_client_id=
peer.client_id, google_client_secret=peer.client_secret)`. Everything the stand-in knows,
and every control a test needs, is on `peer.state` (a `GoogleStandIn`):

    with GooglePeer(auto_approve=True) as google:
        google.state.fail_next("send", Fault.RATE_LIMIT, retry_after="7")
        ...
        assert google.state.requests_to("/messages/send")[0].bearer == token

An async `on_send` hook runs on the peer's own event loop, not the test's.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from postway.google_standin import Alias, GoogleStandIn, create_app

ACCOUNT = "rep@gmail.test"
CLIENT_ID = "test-client.apps.googleusercontent.test"
CLIENT_SECRET = "test-client-secret"


class GooglePeer:
    def __init__(
        self,
        *,
        account: str | None = ACCOUNT,
        aliases: tuple[Alias, ...] = (),
        **state_kw: Any,
    ) -> None:
        state_kw.setdefault("client_id", CLIENT_ID)
        state_kw.setdefault("client_secret", CLIENT_SECRET)
        self.state = GoogleStandIn(**state_kw)
        if account:
            self.state.add_account(account, display_name="Rep", aliases=aliases)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def client_secret(self) -> str:
        return self.state.client_secret

    def start(self) -> GooglePeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            h11_max_incomplete_event_size=64 * 1024,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name=f"google-peer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Google stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> GooglePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> GooglePeer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
