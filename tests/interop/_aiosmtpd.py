"""aiosmtpd in the matrix: STARTTLS, implicit TLS, AUTH (PLAIN, LOGIN, CRAM-MD5),
SMTPUTF8 and a SIZE limit, one recorded message store (tests/servers.py)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trustme

from ..servers import USERS, CramMD5Handler, aiosmtpd_server
from ._base import MailServer
from ._common import Envelope, ObservedServer, poll_store

DOMAIN = "example.test"
SIZE_LIMIT = 200_000


def aiosmtpd_unavailable() -> str | None:
    return None  # a test dependency: always there


@contextlib.contextmanager
def run_aiosmtpd(workdir: Path, ca: trustme.CA) -> Iterator[MailServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    handler = CramMD5Handler(refuse_rcpt={f"nobody@{DOMAIN}"})
    options: dict[str, Any] = {"data_size_limit": SIZE_LIMIT, "enable_SMTPUTF8": True}
    with (
        aiosmtpd_server(handler=handler, starttls_context=context, auth=True, **options) as plain,
        aiosmtpd_server(
            handler=handler, implicit_tls_context=context, auth=True, **options
        ) as implicit,
    ):

        def stored_messages(count: int, timeout: float) -> list[bytes]:
            return poll_store(
                lambda: [message.content for message in handler.messages], count, timeout
            )

        def envelopes() -> list[Envelope]:
            return [
                Envelope(
                    message.mail_from,
                    tuple(message.rcpt_tos),
                    tuple(message.mail_options),
                    tuple(message.rcpt_options),
                )
                for message in handler.messages
            ]

        yield ObservedServer(
            name="aiosmtpd",
            host=plain.host,
            port=plain.port,
            implicit_tls_port=implicit.port,
            # Measured: EHLO offers SIZE, 8BITMIME, SMTPUTF8, STARTTLS, HELP and
            # (tests/servers.py) PIPELINING; AUTH PLAIN LOGIN CRAM-MD5; no DSN,
            # no CHUNKING. VRFY is answered 252.
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
                    "pipelining",
                    "vrfy",
                    "stores",
                }
            ),
            users=dict(USERS),
            size_limit=SIZE_LIMIT,
            recipients=(f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"),
            refused_recipient=f"nobody@{DOMAIN}",
            stored_messages=stored_messages,
            envelopes=envelopes,
            utf8_recipient=f"jörg@{DOMAIN}",
        )
