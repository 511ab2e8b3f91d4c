"""What every real server of the interop matrix looks like to the scenarios.

Each server fixture (Postfix, Exim, Dovecot LMTP, smtp-sink, aiosmtpd) starts its
server on loopback with its own temporary configuration and yields one
``MailServer``; the scenarios read ``features`` to know which of them apply and
``stored_messages()`` to check what the server really kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# The names used in ``MailServer.features``.
FEATURES = frozenset(
    {
        "starttls",  # STARTTLS on ``port``
        "implicit_tls",  # TLS from the first byte on ``implicit_tls_port``
        "auth_plain",
        "auth_login",
        "auth_cram_md5",
        "smtputf8",
        "8bitmime",
        "size",  # a SIZE limit of ``size_limit`` bytes, enforced
        "dsn",
        "pipelining",
        "chunking",
        "vrfy",  # VRFY answered (any 2xx/252)
        "lmtp",  # speaks LMTP, not SMTP
        "stores",  # stored_messages() returns what was delivered
    }
)


@dataclass
class MailServer:
    name: str
    host: str
    port: int
    # The name in the server's trustme certificate.
    tls_hostname: str = "localhost"
    implicit_tls_port: int | None = None
    # A Unix socket path, for LMTP servers that listen on one.
    unix_path: str | None = None
    features: frozenset[str] = frozenset()
    users: dict[str, str] = field(default_factory=dict)
    size_limit: int | None = None
    # Recipients the server accepts and delivers (at least two).
    recipients: tuple[str, ...] = ()
    # A recipient refused at RCPT (unknown mailbox), if the server has one.
    refused_recipient: str | None = None
    # A recipient accepted at RCPT but refused after the data (LMTP over quota).
    refused_after_data: str | None = None
    # Every message delivered so far, as the server stored it (trace headers
    # Received, Return-Path, Delivered-To, X-Original-To and the like stripped),
    # waiting up to ``timeout`` seconds for ``count`` of them.
    stored_messages: Callable[[int, float], list[bytes]] | None = None
