"""Helpers for the bounce intake tests (a plain module: `conftest` names clash across folders):
seeding a delivered managed delivery, building DSNs and ARF reports, sending them over SMTP."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import aiosmtplib

from postway.delivery.submit import SendRequest, submit_message
from postway.domain.states import ChannelName
from postway.mta.verp import make_return_path
from postway.store.events import append_event
from postway.store.identities import create_identity, mark_verified
from postway.store.models import Delivery, utcnow
from postway.store.users import get_user_by_email, principal_of

FEEDBACK = "fbl@bounces.postway.test"  # the feedback-loop address the `intake` fixture sets
CORPUS = Path(__file__).resolve().parents[2] / "data" / "bounces"  # tests/data


@dataclass
class Seeded:
    delivery_id: str
    verp: str
    message_id: str  # the Message-ID header of the sent message
    recipient: str


async def seed_delivered(env, owner_email: str, recipient: str) -> Seeded:
    """A managed message to `recipient`, recorded as accepted by the recipient's server (what
    the MTA writes after a 250), as the state a later DSN finds it in."""
    (seeded,) = await seed_delivered_many(env, owner_email, [recipient])
    return seeded


async def seed_delivered_many(env, owner_email: str, recipients: list[str]) -> list[Seeded]:
    """One managed message to several recipients, each delivery recorded as delivered; the
    owner gets a new identity (so call this once per owner)."""
    async with env.rt.db.session() as s, s.begin():
        who = principal_of(await get_user_by_email(s, owner_email))
        ident = await create_identity(
            s, who, name="Rep", email=owner_email, channel=ChannelName.MANAGED.value
        )
        await mark_verified(s, owner_email)
        message, deliveries = await submit_message(
            s,
            env.rt.settings,
            who,
            SendRequest(identity_id=ident.id, to=recipients, subject="Hello", text="Hi there"),
        )
        out = []
        for d in deliveries:
            d.state, d.due_at, d.reply_code, d.updated_at = "delivered", None, 250, utcnow()
            d.remote_mta, d.attempts = "mx.client.example", 1
            append_event(s, d, "delivered", reply_code=250)
            verp = make_return_path(
                d.id, env.rt.settings.resolved_secret_key(), env.rt.settings.bounce_domain
            )
            out.append(Seeded(d.id, verp, message.message_id_header, d.recipient))
        return out


async def delivery(env, delivery_id: str) -> Delivery:
    async with env.rt.db.session() as s:
        d = await s.get(Delivery, delivery_id)
        assert d is not None
        return d


def original_headers(seeded: Seeded) -> str:
    return (
        f"Return-Path: <{seeded.verp}>\nFrom: Rep <rep@acme.example>\n"
        f"To: {seeded.recipient}\nSubject: Hello\nMessage-ID: {seeded.message_id}\n"
    )


def _report(headers: str, report_type: str, parts: list[tuple[str, str]]) -> bytes:
    """A multipart/report written out by hand, as MTAs do (the `email` package will not
    serialise message/delivery-status parts given as text)."""
    boundary = "=_postway_test_boundary"
    out = [
        headers.rstrip("\n"),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    for ctype, body in parts:
        out += [f"--{boundary}", f"Content-Type: {ctype}", "", body.rstrip("\n"), ""]
    out += [f"--{boundary}--", ""]
    return "\r\n".join("\r\n".join(out).splitlines()).encode() + b"\r\n"


def build_dsn(
    seeded: Seeded,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    remote_mta: str = "mx1.client.example",
) -> bytes:
    """An RFC 3464 DSN as Postfix writes one, about `seeded`'s recipient."""
    rcpt = seeded.recipient
    subject = "Delayed Mail (still being retried)" if action == "delayed" else "Undelivered Mail"
    headers = (
        "From: MAILER-DAEMON@mx1.client.example (Mail Delivery System)\n"
        f"To: {seeded.verp}\nSubject: {subject}\n"
        "Message-ID: <dsn.1@mx1.client.example>\n"
    )
    fields = (
        "Reporting-MTA: dns; mx1.client.example\n\n"
        f"Final-Recipient: rfc822; {rcpt}\nOriginal-Recipient: rfc822; {rcpt}\n"
        f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; {remote_mta}\n"
        f"Diagnostic-Code: {diagnostic.format(rcpt=rcpt)}\n"
    )
    return _report(
        headers,
        "delivery-status",
        [
            ("text/plain", f"I'm sorry to have to inform you that your message to <{rcpt}> "
                           "could not be delivered."),
            ("message/delivery-status", fields),
            ("text/rfc822-headers", original_headers(seeded)),
        ],
    )  # fmt: skip


def build_dsn_for_many(seeded: list[Seeded]) -> bytes:
    """One DSN reporting every recipient of one message as unknown (a relay that batches)."""
    blocks = "\n".join(
        f"Final-Recipient: rfc822; {x.recipient}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{x.recipient}>: User unknown\n"
        for x in seeded
    )
    headers = (
        "From: MAILER-DAEMON@mx1.client.example (Mail Delivery System)\n"
        "To: postmaster@acme.example\nSubject: Undelivered Mail\n"
        "Message-ID: <dsn.many@mx1.client.example>\n"
    )
    return _report(
        headers,
        "delivery-status",
        [
            ("text/plain", "Your message could not be delivered to any recipient."),
            ("message/delivery-status", f"Reporting-MTA: dns; mx1.client.example\n\n{blocks}"),
            ("text/rfc822-headers", original_headers(seeded[0])),
        ],
    )


def build_arf(seeded: Seeded) -> bytes:
    """An RFC 5965 complaint carrying the original headers (and so the VERP Return-Path)."""
    headers = (
        f"From: feedback@fbl.client.example\nTo: {FEEDBACK}\n"
        "Subject: Complaint about message\nMessage-ID: <arf.1@fbl.client.example>\n"
    )
    feedback = (
        "Feedback-Type: abuse\nUser-Agent: FBL/1.0\nVersion: 1\n"
        f"Original-Rcpt-To: {seeded.recipient}\n"
    )
    return _report(
        headers,
        "feedback-report",
        [
            ("text/plain", "This is an email abuse report."),
            ("message/feedback-report", feedback),
            ("text/rfc822-headers", original_headers(seeded)),
        ],
    )


def auto_reply(seeded: Seeded) -> bytes:
    msg = EmailMessage()
    msg["From"] = seeded.recipient
    msg["To"] = seeded.verp
    msg["Subject"] = "Out of office: Hello"
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("I am away until Monday and will answer your mail then.")
    return msg.as_bytes(policy=SMTP_POLICY)


def corpus(name: str, *, recipient_from: str, to: Seeded) -> bytes:
    """A real bounce from the corpus; the recipient it names replaced by ours."""
    raw = (CORPUS / name).read_bytes()
    return raw.replace(recipient_from.encode(), to.recipient.encode())


async def send(port: int, rcpt: str, raw: bytes, *, sender: str = "") -> tuple[int, str]:
    """Send over SMTP to the intake; the reply to the final dot (a refusal raises)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as smtp:
        errors, reply = await smtp.sendmail(sender, [rcpt], raw)
        assert not errors
        return 250, reply
