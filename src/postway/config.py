"""Settings: every knob Postway reads, typed, described and defaulted in one place.

The README's configuration table is generated from this class (`postway config table`),
so a setting added here is documented there without a second edit.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from postway.private_files import create_private_file, private_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTWAY_", extra="ignore")

    data_dir: Path = Field(
        Path("./postway-data"), description="Folder for the SQLite file, keys and local inbox."
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty means a SQLite file in the data dir. "
        "`postgresql://...` selects PostgreSQL.",
    )
    secret_key: str = Field(
        "",
        description="Key for secrets at rest and signed tokens; generated into the data dir "
        "if unset.",
    )
    hostname: str = Field("localhost", description="Name used in EHLO, Message-IDs and links.")
    base_url: str = Field(
        "", description="Public URL of the web app, for links in mail (default http://HOST:PORT)."
    )
    bounce_domain: str = Field(
        "bounces.postway.test",
        description="Domain of VERP return paths; its MX is the intake server. "
        "Set it in production.",
    )
    dkim_selector: str = Field("postway", description="DKIM selector for Postway's own domain.")
    dkim_domain: str = Field(
        "", description="Domain that signs managed mail (d=); defaults to the bounce domain."
    )
    dkim_algorithm: str = Field("rsa-sha256", description="rsa-sha256 or ed25519-sha256.")
    dns_nameservers: str = Field(
        "", description="Comma-separated host or host:port list; empty uses the system resolver."
    )
    transport: str = Field(
        "",
        description="Fixed routes like Postfix's transport map: "
        "`example.net=127.0.0.1:2525,*=127.0.0.1:2526`.",
    )
    allow_private_relays: bool = Field(
        False,
        description="Allow custom SMTP relays, and MX hosts found in DNS, on loopback, private "
        "or other non-public addresses.",
    )
    max_message_bytes: int = Field(
        25 * 1024 * 1024, description="Largest message accepted for sending, in bytes."
    )
    retry_base_seconds: float = Field(300.0, description="First retry delay after a deferral.")
    retry_max_seconds: float = Field(4 * 3600.0, description="Ceiling of the retry delay.")
    queue_lifetime_seconds: float = Field(
        5 * 86400.0, description="How long a deferred delivery is retried before it expires."
    )
    lease_seconds: float = Field(
        300.0,
        description="How long a worker's claim on a delivery lasts before others may take it.",
    )
    worker_batch: int = Field(100, description="Deliveries claimed by a worker at a time.")
    worker_batch_bytes: int = Field(
        64 * 1024 * 1024,
        description="Bytes of raw messages a worker holds in memory at once (a larger message "
        "still goes, alone).",
    )
    worker_poll_seconds: float = Field(
        1.0, description="Idle wait between queue polls when nothing is due."
    )
    smtp_connect_timeout: float = Field(30.0, description="Seconds to connect to an SMTP server.")
    smtp_command_timeout: float = Field(
        300.0, description="Seconds to wait for a reply to an SMTP command (RFC 5321 4.5.3.2)."
    )
    relay_test_timeout: float = Field(
        30.0, description="Seconds the relay connection test may take in all before it gives up."
    )
    mta_require_tls: bool = Field(
        False,
        description="Managed channel: refuse to deliver without STARTTLS and a valid certificate "
        "(default: opportunistic TLS).",
    )
    mta_max_connections: int = Field(
        10, description="Managed channel: open sessions at most per destination server."
    )
    mta_max_messages_per_session: int = Field(
        100, description="Managed channel: messages sent over one session before it is closed."
    )
    relay_max_connections: int = Field(
        3, description="Custom SMTP relay: open sessions at most per relay and credentials."
    )
    relay_max_messages_per_session: int = Field(
        100, description="Custom SMTP relay: messages sent over one session before it is closed."
    )
    smtp_verify_tls: bool = Field(
        True, description="Verify certificates of custom SMTP relays (turn off only for tests)."
    )
    smtp_ca_file: str = Field("", description="Extra CA bundle trusted for SMTP TLS.")
    log_level: str = Field("INFO", description="Logging level.")
    log_format: Literal["auto", "text", "json"] = Field(
        "auto",
        description="`auto` (readable lines on a terminal, JSON lines otherwise), `text` or "
        "`json`; lines carry the delivery and message ids.",
    )
    metrics_token: str = Field(
        "",
        description="Bearer token for /metrics; when empty, /metrics answers loopback "
        "clients only.",
    )
    # -- Google (the Gmail channel) --
    google_client_id: str = Field(
        "", description="OAuth client id of Postway's Google Cloud project (Gmail channel)."
    )
    google_client_secret: str = Field(
        "", description="OAuth client secret of that project; never logged or shown."
    )
    google_base_url: str = Field(
        "",
        description="Replaces scheme and host of every Google endpoint, keeping the real paths "
        "(for a stand-in in tests); empty: Google's own hosts.",
    )
    gmail_poll_seconds: float = Field(
        300.0,
        gt=0,
        description="Seconds between scans of connected Gmail mailboxes for bounces (accounts "
        "connected with bounce scanning).",
    )
    # -- bounce intake (postway bounce-server, or `serve --bounce-port`) --
    bounce_max_bytes: int = Field(
        10 * 1024 * 1024,
        description="Largest message the bounce intake accepts (advertised as SIZE), in bytes.",
    )
    bounce_parse_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="Seconds one received bounce may take to parse (in a worker process) before "
        "the worker is stopped and the message is marked failed for review.",
    )
    bounce_max_connections: int = Field(
        50, description="Concurrent SMTP connections the bounce intake serves; more get 421."
    )
    feedback_address: str = Field(
        "",
        description="Address the intake also accepts, for ARF complaint reports from feedback "
        "loops (e.g. `fbl@` the bounce domain); empty: none.",
    )
    bounce_max_connections_per_peer: int = Field(
        10,
        description="Concurrent bounce intake connections from one client address (IPv6: its "
        "/64); more get 421.",
    )
    bounce_session_seconds: float = Field(
        300.0, description="Longest bounce intake SMTP session; then 421 and the line is closed."
    )
    bounce_max_idle_commands: int = Field(
        20,
        description="NOOP, RSET, HELO/EHLO, HELP, VRFY and EXPN a bounce intake client may send "
        "between two messages; more get 421 and the line is closed.",
    )
    bounce_max_recipients: int = Field(
        20,
        description="VERP addresses per message at the bounce intake (more get 452); the "
        "message is stored once however many it names.",
    )
    bounce_peer_daily_reports: int = Field(
        5000,
        description="Bounce reports (one per VERP address) stored per client address (IPv6: "
        "its /64) in 24 hours; more get 452 (the sender retries later).",
    )
    bounce_peer_daily_bytes: int = Field(
        200 * 1024 * 1024,
        description="Bytes of new raw bounce messages stored per client address (IPv6: its "
        "/64) in 24 hours; more get 452.",
    )
    bounce_retention_days: float = Field(
        30.0,
        description="Days raw bounce messages are kept; then they are deleted and only what "
        "they did (status, delivery, error) stays.",
    )
    # -- bounce mailboxes of custom SMTP senders (IMAP) --
    imap_poll_seconds: float = Field(
        300.0,
        gt=0,
        description="Seconds between scans of a custom SMTP sender's IMAP bounce mailbox when "
        "the server offers no IDLE (and the longest IDLE wait when it does).",
    )
    imap_timeout_seconds: float = Field(
        30.0, gt=0, description="Seconds to connect to an IMAP bounce mailbox or wait for a reply."
    )
    imap_max_message_bytes: int = Field(
        10 * 1024 * 1024,
        description="Messages in an IMAP bounce mailbox larger than this are not fetched.",
    )
    imap_bounce_window_days: float = Field(
        7.0,
        description="Days after a message was sent through a custom relay that its bounces are "
        "still looked for in the bounce mailbox.",
    )

    # -- abuse limits: logins and confirmation mails --
    login_max_failures: int = Field(
        5, description="Failed logins for one account before it is locked for a while."
    )
    login_max_failures_per_address: int = Field(
        20, description="Failed logins from one client address (IPv6: its /64) before it is locked."
    )
    login_lock_seconds: float = Field(
        30.0, description="First lock after too many failed logins; doubles with each further one."
    )
    login_lock_max_seconds: float = Field(3600.0, description="Longest lock after failed logins.")
    login_failure_window_seconds: float = Field(
        86400.0, description="Failed logins older than this (and no lock) are forgotten."
    )
    confirmations_per_user_hour: int = Field(
        5, description="Identity confirmation mails one user may have sent per hour."
    )
    confirmations_per_address_day: int = Field(
        3, description="Identity confirmation mails one address may receive per day."
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL, with drivers filled in for the plain forms users type."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'postway.db').resolve()}"
        if url.startswith("sqlite:"):
            return "sqlite+aiosqlite:" + url[len("sqlite:") :]
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url

    def resolved_secret_key(self) -> str:
        """The secret key; generated once into the data dir when none is set. The file is
        created 0600 (inside a 0700 folder when Postway makes it) and never exists with a
        wider mode, even for a moment."""
        if self.secret_key:
            return self.secret_key
        path = private_dir(self.data_dir) / "secret.key"
        if not path.exists():
            create_private_file(path, secrets.token_urlsafe(48).encode())
        self.secret_key = path.read_text().strip()
        return self.secret_key

    def resolved_base_url(self, port: int = 8025) -> str:
        return self.base_url or f"http://{self.hostname}:{port}"


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default in ("", None) else str(default)
        rows.append(f"| `POSTWAY_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows)
