"""Exim 4 for the interop matrix, run from a binary unpacked by ``scripts/install-exim``.

Theory of operation. Debian's Exim packages conflict with Postfix, which the rest of
the matrix needs, so the binary comes out of ``exim4-daemon-light`` with ``dpkg -x``
(see ``docs/interop-exim.md``). ``run_exim`` writes a private configuration and starts
that binary in the foreground (``-bdf``) with ``-C``:

- Exim gives up root for any ``-C`` file that is not in the compiled-in trusted list
  (``/etc/exim4/trusted_configs``, which we leave alone): the daemon, its receiving
  processes and its deliveries all run as the compiled-in user ``Debian-exim``. That
  is all a test server needs, but everything Exim touches (spool, log, maildir, TLS
  key) must belong to that user, and pytest's ``tmp_path`` sits below a directory
  only root may enter. So the server's state lives in its own directory under the
  system temporary directory, linked from ``workdir`` while it runs; its logs are
  copied into ``workdir`` at the end.
- Exim re-executes itself (``exim_path``) for deliveries; ``keep_environment`` lets
  ``LD_LIBRARY_PATH`` through so the re-executed binary finds the unpacked libidn.
- Every recipient of a message is delivered in one batch into one maildir, with
  Return-path, Envelope-to and Delivery-date prepended and one Received field;
  ``stored_messages`` strips exactly those and returns CRLF lines (maildir keeps LF),
  i.e. the message as the client sent it, minus dot-stuffing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trustme

from ._base import MailServer

EXIM_DIR = Path(os.environ.get("AIOSMTP_EXIM_DIR", "/opt/aiosmtp-exim"))
EXIM_BINARY = EXIM_DIR / "usr" / "sbin" / "exim4"
# The user compiled into Debian's build (EXIM_USER); Exim will not start without it.
EXIM_USER = "Debian-exim"

DOMAIN = "localhost"
USERS = {"alice": "wonderland-42", "bob": "builder 7"}
RECIPIENTS = (f"alice@{DOMAIN}", f"bob@{DOMAIN}")
# A third mailbox with a non-ASCII local part, for SMTPUTF8 (RFC 6531) deliveries.
UTF8_RECIPIENT = f"jörg@{DOMAIN}"
REFUSED_RECIPIENT = f"nobody@{DOMAIN}"
SIZE_LIMIT = 64 * 1024
FEATURES = frozenset(
    {
        "starttls",
        "implicit_tls",
        "auth_plain",
        "auth_login",
        "auth_cram_md5",
        "smtputf8",
        "8bitmime",
        "size",
        "dsn",
        "pipelining",
        "chunking",
        "vrfy",
        "stores",
    }
)
# What Exim prepends at delivery: the appendfile transport's return_path_add,
# envelope_to_add and delivery_date_add, then its own Received field.
_DELIVERY_FIELDS = (b"return-path", b"envelope-to", b"delivery-date")

# @NAME@ placeholders, because Exim's own syntax is full of $ and braces.
_CONFIG = """\
# Written by tests/interop/_exim.py for one test run.
exim_path = @BINARY@
keep_environment = LD_LIBRARY_PATH
spool_directory = @STATE@/spool
log_file_path = @STATE@/log/%slog
pid_file_path = @STATE@/exim.pid
primary_hostname = localhost
qualify_domain = @DOMAIN@
domainlist local_domains = @DOMAIN@

local_interfaces = <; 127.0.0.1
daemon_smtp_ports = @PORT@ : @TLS_PORT@
tls_on_connect_ports = @TLS_PORT@
tls_advertise_hosts = *
tls_certificate = @STATE@/cert.pem
tls_privatekey = @STATE@/key.pem

# No DNS or ident lookups of the loopback client.
host_lookup =
rfc1413_hosts =
auth_advertise_hosts = *
smtputf8_advertise_hosts = *
chunking_advertise_hosts = *
pipelining_advertise_hosts = *
dsn_advertise_hosts = *
message_size_limit = @SIZE_LIMIT@
# Deliver every message at once, however many a connection sends (default: queue
# them after the tenth).
smtp_accept_queue_per_connection = 0
# Tests open connections in quick succession from one host.
smtp_accept_max_per_host =
smtp_accept_max = 100

# L on reception lines when the client pipelined (RFC 2920), K when it used BDAT.
log_selector = +pipelining +received_recipients
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_vrfy = accept

begin acl

acl_check_rcpt:
  deny    message = 5.7.1 Relaying denied
          !domains = +local_domains
  deny    message = 5.1.1 No such mailbox here
          !verify = recipient
  accept

begin routers

mailboxes:
  driver = accept
  domains = +local_domains
  local_parts = @LOCAL_PARTS@
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = @STATE@/maildir
  maildir_format
  create_directory
  # One delivery (one stored copy) per message, whatever the number of recipients.
  batch_max = 100
  return_path_add
  envelope_to_add
  delivery_date_add

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if eq{$auth3}{${lookup{$auth2}lsearch{@STATE@/passwd}}}}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = ${if eq{$auth2}{${lookup{$auth1}lsearch{@STATE@/passwd}}}}
  server_set_id = $auth1

cram_md5:
  driver = cram_md5
  public_name = CRAM-MD5
  server_secret = ${lookup{$auth1}lsearch{@STATE@/passwd}{$value}fail}
  server_set_id = $auth1
"""


def _library_path() -> str:
    """The unpacked libraries the binary may need (libidn12 on Debian 12)."""
    dirs = [*EXIM_DIR.glob("usr/lib/*-linux-gnu"), *EXIM_DIR.glob("lib/*-linux-gnu")]
    return os.pathsep.join(str(d) for d in dirs if d.is_dir())


def _environment() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_LIBRARY_PATH": _library_path()}


@functools.cache
def exim_unavailable() -> str | None:
    """Why Exim cannot run here, in one line, or None when it can."""
    if not EXIM_BINARY.is_file():
        return f"exim not unpacked in {EXIM_DIR}: run scripts/install-exim (as root)"
    if os.geteuid() != 0:
        return "exim is started as root (it drops to Debian-exim itself): run as root"
    try:
        pwd.getpwnam(EXIM_USER)
    except KeyError:
        return f"user {EXIM_USER} missing: run scripts/install-exim (as root)"
    try:
        result = subprocess.run(
            [str(EXIM_BINARY), "-C", os.devnull, "-bV"],
            capture_output=True,
            env=_environment(),
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{EXIM_BINARY} -bV failed: {exc}"
    if b"Exim version" not in result.stdout:
        lines = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        return f"{EXIM_BINARY} -bV failed: {lines[-1] if lines else result.returncode}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _strip_trace(raw: bytes) -> bytes:
    """The stored message minus what Exim prepended, with CRLF line endings."""
    lines = raw.split(b"\n")
    index = 0
    received_seen = False
    while index < len(lines):
        name = lines[index].split(b":", 1)[0].strip().lower()
        if name in _DELIVERY_FIELDS:
            pass
        elif name == b"received" and not received_seen:
            received_seen = True
        else:
            break
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1  # a folded continuation of the same field
    return re.sub(rb"(?<!\r)\n", b"\r\n", b"\n".join(lines[index:]))


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The message id in Exim's Received field: base-62 time, process id, and fraction of
# a second (4.96: 1xVRGC-0000qI-1e).
_MESSAGE_ID = re.compile(rb"\bid ([0-9A-Za-z]+)-[0-9A-Za-z]+-([0-9A-Za-z]+)")


def _base62(digits: bytes) -> int:
    value = 0
    for digit in digits.decode():
        value = value * 62 + _BASE62.index(digit)
    return value


def _reception_order(path: Path) -> tuple[int, int, int, str]:
    """Messages in the order Exim received them (its ids are unique and ordered in time
    on one host), not in the order the parallel deliveries finished."""
    match = _MESSAGE_ID.search(path.read_bytes()[:4096])
    if match is None:
        return (1 << 62, 0, path.stat().st_mtime_ns, path.name)
    return (_base62(match[1]), _base62(match[2]), 0, path.name)


def delivered_files(maildir: Path) -> list[Path]:
    """Every delivered message file, in the order Exim received the messages."""
    files = [p for sub in ("new", "cur") for p in (maildir / sub).glob("*") if p.is_file()]
    return sorted(files, key=_reception_order)


def _stored_messages(maildir: Path, count: int, timeout: float) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while len(delivered_files(maildir)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [_strip_trace(p.read_bytes()) for p in delivered_files(maildir)]


def _wait_until_listening(process: subprocess.Popen[bytes], ports: list[int], logs: Path) -> None:
    """Wait for the daemon's "listening for SMTP on ..." line, which it logs once both
    sockets listen. (Probing the ports instead would make Exim log a TLS error for the
    probe that hangs up on the implicit-TLS port.)"""
    deadline = time.monotonic() + 20
    mainlog = logs / "mainlog"
    expected = [f"[127.0.0.1]:{port}" for port in ports]
    while True:
        text = mainlog.read_text(errors="replace") if mainlog.exists() else ""
        started = [line for line in text.splitlines() if "daemon started" in line]
        if started and all(address in started[-1] for address in expected):
            return
        if process.poll() is not None:
            raise RuntimeError(f"exim exited with {process.returncode}:\n{_read_logs(logs)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"exim is not listening on {ports}:\n{_read_logs(logs)}")
        time.sleep(0.02)


def _read_logs(logs: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(logs.glob("*"))
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's process group (it runs in a session of its own, with the
    processes it forks for connections and deliveries), then SIGKILL what is left."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 2
    while _group_members(group) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _group_members(group):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 5 of /proc/PID/stat is the process group; the command name before
            # it is in parentheses and may hold spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def run_exim(workdir: Path, ca: trustme.CA) -> Iterator[MailServer]:
    """Start a private Exim on two free loopback ports (plain + STARTTLS, implicit
    TLS) and yield it as a MailServer; stop it and remove its state afterwards."""
    reason = exim_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    user = pwd.getpwnam(EXIM_USER)
    state = Path(tempfile.mkdtemp(prefix="aiosmtp-exim-"))
    try:
        for sub in ("spool", "log", "maildir"):
            (state / sub).mkdir()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(state / "key.pem"))
        (state / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        (state / "passwd").write_text(
            "".join(f"{name}: {password}\n" for name, password in USERS.items())
        )
        for path in [state, *state.iterdir()]:
            os.chown(path, user.pw_uid, user.pw_gid)
        state.chmod(0o750)

        port, tls_port = _free_port(), _free_port()
        local_parts = " : ".join(
            address.rsplit("@", 1)[0] for address in (*RECIPIENTS, UTF8_RECIPIENT)
        )
        config = state / "exim.conf"
        text = _CONFIG
        for name, value in {
            "BINARY": str(EXIM_BINARY),
            "STATE": str(state),
            "DOMAIN": DOMAIN,
            "PORT": str(port),
            "TLS_PORT": str(tls_port),
            "SIZE_LIMIT": str(SIZE_LIMIT),
            "LOCAL_PARTS": local_parts,
        }.items():
            text = text.replace(f"@{name}@", value)
        # Owned by root and writable by nobody else, as Exim insists.
        config.write_text(text, encoding="utf-8")
        config.chmod(0o644)

        with (state / "log" / "stderr").open("wb") as stderr:
            process = subprocess.Popen(
                [str(EXIM_BINARY), "-C", str(config), "-bdf"],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=_environment(),
                start_new_session=True,
            )
        link = workdir / "exim"
        try:
            link.symlink_to(state)
            _wait_until_listening(process, [port, tls_port], state / "log")
            maildir = state / "maildir"
            yield MailServer(
                name="exim",
                host="127.0.0.1",
                port=port,
                tls_hostname="localhost",
                implicit_tls_port=tls_port,
                features=FEATURES,
                users=dict(USERS),
                size_limit=SIZE_LIMIT,
                recipients=RECIPIENTS,
                refused_recipient=REFUSED_RECIPIENT,
                stored_messages=functools.partial(_stored_messages, maildir),
            )
        finally:
            _stop(process)
            link.unlink(missing_ok=True)
            shutil.copytree(state / "log", workdir / "exim-log", dirs_exist_ok=True)
            # The maildir too, so a failing comparison can be looked at afterwards.
            shutil.copytree(state / "maildir", workdir / "exim-maildir", dirs_exist_ok=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
