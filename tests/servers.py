"""aiosmtpd servers for the end-to-end tests, each on its own loopback port."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

USERS = {"alice": "correct horse", "bob": "hunter2", "jörg": "pässwörd"}


@dataclass
class Received:
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    rcpt_options: list[str]
    content: bytes


@dataclass
class RecordingHandler:
    """Stores every message; advertises PIPELINING, which aiosmtpd handles but
    does not announce."""

    messages: list[Received] = field(default_factory=list)
    pipelining: bool = True
    refuse_rcpt: set[str] = field(default_factory=set)
    data_reply: str = "250 2.0.0 Ok: queued as TEST"

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(
            Received(
                envelope.mail_from or "",
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                list(envelope.rcpt_options),
                content if isinstance(content, bytes) else content.encode(),
            )
        )
        return self.data_reply


def authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    if isinstance(auth_data, LoginPassword):
        user = auth_data.login.decode()
        password = auth_data.password.decode()
        if USERS.get(user) == password:
            return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    host: str
    port: int
    handler: RecordingHandler

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


@contextmanager
def aiosmtpd_server(
    *,
    handler: RecordingHandler | None = None,
    starttls_context: ssl.SSLContext | None = None,
    implicit_tls_context: ssl.SSLContext | None = None,
    auth: bool = False,
    **kwargs: Any,
) -> Iterator[RunningServer]:
    """Run aiosmtpd in its own thread for the duration of the block."""
    handler = handler or RecordingHandler()
    port = free_port()
    options: dict[str, Any] = {"hostname": "127.0.0.1", "port": port}
    if starttls_context is not None:
        options["tls_context"] = starttls_context
        options["require_starttls"] = False
    if implicit_tls_context is not None:
        options["ssl_context"] = implicit_tls_context
    if auth:
        options["authenticator"] = authenticator
        options["auth_require_tls"] = False
    options.update(kwargs)
    controller = Controller(handler, **options)
    controller.start()
    try:
        yield RunningServer("127.0.0.1", port, handler)
    finally:
        controller.stop()
