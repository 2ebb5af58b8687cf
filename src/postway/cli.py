"""`postway ...`: the one entry point for every role and every admin task."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from postway.config import Settings, settings_table
from postway.errors import PostwayError

if TYPE_CHECKING:
    from postway.runtime import Runtime

T = TypeVar("T")
app = typer.Typer(
    help="Postway: a self-hosted delivery layer for sales email.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
identity_app = typer.Typer(help="Sending identities.", no_args_is_help=True)
bounce_app = typer.Typer(help="Bounces.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
queue_app = typer.Typer(help="The delivery queue.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM signing for managed mail.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (user_app, "user"),
    (token_app, "token"),
    (identity_app, "identity"),
    (bounce_app, "bounce"),
    (config_app, "config"),
    (queue_app, "queue"),
    (dkim_app, "dkim"),
):
    app.add_typer(sub, name=name)

console = Console(stderr=True)


def _run(make: Callable[..., Awaitable[T]], *args: object) -> T:
    """Build the runtime, run one coroutine against it, and turn Postway errors into exit 1."""
    from postway.runtime import Runtime

    async def go() -> T:
        rt = Runtime(Settings())
        try:
            await rt.start()
            return await make(rt, *args)
        finally:
            await rt.aclose()

    try:
        return asyncio.run(go())
    except PostwayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


# --- servers ------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Web and API port.")] = 8025,
    bounce_port: Annotated[int, typer.Option(help="Bounce intake SMTP port (0: off).")] = 0,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Delivery worker processes (0: one on SQLite, one per spare core on PostgreSQL).",
        ),
    ] = 0,
    demo: Annotated[
        bool, typer.Option(help="Seed a demo user; route mail to a local inbox.")
    ] = False,
) -> None:
    """Run everything with one command: the web app and API in one process and the delivery
    workers in others, started and stopped together (SQLite by default)."""
    if demo:  # the demo's local inbox lives in the one process that serves it
        from postway.server import run_server

        _guard(
            lambda: run_loop(
                run_server(Settings(), host, port, bounce_port, worker=True, web=True, demo=True)
            )
        )
        return
    from postway.supervisor import serve as serve_all

    status = 0

    def go() -> None:
        nonlocal status
        status = serve_all(Settings(), host, port, bounce_port, workers or None)

    _guard(go)
    raise typer.Exit(status)


Supervised = Annotated[bool, typer.Option("--supervised", hidden=True)]
WakeFds = Annotated[str, typer.Option("--wake-fds", hidden=True)]


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Web and API port.")] = 8025,
    supervised: Supervised = False,
    wake_fds: WakeFds = "",
) -> None:
    """Run the web app and API only (scale out next to `postway worker`)."""
    from postway.server import run_server
    from postway.wake import parse_fds

    server = run_server(
        Settings(),
        host,
        port,
        0,
        worker=False,
        web=True,
        announce=not supervised,
        wake_fds=parse_fds(wake_fds),
    )
    _guard(lambda: run_loop(server))


@app.command()
def worker(
    host: Annotated[str, typer.Option(help="Address of the bounce intake.")] = "127.0.0.1",
    bounce_port: Annotated[int, typer.Option(help="Bounce intake SMTP port (0: off).")] = 0,
    supervised: Supervised = False,
    wake_fds: WakeFds = "",
) -> None:
    """Run the delivery worker only; run as many as you like against one PostgreSQL."""
    from postway.server import run_server
    from postway.wake import parse_fds

    server = run_server(
        Settings(), host, 0, bounce_port, worker=True, web=False, wake_fds=parse_fds(wake_fds)
    )
    _guard(lambda: run_loop(server))


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a server coroutine on uvloop when it is installed (faster sockets and timers)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _guard(fn: Callable[[], object]) -> None:
    try:
        fn()
    except PostwayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


# --- database, users, tokens, identities ----------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the latest version."""

    async def go(rt: Runtime) -> None:
        return None  # Runtime.start() already applied the migrations

    _run(go)
    console.print("database is up to date")


Force = Annotated[bool, typer.Option("--force", help="Replace what is there.")]


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="Backup file to write.")], force: Force = False
) -> None:
    """Back up the database and the keys a restore needs (secret key, DKIM keys) into one
    .tar.gz (mode 0600); safe while Postway runs. PostgreSQL needs pg_dump on PATH."""
    from postway.store.backup import backup

    done = _backup_task(lambda progress: backup(Settings(), file, force=force, progress=progress))
    console.print(
        f"wrote {done.path} ({done.size:,} bytes, {done.database}): {', '.join(done.members)}"
    )
    if any(m.startswith("keys/") for m in done.members):
        console.print("it holds private keys: keep it as private as the data folder")


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="Backup file to read.")], force: Force = False
) -> None:
    """Restore a backup into an empty database and data folder (stop Postway first; --force
    replaces data and keys that are there). PostgreSQL needs pg_restore on PATH."""
    from postway.store.backup import restore

    done = _backup_task(lambda progress: restore(Settings(), file, force=force, progress=progress))
    console.print(
        f"restored {', '.join(done.members)} from {done.path}; "
        "start Postway to send what was waiting"
    )


def _backup_task(work: Callable[[Any], T]) -> T:
    """Run a backup or restore, printing progress about once a second when it takes long."""
    import time

    started = last = time.monotonic()

    def progress(what: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            share = f"/{total} ({100 * done // total}%)" if total else ""
            console.print(f"{now - started:.0f} s: {what} {done}{share}")

    try:
        result = work(progress)
    except PostwayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for note in getattr(result, "notes", []):
        console.print(f"note: {note}")
    return result


@user_app.command("create")
def user_create(
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user (password from a prompt, or from stdin with --password-stdin)."""
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def go(rt: Runtime) -> str:
        from postway.store.users import create_user

        async with rt.db.session() as s, s.begin():
            user = await create_user(s, email, password, admin=admin)
            return user.email

    created = _run(go)
    console.print(f"created user {created}{' (admin)' if admin else ''}")


@token_app.command("create")
def token_create(
    email: str,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
    expires_days: Annotated[
        float | None,
        typer.Option("--expires-days", min=0.0, help="Stop working after this many days."),
    ] = None,
) -> None:
    """Create an API token for a user; it is shown once, on the last line."""
    from datetime import timedelta

    async def go(rt: Runtime) -> str:
        from postway.store.users import create_token, get_user_by_email

        expires_in = timedelta(days=expires_days) if expires_days is not None else None
        async with rt.db.session() as s, s.begin():
            user = await get_user_by_email(s, email)
            return await create_token(s, user, name, expires_in=expires_in)

    token = _run(go)
    console.print("API token (shown once; store it now):")
    print(token)


@token_app.command("list")
def token_list(email: str) -> None:
    """List a user's API tokens that are not revoked (never the tokens themselves)."""
    from rich import box
    from rich.table import Table

    from postway.store.models import utcnow

    async def go(rt: Runtime) -> list[Any]:
        from postway.store.users import get_user_by_email, list_tokens

        async with rt.db.session() as s, s.begin():
            return await list_tokens(s, (await get_user_by_email(s, email)).id)

    def at(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"

    rows, now = _run(go), utcnow()
    table = Table("id", "name", "created", "last used", "expires", "state", box=box.SIMPLE_HEAD)
    for t in rows:
        expired = t.expires_at is not None and t.expires_at <= now
        table.add_row(
            t.id, t.name, at(t.created_at), at(t.last_used_at), at(t.expires_at),
            "expired" if expired else "active",
        )  # fmt: skip
    Console().print(table)  # stdout; `console` is stderr
    console.print(f"{len(rows)} token{'s' if len(rows) != 1 else ''} for {email}")


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke an API token by its id (from `postway token list`); it stops working at once."""

    async def go(rt: Runtime) -> str:
        from postway.store.users import revoke_token

        async with rt.db.session() as s, s.begin():
            return (await revoke_token(s, token_id)).id

    console.print(f"revoked token {_run(go)}")


@identity_app.command("verify")
def identity_verify(email: str) -> None:
    """Mark every identity with this address verified (admin set-up and tests)."""

    async def go(rt: Runtime) -> int:
        from postway.store.identities import mark_verified

        async with rt.db.session() as s, s.begin():
            return len(await mark_verified(s, email))

    count = _run(go)
    console.print(f"verified {count} identit{'y' if count == 1 else 'ies'} for {email}")


# --- sending --------------------------------------------------------------------------------


@app.command()
def send(
    user: Annotated[str, typer.Option("--user", help="Email of the user who sends.")],
    identity: Annotated[str, typer.Option("--from", help="Identity address (or id) to send as.")],
    to: Annotated[list[str], typer.Option("--to", help="Recipient (repeatable).")],
    subject: Annotated[str, typer.Option(help="Subject line.")] = "",
    text: Annotated[str | None, typer.Option(help="Plain-text body ('-' reads stdin).")] = None,
    html_file: Annotated[Path | None, typer.Option(help="File with the HTML body.")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc", help="Cc (repeatable).")] = None,
    bcc: Annotated[list[str] | None, typer.Option("--bcc", help="Bcc (repeatable).")] = None,
    attach: Annotated[list[Path] | None, typer.Option(help="File to attach (repeatable).")] = None,
    wait: Annotated[
        float, typer.Option(help="Deliver now and wait up to this many seconds for outcomes.")
    ] = 0.0,
) -> None:
    """Queue a message as one of a user's identities; prints its id and delivery states."""
    body = sys.stdin.read() if text == "-" else text
    result = _run(
        send_command,
        user,
        identity,
        to,
        cc or [],
        bcc or [],
        subject,
        body,
        html_file.read_text() if html_file else None,
        [(p.name, p.read_bytes()) for p in attach or []],
        wait,
    )
    print(json.dumps(result, indent=2, default=str))


async def send_command(
    rt: Runtime,
    user_email: str,
    identity: str,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    subject: str,
    text: str | None,
    html: str | None,
    attach: list[tuple[str, bytes]],
    wait: float,
) -> dict[str, Any]:
    import base64
    import mimetypes
    import time

    from postway.delivery.submit import AttachmentIn, SendRequest, accept_message
    from postway.store.identities import list_identities
    from postway.store.messages import deliveries_of
    from postway.store.users import get_user_by_email, principal_of

    attachments = []
    for filename, data in attach:
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        attachments.append(AttachmentIn(filename, ctype, base64.b64encode(data).decode()))
    async with rt.db.session() as s, s.begin():
        who = principal_of(await get_user_by_email(s, user_email))
        mine = await list_identities(s, who)
        match = [i for i in mine if identity in (i.id, i.email)]
        if not match:
            raise PostwayError(f"{user_email} has no identity {identity}")
        req = SendRequest(
            identity_id=match[0].id,
            to=to,
            cc=cc,
            bcc=bcc,
            subject=subject,
            text=text,
            html=html,
            attachments=attachments,
        )
    message, _ = await accept_message(rt.db, rt.settings, who, req)
    deadline = time.monotonic() + wait
    while wait > 0 and time.monotonic() < deadline:
        await rt.worker.run_once()
        async with rt.db.session() as s, s.begin():
            states = [d.state for d in await deliveries_of(s, message.id)]
        if all(st not in ("queued",) for st in states):
            break
        await asyncio.sleep(0.2)
    async with rt.db.session() as s, s.begin():
        deliveries = await deliveries_of(s, message.id)
    return {
        "id": message.id,
        "deliveries": [
            {
                "recipient": d.recipient,
                "state": d.state,
                "reason": d.reason,
                "status": d.status,
                "diagnostic": d.diagnostic,
            }
            for d in deliveries
        ],
    }


@dkim_app.command("show")
def dkim_show() -> None:
    """Print the DNS TXT record to publish for Postway's DKIM key (made on first use)."""
    from postway.mta.dkim import load_or_create_key

    settings = Settings()
    key = load_or_create_key(
        settings.data_dir,
        settings.dkim_domain or settings.bounce_domain,
        settings.dkim_selector,
        settings.dkim_algorithm,
    )
    console.print(f"Publish this TXT record in the DNS of {key.domain}:")
    print(key.dns_record())


# --- the queue -----------------------------------------------------------------------------


@queue_app.command("list")
def queue_list(
    state: Annotated[
        str | None, typer.Option(help="Only this state (default: everything waiting).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 50,
) -> None:
    """List deliveries waiting in the queue (or in a given state), next due first."""
    from rich.table import Table

    from postway.delivery.queue_admin import list_deliveries

    async def go(rt: Runtime) -> list[Any]:
        async with rt.db.session() as s, s.begin():
            return await list_deliveries(s, state, limit)

    rows = _run(go)
    table = Table("id", "recipient", "channel", "state", "attempts", "next try", "reason")
    for d in rows:
        due = d.due_at.strftime("%Y-%m-%d %H:%M:%S") if d.due_at else "-"
        table.add_row(d.id, d.recipient, d.channel, d.state, str(d.attempts), due, d.reason or "")
    Console().print(table)
    console.print(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}")


@queue_app.command("show")
def queue_show(delivery_id: str) -> None:
    """Show one delivery with its whole event history."""
    from postway.delivery.queue_admin import get_delivery
    from postway.store.messages import events_of

    async def go(rt: Runtime) -> dict[str, Any]:
        async with rt.db.session() as s, s.begin():
            d = await get_delivery(s, delivery_id)
            events = (await events_of(s, [d.id])).get(d.id, [])
            return {
                "id": d.id,
                "message_id": d.message_id,
                "recipient": d.recipient,
                "channel": d.channel,
                "state": d.state,
                "reason": d.reason,
                "status": d.status,
                "diagnostic": d.diagnostic,
                "remote_mta": d.remote_mta,
                "attempts": d.attempts,
                "due_at": d.due_at,
                "expires_at": d.expires_at,
                "events": [
                    {"at": e.created_at, "type": e.type, "state": e.state, **e.detail}
                    for e in events
                ],
            }

    print(json.dumps(_run(go), indent=2, default=str))


@queue_app.command("retry")
def queue_retry(
    delivery_ids: Annotated[list[str] | None, typer.Argument(help="Deliveries to retry.")] = None,
    all_deferred: Annotated[
        bool, typer.Option("--all-deferred", help="Retry every deferred delivery now.")
    ] = False,
) -> None:
    """Try deferred deliveries now; send failed or bounced ones again."""
    from postway.delivery.queue_admin import get_delivery, list_deliveries, retry_now

    if not delivery_ids and not all_deferred:
        console.print("[red]error:[/red] name deliveries or pass --all-deferred")
        raise typer.Exit(2)

    async def go(rt: Runtime) -> int:
        async with rt.db.session() as s, s.begin():
            rows = [await get_delivery(s, i) for i in delivery_ids or []]
            if all_deferred:
                rows += await list_deliveries(s, "deferred", 1_000_000, lock=True)
            for d in rows:
                retry_now(s, d, rt.settings, "cli")
            return len(rows)

    console.print(f"{_run(go)} queued for an immediate try")


@queue_app.command("purge")
def queue_purge(
    delivery_ids: Annotated[list[str] | None, typer.Argument(help="Deliveries to purge.")] = None,
    state: Annotated[
        str | None, typer.Option(help="Purge every delivery in this state (queued/deferred).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Take waiting deliveries out of the queue; they are marked failed (reason: purged)."""
    from postway.delivery.queue_admin import get_delivery, list_deliveries, purge

    if not delivery_ids and not state:
        console.print("[red]error:[/red] name deliveries or pass --state")
        raise typer.Exit(2)
    if not yes and not typer.confirm("Mark these deliveries failed and stop trying?"):
        raise typer.Exit(1)

    async def go(rt: Runtime) -> int:
        async with rt.db.session() as s, s.begin():
            rows = [await get_delivery(s, i) for i in delivery_ids or []]
            if state:
                rows += await list_deliveries(s, state, 1_000_000, lock=True)
            for d in rows:
                purge(s, d, "cli")
            return len(rows)

    console.print(f"purged {_run(go)}")


# --- bounces and config ---------------------------------------------------------------------


@bounce_app.command("classify")
def bounce_classify(
    paths: list[Path],
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Add to each row the rule that decided the reason, the document it rests on "
            "and the text it matched ({'explain': {'rule', 'source', 'evidence'}}).",
        ),
    ] = False,
) -> None:
    """Classify bounce emails (.eml files or folders): one JSON object per line."""
    from postway.bounces import classify_files

    for row in classify_files(paths, explain=explain):
        print(json.dumps(row, ensure_ascii=False))


@app.command("bounce-server")
def bounce_server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(help="SMTP port (the bounce domain's MX: 25).", min=1, max=65535)
    ] = 25,
) -> None:
    """Run the bounce intake only: the SMTP server for POSTWAY_BOUNCE_DOMAIN."""
    from postway.server import run_server

    _guard(lambda: asyncio.run(run_server(Settings(), host, 0, port, worker=False, web=False)))


@bounce_app.command("failures")
def bounce_failures(
    limit: Annotated[int, typer.Option(help="How many to list, newest first.")] = 50,
    retry: Annotated[
        bool, typer.Option("--retry", help="Process them again first (e.g. after an upgrade).")
    ] = False,
) -> None:
    """List received bounces kept for review: not understood (failed) or matching no delivery."""
    from rich import box
    from rich.table import Table

    async def go(rt: Runtime) -> list[Any]:
        from postway.bounces.apply import list_failures, reprocess_failed

        if retry:
            done = await reprocess_failed(rt.db, rt.settings)
            fixed = sum(1 for p in done if p.status not in ("failed", "unmatched"))
            console.print(f"reprocessed {len(done)}; {fixed} no longer need review")
        return await list_failures(rt.db, limit)

    rows = _run(go)
    if not rows:
        console.print("no bounces kept for review")
        return
    table = Table(title=f"Bounces kept for review ({len(rows)})", box=box.SIMPLE_HEAD)
    for column in ("id", "received", "status", "from", "error"):
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "received", "status"))
    for r in rows:
        status = f"{r.status} ({r.kind})" if r.kind and r.kind != "none" else r.status
        table.add_row(
            r.id, r.received_at.strftime("%Y-%m-%d %H:%M"), status, r.mail_from or "<>",
            r.error or "",
        )  # fmt: skip
    Console().print(table)  # stdout; `console` is stderr


@config_app.command("table")
def config_table() -> None:
    """Print every setting as a Markdown table (for the README)."""
    print(settings_table())


def main() -> None:
    app()
