"""``python -m aiosmtp demo``: the whole client against a server it starts itself.

An aiosmtpd server runs in this process (in its own thread) on loopback with a
throw-away trustme certificate, STARTTLS, AUTH, and PIPELINING added to its EHLO
reply (aiosmtpd handles pipelined commands but does not announce them). The demo
then upgrades to TLS, logs in, sends one message with an attachment, and a
concurrent burst over that one connection, and prints what the server received.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import anyio

from .client import SMTP

__all__ = ["run_demo"]

_USER = "demo"
_PASSWORD = "demo-password"


def _missing(name: str) -> SystemExit:
    return SystemExit(f"the demo needs {name}: install it with  pip install 'aiosmtp[demo]'")


@dataclass
class _Inbox:
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_EHLO(  # aiosmtpd's hook: add PIPELINING to the reply
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return f"250 2.0.0 Ok: queued as DEMO{len(self.messages):05d}"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == _USER.encode()
        and auth_data.password == _PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _attachment_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Demo Sender <sender@example.com>"
    msg["To"] = "Recipient <rcpt@example.com>"
    msg["Bcc"] = "hidden@example.com"
    msg["Subject"] = "aiosmtp demo: one message with an attachment"
    msg.set_content("Hello from aiosmtp.\n\n.A line that starts with a dot survives.\n")
    msg.add_attachment(
        bytes(range(256)) * 16, maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    return msg


async def _send_all(
    port: int, context: ssl.SSLContext, burst: int, inbox: _Inbox
) -> tuple[float, list[str]]:
    lines: list[str] = []
    async with SMTP("127.0.0.1", port, timeout=30, context=context) as smtp:
        await smtp.starttls()
        lines.append("STARTTLS: verified the server certificate (trustme CA)")
        reply = await smtp.login(_USER, _PASSWORD)
        lines.append(f"login: {reply.code} {reply.text}")
        result = await smtp.send_message(_attachment_message())
        lines.append(f"send_message: refused={dict(result)} reply={result.reply.text!r}")

        async def one(number: int) -> None:
            body = (
                f"From: sender@example.com\r\nTo: rcpt{number}@example.com\r\n"
                f"Subject: burst {number}\r\n\r\nmessage {number}\r\n"
            ).encode()
            await smtp.sendmail("sender@example.com", [f"rcpt{number}@example.com"], body)

        started = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for number in range(burst):
                tasks.start_soon(one, number)
        elapsed = time.perf_counter() - started
    return elapsed, lines


def run_demo(*, messages: int = 300, backend: str = "asyncio") -> int:
    try:
        import trustme
    except ImportError:
        raise _missing("trustme") from None
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        raise _missing("aiosmtpd") from None

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    # aiosmtpd warns about its own internals on every AUTH; not the user's business.
    warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        print(f"aiosmtpd listening on 127.0.0.1:{port} (STARTTLS, AUTH, PIPELINING)")
        elapsed, lines = anyio.run(
            _send_all, port, client_context, messages, inbox, backend=backend
        )
    finally:
        controller.stop()

    for line in lines:
        print(line)
    sender, recipients, content = inbox.messages[0]
    headers = content.split(b"\r\n\r\n", 1)[0].decode()
    print(f"\nThe server received the first message from {sender} to {recipients}:")
    for header in headers.splitlines():
        print(f"    {header}")
    print(f"    ... {len(content)} bytes in all; Bcc transmitted: {b'hidden@' in content}")
    burst = inbox.messages[1:]
    bodies = sorted(content.rsplit(b"\r\n\r\n", 1)[1] for _, _, content in burst)
    expected = sorted(f"message {number}\r\n".encode() for number in range(messages))
    intact = bodies == expected
    print(
        f"\nBurst: {len(burst)} of {messages} messages received "
        f"({'each exactly once, intact' if intact else 'NOT all intact'}) "
        f"in {elapsed:.3f} s over one pipelined connection: "
        f"{messages / elapsed:,.0f} messages/s on {backend}"
    )
    return 0 if intact else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
