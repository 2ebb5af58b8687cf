"""CPU per delivered message on the delivery side (issue 9), in-process, sink in another process.

    .venv/bin/python bench/delivery_cpu.py --mode managed \
        --messages 300 --rcpts 5 --size 50000
    ... --mode relay  (custom SMTP relay: STARTTLS + AUTH at the sink)
    ... --profile     (cProfile, top functions by cumulative time)

Queues the messages first (not measured), then measures time.process_time() of the worker
draining them to the sink (a ScriptedSMTPServer in a subprocess, so its CPU is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "tests"))

SINK = r"""
import sys, time
sys.path.insert(0, "tests")
from pathlib import Path
from peers.smtp import ScriptedSMTPServer
from peers.tls import TLSPeer
d = Path(sys.argv[1]); mode = sys.argv[2]
kw = {}
if mode == "relay":
    tls = TLSPeer.create(d)
    kw = dict(tls_context=tls.server_context(), require_starttls=True,
              users={"rep@acme.example": "pw-123456"}, require_auth=True)
srv = ScriptedSMTPServer(**kw).start()
print(srv.port, flush=True)
sys.stdin.read()
print(len(srv.received), srv.sessions_opened, sum(1 for c in srv.verbs() if c == "AUTH"),
      sum(1 for c in srv.verbs() if c == "RSET"), flush=True)
srv.stop()
"""


async def main(a: argparse.Namespace) -> None:
    from sqlalchemy import func, select

    from postway.config import Settings
    from postway.delivery.submit import SendRequest, submit_message
    from postway.domain.states import ChannelName
    from postway.runtime import Runtime
    from postway.store.channel_settings import save_setting
    from postway.store.identities import create_identity, mark_verified
    from postway.store.models import Delivery
    from postway.store.users import create_user, principal_of

    tmp = Path(tempfile.mkdtemp(prefix="dcpu"))
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(tmp), a.mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    port = int(sink.stdout.readline())
    s = Settings(
        data_dir=tmp / "data", database_url=a.db or f"sqlite:///{tmp / 'p.db'}",
        secret_key="k" * 40, hostname="postway.test", bounce_domain="bounces.postway.test",
        allow_private_relays=True, smtp_ca_file=str(tmp / "test-ca.pem") if a.mode == "relay" else "",
        transport=f"*=127.0.0.1:{port}", log_level="WARNING", worker_batch=a.batch,
    )
    rt = Runtime(s)
    await rt.start()
    async with rt.db.session() as db, db.begin():
        who = principal_of(await create_user(db, "rep@acme.example", "password123"))
        channel = "smtp" if a.mode == "relay" else None
        ident = await create_identity(db, who, name="Rep", email="rep@acme.example", channel=channel)
        await mark_verified(db, "rep@acme.example")
        if a.mode == "relay":
            await save_setting(db, rt.box, who.org_id, who.user_id, ChannelName.SMTP, {
                "host": "localhost", "port": port, "security": "starttls",
                "username": "rep@acme.example", "password": "pw-123456",
                "keep_password": False, "auth": "auto"})
    body = ("Hello,\n.a line with a dot\n" + "x" * 70 + "\n") * max(1, a.size // 100)
    for i in range(a.messages):
        async with rt.db.session() as db, db.begin():
            await submit_message(db, s, who, SendRequest(
                identity_id=ident.id, to=[f"r{i}-{j}@d{j}.example" for j in range(a.rcpts)],
                subject=f"m{i}", text=body))
    rt.registry.managed()  # the DKIM key is made here, outside the measurement
    prof = cProfile.Profile() if a.profile else None
    c0, w0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    while await rt.worker.run_once():
        pass
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    async with rt.db.session() as db:
        done = await db.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.state.in_(("delivered", "sent"))))
    await rt.aclose()
    sink.stdin.close()
    print("sink received, sessions, AUTH, RSET:", sink.stdout.readline().strip())
    sink.wait()
    n = a.messages * a.rcpts
    print(f"mode={a.mode} messages={a.messages} rcpts={a.rcpts} size~{a.size}B "
          f"done={done}/{n}: CPU {cpu*1000/n:.3f} ms per delivery "
          f"({cpu*1000/a.messages:.3f} ms per message), wall {wall:.2f}s")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.profile)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("managed", "relay"), default="managed")
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--rcpts", type=int, default=5)
    p.add_argument("--size", type=int, default=50000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--db", default="")
    p.add_argument("--profile", type=int, default=0)
    asyncio.run(main(p.parse_args()))
