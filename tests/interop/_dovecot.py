"""A private Dovecot: LMTP (Unix socket and TCP, STARTTLS, quota) and SASL for Postfix.

``dovecot -F -c <tmp>/dovecot.conf`` with its own base_dir (sockets), state_dir,
log file, a passwd-file of test users (mail owned by ``nobody``), maildirs under
the work directory and the quota plugin: the user ``full`` has a quota of 1 KiB,
so a larger message is accepted at RCPT and refused after the data, which is what
makes LMTP's per-recipient replies differ. A user that does not exist is refused
at RCPT. The same instance offers an auth socket for Postfix's
``smtpd_sasl_type = dovecot``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from ._base import MailServer
from ._common import (
    INSTALL_HINT,
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
    to_wire,
    unix_socket_open,
    wait_until,
    write_tls_files,
)

DOVECOT = "/usr/sbin/dovecot"
LMTP_DAEMON = "/usr/lib/dovecot/lmtp"
QUOTA_PLUGIN = "/usr/lib/dovecot/modules/lib10_quota_plugin.so"

DOMAIN = "example.test"
#: Test users and their passwords; also Postfix's SASL users.
USERS = {"alice": "correct horse", "bob": "hunter2", "jörg": "pässwörd"}
#: A mailbox with a 1 KiB quota: refuses every larger message after the data.
FULL_USER = "full"
#: The smallest message the quota refuses.
FULL_QUOTA_BYTES = 1024

#: The SASL mechanisms offered unless run_dovecot() is told otherwise.
AUTH_MECHANISMS = "plain login cram-md5"
#: With SCRAM too (Dovecot 2.3 computes its keys from the {PLAIN} passwords; it
#: has no -PLUS variants).
SCRAM_AUTH_MECHANISMS = AUTH_MECHANISMS + " scram-sha-1 scram-sha-256"

#: What Dovecot's LMTP prepends to a delivered message.
TRACE_HEADERS = (b"Return-Path", b"Received", b"Delivered-To", b"X-Original-To")


def dovecot_unavailable() -> str | None:
    reason = packages_missing() or needs_root()
    if reason is not None:
        return reason
    try:
        for tool in (DOVECOT, LMTP_DAEMON):
            find_tool(tool)
    except Unavailable as exc:
        return str(exc)
    if not os.path.exists(QUOTA_PLUGIN):
        return f"dovecot's quota plugin not installed: {INSTALL_HINT}"
    return None


@dataclass
class Dovecot:
    lmtp_port: int
    lmtp_socket: str
    auth_socket: str
    mail_root: Path

    def stored_messages(self, count: int, timeout: float) -> list[bytes]:
        def read() -> list[bytes]:
            return [
                strip_leading_headers(to_wire(raw), TRACE_HEADERS)
                for raw in read_files(maildir_files(self.mail_root))
            ]

        return poll_store(read, count, timeout)


def _config(
    base: Path,
    lmtp_port: int,
    tls_cert: Path,
    tls_key: Path,
    users: Path,
    auth_mechanisms: str = AUTH_MECHANISMS,
) -> str:
    return f"""\
# A private Dovecot for aiosmtp's interop tests.
base_dir = {base}/run
state_dir = {base}/state
instance_name = aiosmtp-{base.name}
log_path = {base}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{tls_cert}
ssl_key = <{tls_key}
# Test users, loopback only: plaintext mechanisms everywhere, no failure delay.
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
auth_failure_delay = 0
# Any character in a user name (the tests have a non-ASCII one, sent as UTF-8).
auth_username_chars =
auth_username_format = %Ln
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
# No growing penalty after failed logins (the anvil socket absent turns it off):
# the tests fail on purpose, all from 127.0.0.1.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
"""


@contextlib.contextmanager
def run_dovecot(
    workdir: Path, ca: trustme.CA, *, auth_mechanisms: str = AUTH_MECHANISMS
) -> Iterator[Dovecot]:
    """Start a private Dovecot under ``workdir``; stop it at the end."""
    reason = dovecot_unavailable()
    if reason is not None:
        raise Unavailable(reason)
    base = new_workdir(workdir, "dovecot")
    (base / "state").mkdir()
    mail_root = new_workdir(base, "mail")
    tls = write_tls_files(ca, base / "tls")
    uid, gid = mail_ids()
    users = base / "users"
    lines = [
        f"{name}:{{PLAIN}}{password}:{uid}:{gid}::{mail_root}/{name}::"
        for name, password in USERS.items()
    ]
    lines.append(
        f"{FULL_USER}:{{PLAIN}}{FULL_USER}:{uid}:{gid}::{mail_root}/{FULL_USER}::"
        f"userdb_quota_rule=*:storage={FULL_QUOTA_BYTES}B"
    )
    users.write_text("".join(line + "\n" for line in lines))
    for name in (*USERS, FULL_USER):
        home = mail_root / name
        home.mkdir()
        chown_mail_user(home)
    lmtp_port = free_port()
    config = base / "dovecot.conf"
    config.write_text(_config(base, lmtp_port, tls.cert_chain, tls.key, users, auth_mechanisms))
    log = base / "dovecot.log"
    instance = Dovecot(
        lmtp_port, str(base / "run" / "lmtp"), str(base / "run" / "auth-client"), mail_root
    )
    with child_process([DOVECOT, "-F", "-c", str(config)], "dovecot", log) as proc:
        wait_until(
            lambda: (
                port_open(lmtp_port)
                and unix_socket_open(instance.lmtp_socket)
                and unix_socket_open(instance.auth_socket)
            ),
            "dovecot did not start",
            alive=exited(proc, log),
        )
        yield instance


def _lmtp_server(instance: Dovecot, name: str, *, unix: bool) -> MailServer:
    return ObservedServer(
        name=name,
        host="127.0.0.1",
        port=instance.lmtp_port,
        unix_path=instance.lmtp_socket if unix else None,
        # Measured: LHLO offers 8BITMIME, CHUNKING, ENHANCEDSTATUSCODES, PIPELINING
        # and STARTTLS; no SIZE, DSN, SMTPUTF8 or AUTH (an LMTP server trusts its
        # MTA). VRFY refuses an address with "@" (501 5.5.4 Invalid string
        # parameter): it wants an RFC 5321 String, which smtplib does not quote.
        features=frozenset({"lmtp", "starttls", "8bitmime", "pipelining", "chunking", "stores"}),
        recipients=(f"alice@{DOMAIN}", f"bob@{DOMAIN}"),
        refused_recipient=f"nobody@{DOMAIN}",
        refused_after_data=f"{FULL_USER}@{DOMAIN}",
        stored_messages=instance.stored_messages,
        copy_per_recipient=True,
    )


@contextlib.contextmanager
def run_dovecot_lmtp(workdir: Path, ca: trustme.CA) -> Iterator[MailServer]:
    """Dovecot LMTP over TCP."""
    with run_dovecot(workdir, ca) as instance:
        yield _lmtp_server(instance, "dovecot-lmtp", unix=False)


@contextlib.contextmanager
def run_dovecot_lmtp_unix(workdir: Path, ca: trustme.CA) -> Iterator[MailServer]:
    """Dovecot LMTP over its Unix socket (``unix_path``)."""
    with run_dovecot(workdir, ca) as instance:
        yield _lmtp_server(instance, "dovecot-lmtp-unix", unix=True)
