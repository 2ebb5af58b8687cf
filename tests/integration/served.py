"""A real `postway serve` process on loopback, for tests of what the server does over HTTP:
bodies as they stream, memory, headers the server rewrites, the OpenAPI contract."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from peers.smtp import free_port
from postway.config import Settings
from postway.runtime import Runtime
from postway.store.users import create_token, create_user

SECRET = "served-test-secret-0123456789abcdef"
EMAIL = "ada@acme.example"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def children(self) -> dict[str, int]:
        """The supervisor's child processes by role ("web", "worker"): role -> pid."""
        return children_of(self.proc.pid)

    def status_kb(self, field: str) -> int:
        """A memory figure of the web process from /proc (VmRSS, VmHWM: peak RSS), in kB."""
        pid = self.children()["web"]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{pid}/status")


def children_of(parent: int) -> dict[str, int]:
    """Running `postway web` / `postway worker` children of `parent`, by role (a later
    worker replaces an earlier one under the same key; tests here run one)."""
    return dict(child_processes(parent))


def child_processes(parent: int) -> list[tuple[str, int]]:
    """Every running `postway web` / `postway worker` child of `parent`: (role, pid)."""
    found: list[tuple[str, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) != parent or fields[0] == "Z":
            continue
        for role in (b"web", b"worker"):
            if role in argv and b"postway" in argv:
                found.append((role.decode(), int(entry.name)))
    return found


def _env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWAY_")}
    env.update(
        POSTWAY_DATA_DIR=str(data_dir),
        POSTWAY_SECRET_KEY=SECRET,
        POSTWAY_HOSTNAME="postway.test",
        POSTWAY_LOG_LEVEL="WARNING",
        POSTWAY_WORKER_POLL_SECONDS="0.2",
    )
    env.update(extra)
    return env


async def _seed(data_dir: Path) -> str:
    rt = Runtime(Settings(data_dir=data_dir, secret_key=SECRET))
    await rt.start()
    try:
        async with rt.db.session() as s, s.begin():
            user = await create_user(s, EMAIL, "correct horse battery", admin=True)
            return await create_token(s, user)
    finally:
        await rt.aclose()


def _seed_in_thread(data_dir: Path) -> str:
    # its own thread and event loop, so this works from sync and async tests alike
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _seed(data_dir)).result()


@contextlib.contextmanager
def served_postway(tmp_path: Path, **env: str) -> Iterator[Served]:
    """`postway serve` on a free loopback port with a fresh SQLite data dir holding one admin
    user and an API token for it; stopped (and waited for) on exit."""
    data_dir = tmp_path / "served-data"
    token = _seed_in_thread(data_dir)
    port = free_port()
    log = (tmp_path / "served.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "postway", "serve", "--port", str(port)],
        env=_env(data_dir, env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(proc, port, tmp_path / "served.log")
        yield Served(proc, port, token, data_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"postway serve exited: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"postway serve did not answer: {log.read_text()}")


@dataclass
class Upload:
    body_sent: int  # bytes of body the server took before it answered or hung up
    response: bytes


def raw_post(port: int, path: str, total: int, headers: str = "", chunked: bool = True) -> Upload:
    """POST `total` bytes from a raw socket, chunked (no Content-Length) or with the length
    declared, stopping as soon as the server answers or closes the connection (an HTTP
    client library would insist on sending the whole body before reading the answer)."""
    chunk = 64 * 1024
    piece = b"x" * chunk
    if chunked:
        piece = f"{chunk:x}\r\n".encode() + piece + b"\r\n"
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\n{framing}\r\n{headers}\r\n"
            ).encode()
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total and not _readable(sock):
                sock.sendall(piece)  # blocks while the server does not read
                sent += chunk
            if sent >= total and chunked:
                sock.sendall(b"0\r\n\r\n")
        return Upload(sent, _read_answer(sock))


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
            head, sep, body = data.partition(b"\r\n\r\n")
            length = [
                int(v)
                for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                if k.strip().lower() == b"content-length"
            ]
            if sep and length and len(body) >= length[0]:
                break
    return data


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP/1.1 answer."""
    return int(answer.split(b" ", 2)[1])
