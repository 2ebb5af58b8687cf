"""`postway serve --demo` as a real process: mail reaches the local inbox, bounce.test bounces,
defer.test defers, all offline."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
from test_cli import cli_env
from web_login import web_login

from peers.smtp import free_port


def start_demo(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "postway", "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def demo_token(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for _ in range(200):
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.startswith("Demo API token"):
            return (await asyncio.to_thread(proc.stdout.readline)).strip()
    raise AssertionError("the demo printed no API token")


async def test_demo_delivers_to_local_inbox_and_shows_bounces(tmp_path):
    port = free_port()
    env = cli_env(tmp_path, f"sqlite:///{tmp_path / 'demo.db'}", POSTWAY_LOG_LEVEL="WARNING")
    proc = start_demo(env, port)
    try:
        token = await demo_token(proc)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as api:
            identity = (await api.get("/api/v1/identities")).json()[0]
            assert identity["verified"] is True
            r = await api.post(
                "/api/v1/messages",
                json={
                    "identity_id": identity["id"],
                    "to": ["anna@client.example", "nobody@bounce.test", "slow@defer.test"],
                    "subject": "Demo hello",
                    "text": "Hello from the demo",
                },
            )
            assert r.status_code == 202
            states: dict[str, dict[str, object]] = {}
            for _ in range(100):
                msg = (await api.get(f"/api/v1/messages/{r.json()['id']}")).json()
                states = {d["recipient"]: d for d in msg["deliveries"]}
                if all(d["state"] != "queued" for d in states.values()):
                    break
                await asyncio.sleep(0.1)
            assert states["anna@client.example"]["state"] == "delivered"
            bounced = states["nobody@bounce.test"]
            assert (bounced["state"], bounced["reason"], bounced["status"]) == (
                "bounced",
                "userunknown",
                "5.1.1",
            )
            assert states["slow@defer.test"]["state"] == "deferred"
            failed = (await api.get("/api/v1/failed-deliveries")).json()
            assert [i["recipient"] for i in failed["items"]] == ["nobody@bounce.test"]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
            r = await web_login(web, "demo@postway.test", "postway-demo")
            assert r.status_code == 303
            page = await web.get("/inbox")
            assert page.status_code == 200
            assert "Demo hello" in page.text and "anna@client.example" in page.text
            assert "nobody@bounce.test" not in page.text
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
