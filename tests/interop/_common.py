"""Shared plumbing of the interop servers: ports, processes, certificates, stores.

Every server of the matrix runs as a child process (or thread) on 127.0.0.1 with a
configuration written under its own work directory. What it stored is read back
in *wire form*: CRLF line endings (maildirs and dump files keep bare LF), with the
trace headers the server prepended removed, so that a test can compare it byte for
byte with what the client sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from ._base import MailServer

#: What to run when a server package is missing.
INSTALL_HINT = "run scripts/install-interop-packages"

#: The mailbox owner of every maildir the servers write (never root: Postfix's
#: virtual(8) and Dovecot both refuse to deliver as root).
MAIL_USER = "nobody"


class Unavailable(Exception):
    """The server cannot run on this machine; the message is the skip reason."""


@dataclass(frozen=True)
class Envelope:
    """An envelope as the server recorded it (where it records one); the options
    of every RCPT in one tuple."""

    sender: str
    recipients: tuple[str, ...]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]


@dataclass
class ObservedServer(MailServer):
    """A MailServer that says a little more than ``_base.MailServer`` can: the
    envelopes it received, where it records them (smtp-sink's dump files,
    aiosmtpd's handler: what a DSN test needs to see its options arrive), and
    whether it stores one copy per recipient (maildirs) or one per transaction,
    a non-ASCII mailbox, and where its DSN notices can be read."""

    envelopes: Callable[[], list[Envelope]] | None = None
    copy_per_recipient: bool = False
    #: A recipient with a non-ASCII local part that the server delivers.
    utf8_recipient: str | None = None
    #: A mailbox of the server's own where its delivery notices (DSN) to a sender
    #: of that address arrive, if it sends any.
    notices_to: str | None = None


#: What scripts/install-interop-packages installs, and a file each package brings.
PACKAGE_FILES = {
    "postfix": "/usr/sbin/postfix",
    "dovecot-core": "/usr/sbin/dovecot",
    "dovecot-lmtpd": "/usr/lib/dovecot/lmtp",
}


def packages_missing() -> str | None:
    """One reason for every server that needs the Debian packages, so that a machine
    without them shows a single skip line, naming all that is missing."""
    missing = [name for name, path in PACKAGE_FILES.items() if not os.path.exists(path)]
    if missing:
        return f"{', '.join(missing)} not installed: {INSTALL_HINT}"
    return None


def needs_root() -> str | None:
    if os.geteuid() != 0:
        return "private Postfix and Dovecot instances need root (their masters run as root)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_tool(path: str) -> str:
    """The absolute path of an installed program, or Unavailable."""
    found = path if os.path.isabs(path) else shutil.which(path, path="/usr/sbin:/usr/bin")
    if found is None or not os.access(found, os.X_OK):
        raise Unavailable(f"{os.path.basename(path)} not installed: {INSTALL_HINT}")
    return found


def wait_until(
    ready: Callable[[], bool],
    what: str,
    *,
    timeout: float = 15.0,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``ready`` until it holds; ``alive`` returns why the server died, if it did."""
    deadline = time.monotonic() + timeout
    while not ready():
        failure = alive()
        if failure is not None:
            raise Unavailable(f"{what}: {failure}")
        if time.monotonic() > deadline:
            raise Unavailable(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.02)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def unix_socket_open(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
        return True


def new_workdir(parent: Path, name: str) -> Path:
    """A directory every server user may walk through (the servers drop root);
    ``parent`` must be walkable too (see conftest's ``interop_root``)."""
    path = parent / name
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


def chown_mail_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=MAIL_USER, group=mail_group())


def mail_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def mail_group() -> int:
    return mail_ids()[1]


@dataclass(frozen=True)
class TLSFiles:
    cert_chain: Path
    key: Path
    combined: Path  # key then chain, one file


def write_tls_files(ca: trustme.CA, directory: Path, *names: str) -> TLSFiles:
    """A server certificate from the test CA for ``names`` (default localhost and
    127.0.0.1), in the PEM files MTAs read."""
    cert = ca.issue_cert(*(names or ("localhost", "127.0.0.1")))
    directory.mkdir(parents=True, exist_ok=True)
    chain = b"".join(pem.bytes() for pem in cert.cert_chain_pems)
    key = cert.private_key_pem.bytes()
    files = TLSFiles(directory / "cert.pem", directory / "key.pem", directory / "combined.pem")
    files.cert_chain.write_bytes(chain)
    files.key.write_bytes(key)
    files.combined.write_bytes(key + chain)
    for path in (files.key, files.combined):
        path.chmod(0o600)
    return files


@contextlib.contextmanager
def child_process(
    command: list[str], what: str, log: Path, *, stop_signal: int = signal.SIGTERM
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` with its output in ``log``; stop it (then kill it) at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop_process(proc, stop_signal)


def stop_process(proc: subprocess.Popen[bytes], stop_signal: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(stop_signal)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exited(proc: subprocess.Popen[bytes], log: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        if proc.poll() is None:
            return None
        return f"exited with status {proc.returncode}: {tail(log)}"

    return check


def tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " / ".join(text[-lines:]) or "(empty log)"


def wait_for_pid_exit(pid_file: Path, timeout: float = 15.0) -> None:
    """Wait for the daemon whose pid ``pid_file`` holds to go; kill it if it stays."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


# -- what the servers stored ---------------------------------------------------------

_HEADER_NAME = re.compile(rb"^([!-9;-~]+):")


def to_wire(stored: bytes) -> bytes:
    """A stored message (bare LF line endings) in the CRLF form it had on the wire."""
    if b"\r\n" in stored:
        return stored
    return stored.replace(b"\n", b"\r\n")


def strip_leading_headers(message: bytes, names: Iterable[bytes]) -> bytes:
    """Remove the header fields named ``names`` (with their continuation lines)
    from the top of ``message``, up to the first field not among them: those are
    the ones the server prepended; the sender's own headers stay untouched."""
    wanted = {name.lower() for name in names}
    position = 0
    dropping = False
    while position < len(message):
        end = message.find(b"\n", position)
        end = len(message) if end < 0 else end + 1
        line = message[position:end]
        if line[:1] in (b" ", b"\t") and dropping:
            position = end
            continue
        match = _HEADER_NAME.match(line)
        if match is None or match.group(1).lower() not in wanted:
            break
        dropping = True
        position = end
    return message[position:]


def read_files(paths: Iterable[Path]) -> list[bytes]:
    """The contents of ``paths`` in delivery order (modification time, then name)."""
    found = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            found.append((path.stat().st_mtime_ns, path.name, path.read_bytes()))
    found.sort()
    return [content for _, _, content in found]


def maildir_files(root: Path) -> list[Path]:
    """Every message file of every maildir under ``root`` (new/ and cur/)."""
    return [
        path
        for pattern in ("**/new/*", "**/cur/*")
        for path in root.glob(pattern)
        if path.is_file()
    ]


def poll_store(read: Callable[[], list[bytes]], count: int, timeout: float) -> list[bytes]:
    """``read()`` once it returns at least ``count`` messages, or when time is up
    (the caller then sees too few)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = read()
        if len(messages) >= count or time.monotonic() >= deadline:
            return messages
        time.sleep(0.02)
