"""A private Postfix submission server, and Postfix's smtp-sink.

Postfix: ``postfix -c <tmp>/conf start`` with its own main.cf and master.cf, queue
and data directories and log file under the work directory (the master runs as
root, the daemons as ``mail_owner``; nothing of /etc/postfix is used). Two smtpd
listeners on loopback: STARTTLS on ``port`` (AUTH only after it, as a submission
server does) and implicit TLS (``smtpd_tls_wrappermode``) on ``implicit_tls_port``.
SASL goes through a private Dovecot (``smtpd_sasl_type = dovecot``) whose
passwd-file holds the test users. Mail for example.test is delivered by virtual(8)
into maildirs; everything else (the DSN notices Postfix sends back to the outside
senders of the tests) is discarded.

smtp-sink: PIPELINING, no TLS, no AUTH (``-a``: it would accept any password); each
message dumped to its own file (``-d``) with the envelope in X- headers first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import trustme

from ._base import MailServer
from ._common import (
    Envelope,
    ObservedServer,
    Unavailable,
    child_process,
    chown_mail_user,
    exited,
    find_tool,
    free_port,
    mail_ids,
    maildir_files,
    needs_root,
    new_workdir,
    packages_missing,
    poll_store,
    port_open,
    read_files,
    strip_leading_headers,
    tail,
    to_wire,
    wait_for_pid_exit,
    wait_until,
    write_tls_files,
)
from ._dovecot import AUTH_MECHANISMS, DOMAIN, USERS, dovecot_unavailable, run_dovecot

#: Postfix's SIZE limit here (message_size_limit).
SIZE_LIMIT = 200_000
#: What Postfix prepends: smtpd's Received, virtual(8)'s Return-Path and
#: Delivered-To (and X-Original-To where it differs).
TRACE_HEADERS = (b"Return-Path", b"Delivered-To", b"X-Original-To", b"Received")
#: What smtp-sink writes before each dumped message.
SINK_HEADERS = (
    b"X-Client-Addr",
    b"X-Client-Proto",
    b"X-Helo-Args",
    b"X-Mail-Args",
    b"X-Rcpt-Args",
    b"Received",
)
_POSTCONF_DEFAULTS = (
    "command_directory",
    "daemon_directory",
    "shlib_directory",
    "meta_directory",
    "mail_owner",
    "setgid_group",
)


def postfix_unavailable() -> str | None:
    reason = packages_missing() or needs_root()
    if reason is not None:
        return reason
    try:
        for tool in ("postfix", "postconf", "/usr/lib/postfix/sbin/virtual"):
            find_tool(tool)
    except Unavailable as exc:
        return str(exc)
    return dovecot_unavailable()


def smtp_sink_unavailable() -> str | None:
    reason = packages_missing()
    if reason is not None:
        return reason
    try:
        find_tool("smtp-sink")
    except Unavailable as exc:
        return str(exc)
    return None


def _main_cf(base: Path, defaults: dict[str, str], dovecot_auth: str, tls_files: Path) -> str:
    uid, gid = mail_ids()
    return f"""\
# A private Postfix submission server for aiosmtp's interop tests.
compatibility_level = 3.6
config_directory = {base}/conf
queue_directory = {base}/queue
data_directory = {base}/data
command_directory = {defaults["command_directory"]}
daemon_directory = {defaults["daemon_directory"]}
shlib_directory = {defaults["shlib_directory"]}
meta_directory = {defaults["meta_directory"]}
mail_owner = {defaults["mail_owner"]}
setgid_group = {defaults["setgid_group"]}
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = postfix.test
mydomain = test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# Mail for {DOMAIN}: virtual(8) into maildirs owned by nobody.
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {base}/vmail
virtual_mailbox_maps = texthash:{base}/conf/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
# Anything else (DSN notices to the tests' outside senders) vanishes.
default_transport = discard
relay_transport = discard
local_transport = discard
# Headers stay as the client sent them: no rewriting, nothing added.
local_header_rewrite_clients =
# A submission server: STARTTLS, then AUTH through Dovecot.
smtpd_tls_security_level = may
smtpd_tls_chain_files = {tls_files}
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {dovecot_auth}
smtputf8_enable = yes
message_size_limit = {SIZE_LIMIT}
# Quick and quiet: no DNS, no pauses, no penalty for the failures tests provoke.
smtpd_peername_lookup = no
disable_dns_lookups = yes
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
biff = no
"""


def _master_cf(port: int, implicit_port: int) -> str:
    rows = [
        (f"127.0.0.1:{port}", "inet", "n", "-", "n", "-", "-", "smtpd"),
        (f"127.0.0.1:{implicit_port}", "inet", "n", "-", "n", "-", "-", "smtpd"),
        ("", "", "", "", "", "", "", "-o smtpd_tls_wrappermode=yes"),
        ("", "", "", "", "", "", "", "-o smtpd_tls_security_level=encrypt"),
        ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
        ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
        ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
        ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
        ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
        ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
        ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
        ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
        ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
        ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
        ("error", "unix", "-", "-", "n", "-", "-", "error"),
        ("retry", "unix", "-", "-", "n", "-", "-", "error"),
        ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
        ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
    ]
    lines = []
    for row in rows:
        if not row[0]:
            lines.append("  " + row[-1])
        else:
            lines.append(" ".join(f"{cell:<10}" for cell in row).rstrip())
    return "\n".join(lines) + "\n"


def _postconf_defaults() -> dict[str, str]:
    out = subprocess.run(
        [find_tool("postconf"), "-d", *_POSTCONF_DEFAULTS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)


@contextlib.contextmanager
def _postfix(base: Path, conf: Path, port: int, implicit_port: int) -> Iterator[None]:
    postfix = find_tool("postfix")
    log = base / "maillog"
    started = subprocess.run(
        [postfix, "-c", str(conf), "start"], capture_output=True, text=True, check=False
    )
    try:
        if started.returncode != 0:
            raise Unavailable(
                f"postfix start failed (status {started.returncode}): "
                f"{started.stderr.strip() or tail(log)}"
            )
        # The master detaches: wait for its listeners (a failure shows in the log).
        try:
            wait_until(lambda: port_open(port) and port_open(implicit_port), "postfix")
        except Unavailable as exc:
            raise Unavailable(f"{exc}; its log: {tail(log)}") from None
        yield
    finally:
        subprocess.run(
            [postfix, "-c", str(conf), "stop"], capture_output=True, check=False, timeout=60
        )
        wait_for_pid_exit(base / "queue" / "pid" / "master.pid")


@contextlib.contextmanager
def run_postfix(
    workdir: Path, ca: trustme.CA, *, auth_mechanisms: str = AUTH_MECHANISMS
) -> Iterator[MailServer]:
    """``auth_mechanisms``: Dovecot's SASL mechanisms, which Postfix offers."""
    reason = postfix_unavailable()
    if reason is not None:
        raise Unavailable(reason)
    with run_dovecot(workdir, ca, auth_mechanisms=auth_mechanisms) as dovecot:
        base = new_workdir(workdir, "postfix")
        defaults = _postconf_defaults()
        for name in ("conf", "queue", "data"):
            (base / name).mkdir()
        shutil.chown(base / "data", user=defaults["mail_owner"])
        vmail = new_workdir(base, "vmail")
        chown_mail_user(vmail)
        tls = write_tls_files(ca, base / "tls")
        mailboxes = [*USERS, "carol"]
        (base / "conf" / "vmailbox").write_text(
            "".join(f"{name}@{DOMAIN} {name}/\n" for name in mailboxes)
        )
        port, implicit_port = free_port(), free_port()
        (base / "conf" / "main.cf").write_text(
            _main_cf(base, defaults, dovecot.auth_socket, tls.combined)
        )
        (base / "conf" / "master.cf").write_text(_master_cf(port, implicit_port))

        def stored_messages(count: int, timeout: float) -> list[bytes]:
            def read() -> list[bytes]:
                return [
                    strip_leading_headers(to_wire(raw), TRACE_HEADERS)
                    for raw in read_files(maildir_files(vmail))
                ]

            return poll_store(read, count, timeout)

        with _postfix(base, base / "conf", port, implicit_port):
            yield ObservedServer(
                name="postfix",
                host="127.0.0.1",
                port=port,
                implicit_tls_port=implicit_port,
                features=frozenset(
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
                ),
                users=dict(USERS),
                size_limit=SIZE_LIMIT,
                recipients=(f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"),
                refused_recipient=f"nobody@{DOMAIN}",
                stored_messages=stored_messages,
                copy_per_recipient=True,
                utf8_recipient=f"jörg@{DOMAIN}",
                notices_to=f"carol@{DOMAIN}",
            )


# -- smtp-sink ------------------------------------------------------------------------


def _sink_envelope(raw: bytes) -> Envelope:
    """The envelope from smtp-sink's X-Mail-Args and X-Rcpt-Args lines
    (``<address> OPTION ...``)."""
    sender = ""
    recipients: list[str] = []
    mail_options: list[str] = []
    rcpt_options: list[str] = []
    for line in raw.split(b"\n"):
        if not line.startswith(b"X-"):
            break
        name, _, value = line.decode("utf-8", "replace").partition(": ")
        address, *options = value.split() or [""]
        if name == "X-Mail-Args":
            sender = address.strip("<>")
            mail_options = options
        elif name == "X-Rcpt-Args":
            recipients.append(address.strip("<>"))
            rcpt_options.extend(options)
    return Envelope(sender, tuple(recipients), tuple(mail_options), tuple(rcpt_options))


def _sink_message(raw: bytes) -> bytes:
    # The dump ends each message with an empty line of its own.
    body = strip_leading_headers(raw, SINK_HEADERS)
    body = body.removesuffix(b"\n")
    return to_wire(body)


@contextlib.contextmanager
def run_smtp_sink(workdir: Path, ca: trustme.CA) -> Iterator[MailServer]:
    reason = smtp_sink_unavailable()
    if reason is not None:
        raise Unavailable(reason)
    base = new_workdir(workdir, "smtp-sink")
    dumps = new_workdir(base, "dumps")
    chown_mail_user(dumps)
    port = free_port()
    command = [find_tool("smtp-sink"), "-a", "-h", "smtp-sink.test", "-d", f"{dumps}/msg."]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # it refuses to run as root
    command += [f"127.0.0.1:{port}", "256"]
    log = base / "smtp-sink.log"

    def dump_files() -> list[bytes]:
        return read_files(path for path in dumps.iterdir() if path.is_file())

    def stored_messages(count: int, timeout: float) -> list[bytes]:
        return [_sink_message(raw) for raw in poll_store(dump_files, count, timeout)]

    def envelopes() -> list[Envelope]:
        return [_sink_envelope(raw) for raw in dump_files()]

    with child_process(command, "smtp-sink", log) as proc:
        wait_until(lambda: port_open(port), "smtp-sink did not start", alive=exited(proc, log))
        yield ObservedServer(
            name="smtp-sink",
            host="127.0.0.1",
            port=port,
            # Measured: EHLO offers PIPELINING, 8BITMIME, XCLIENT, XFORWARD,
            # ENHANCEDSTATUSCODES and DSN (no SMTPUTF8, SIZE or CHUNKING); VRFY is
            # answered 250; every recipient is accepted.
            features=frozenset({"8bitmime", "dsn", "pipelining", "vrfy", "stores"}),
            recipients=("alice@example.test", "bob@example.test"),
            stored_messages=stored_messages,
            envelopes=envelopes,
        )
