"""A real IMAP server on loopback: Debian's Dovecot, run in the foreground with its own config.

Everything lives in one temporary folder (config, passwd-file, maildirs, runtime and state
directories); nothing under /etc or /var is read or written. Mail is put into a user's
mailbox by writing a file into the maildir's `new/`, as a local delivery agent would, so a
test can later compare the folder byte for byte and flag for flag.

    with DovecotPeer(users={"ada@acme.example": "secret"}, tls=tls_peer) as imap:
        imap.deliver("ada@acme.example", raw_bytes)
        ...  # connect to 127.0.0.1:imap.port (plain/STARTTLS) or imap.tls_port (implicit TLS)
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from peers.tls import TLSPeer

DOVECOT = "/usr/sbin/dovecot"


def dovecot_available() -> bool:
    return os.access(DOVECOT, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service_user() -> str:
    """An unprivileged account for Dovecot's own processes (login, auth): Debian's package
    creates `dovenull` and `dovecot`; `nobody` exists everywhere else."""
    for name in ("dovenull", "dovecot", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("no unprivileged user for Dovecot's login processes")


def _mail_owner() -> tuple[int, int]:
    """Who owns the mailboxes: the test's own user, or `nobody` when that is root (Dovecot
    refuses mail access as UID 0)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


class DovecotPeer:
    """Dovecot on 127.0.0.1: `port` speaks IMAP (STARTTLS offered when `tls` is given),
    `tls_port` implicit TLS. Mailbox files belong to the user mail processes run as (see
    `_mail_owner`); `deliver` writes them as that user would."""

    def __init__(self, users: dict[str, str], tls: TLSPeer | None = None) -> None:
        # Its own folder under the system temporary directory, which Dovecot's unprivileged
        # mail processes can traverse (pytest's tmp_path is private to the test's user).
        self.dir = Path(tempfile.mkdtemp(prefix="postway-dovecot-"))
        os.chmod(self.dir, 0o711)  # noqa: S103 - traversable, not readable
        self.users = users
        self.tls = tls
        self.port = _free_port()
        self.tls_port = _free_port() if tls else 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_file = self.dir / "dovecot.log"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> DovecotPeer:
        if not dovecot_available():
            raise RuntimeError(f"{DOVECOT} is missing: apt-get install -y dovecot-imapd")
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # Dovecot checks that its runtime folder is not writable by others.
        os.chmod(self.dir / "run", 0o755)  # noqa: S103 - what Dovecot expects
        uid, gid = _mail_owner()
        (self.dir / "passwd").write_text(
            "".join(
                f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{self.dir / 'mail' / user}::\n"
                for user, password in self.users.items()
            )
        )
        self._owner = (uid, gid)
        os.chown(self.dir / "mail", uid, gid)
        for user in self.users:
            for sub in ("", "new", "cur", "tmp"):
                (self.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
                os.chown(self.maildir(user) / sub, uid, gid)
        config = self.dir / "dovecot.conf"
        config.write_text(self._config(uid))
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "dovecot.stderr", "wb"),  # noqa: SIM115 - closed with the process
        )
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if self._proc is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DovecotPeer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        ports = [p for p in (self.port, self.tls_port) if p]
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.logs()}")
            ready = 0
            for port in ports:
                with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), 1
                ) as s:
                    s.settimeout(5)
                    if port == self.tls_port or s.recv(200).startswith(b"* OK"):
                        ready += 1
            if ready == len(ports):
                return
            time.sleep(0.1)
        raise RuntimeError(f"dovecot did not start listening: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def _config(self, uid: int) -> str:
        d = self.dir
        service_user = _service_user()
        lines = [
            f"base_dir = {d / 'run'}",
            f"state_dir = {d / 'state'}",
            f"log_path = {self.log_file}",
            "protocols = imap",
            "listen = 127.0.0.1",
            f"default_internal_user = {service_user}",
            f"default_login_user = {service_user}",
            f"default_internal_group = {grp.getgrgid(pwd.getpwnam(service_user).pw_gid).gr_name}",
            f"first_valid_uid = {min(uid, 500)}",
            "first_valid_gid = 0",
            "mail_privileged_group =",
            "auth_mechanisms = plain login",
            "disable_plaintext_auth = no",
            f"mail_location = maildir:{d / 'mail'}/%u",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {d / 'passwd'}",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {d / 'passwd'}",
            "}",
            "service imap-login {",
            "  chroot =",
            "  inet_listener imap {",
            "    address = 127.0.0.1",
            f"    port = {self.port}",
            "  }",
            "  inet_listener imaps {",
            "    address = 127.0.0.1",
            f"    port = {self.tls_port}",
            f"    ssl = {'yes' if self.tls else 'no'}",
            "  }",
            "}",
            # The passwd-file sits in the test's private temporary folder: auth runs as the
            # test's own user to read it (root in CI; Dovecot allows that for auth).
            "service auth {",
            f"  user = {pwd.getpwuid(uid).pw_name}",
            "}",
            "service auth-worker {",
            f"  user = {pwd.getpwuid(uid).pw_name}",
            "}",
            "service anvil {",
            "  chroot =",
            "}",
        ]
        if self.tls is not None:
            cert, key = d / "server.pem", d / "server.key"
            cert.write_bytes(b"".join(p.bytes() for p in self.tls.cert.cert_chain_pems))
            key.write_bytes(self.tls.cert.private_key_pem.bytes())
            os.chmod(key, 0o600)
            lines += ["ssl = yes", f"ssl_cert = <{cert}", f"ssl_key = <{key}"]
        else:
            lines.append("ssl = no")
        return "\n".join(lines) + "\n"

    # -- mailboxes ----------------------------------------------------------------------

    def maildir(self, user: str) -> Path:
        return self.dir / "mail" / user

    def deliver(self, user: str, raw: bytes) -> Path:
        """Put `raw` into the user's INBOX as a new message (written to tmp/, then renamed
        into new/, as maildir delivery is done). Line ends become LF, as stored on disk."""
        box = self.maildir(user)
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.postway-test"
        tmp = box / "tmp" / name
        tmp.write_bytes(raw.replace(b"\r\n", b"\n"))
        os.chown(tmp, *self._owner)
        target = box / "new" / name
        os.rename(tmp, target)
        return target

    def snapshot(self, user: str) -> dict[str, bytes]:
        """Every message file of the user's INBOX: `new/NAME` or `cur/NAME:2,FLAGS` -> bytes."""
        box = self.maildir(user)
        return {
            f"{sub}/{p.name}": p.read_bytes()
            for sub in ("new", "cur")
            for p in sorted((box / sub).iterdir())
        }
