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


# -- for the aiosmtpd end-to-end tests (test_client_aiosmtpd.py and friends) ---------------

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import secrets  # noqa: E402
import time  # noqa: E402

from aiosmtpd.smtp import MISSING  # noqa: E402


@dataclass
class EventRecordingHandler(RecordingHandler):
    """A RecordingHandler that also notes, as the server sees them, every EHLO (the
    name given, and whether STARTTLS had been done: aiosmtpd does not mark sessions
    over implicit TLS), every AUTH (the mechanism, and whether an initial response
    came with it) and every QUIT. ``hang_noop`` makes NOOP never answer, for
    timeout tests."""

    ehlos: list[tuple[str, bool]] = field(default_factory=list)
    #: The client's address at each EHLO.
    peers: list[Any] = field(default_factory=list)
    auths: list[tuple[str, bool]] = field(default_factory=list)
    quits: int = 0
    hang_noop: bool = False

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.ehlos.append((hostname, session.ssl is not None))
        self.peers.append(session.peer)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_AUTH(
        self, server: SMTPServer, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        self.auths.append((args[0].upper(), len(args) > 1))
        return MISSING  # the mechanism's own implementation goes on

    async def handle_QUIT(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"

    async def handle_NOOP(
        self, server: SMTPServer, session: Session, envelope: Envelope, arg: str
    ) -> str:
        if self.hang_noop:
            await asyncio.sleep(3600)
        return "250 2.0.0 OK"


@dataclass
class CramMD5Handler(EventRecordingHandler):
    """Adds CRAM-MD5 (RFC 2195) through aiosmtpd's handler hook (a method named
    ``auth_CRAM__MD5``), checking the HMAC itself against USERS."""

    verified: list[str] = field(default_factory=list)
    challenges: list[bytes] = field(default_factory=list)

    async def auth_CRAM__MD5(self, server: SMTPServer, args: list[str]) -> AuthResult:
        if len(args) != 1:
            await server.push("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = f"<{secrets.token_hex(8)}.{time.time_ns()}@test.example>".encode()
        self.challenges.append(challenge)
        answer = await server.challenge_auth(challenge)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)  # "*": already answered 501
        user_bytes, _, digest = answer.rpartition(b" ")
        user = user_bytes.decode("utf-8", "replace")
        password = USERS.get(user)
        if password is not None:
            expected = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
            if hmac.compare_digest(digest, expected.encode()):
                self.verified.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@dataclass
class OddMechanismHandler(EventRecordingHandler):
    """Offers AUTH X-ODD, a mechanism no client knows (with PLAIN and LOGIN excluded,
    the only one)."""

    async def auth_X__ODD(self, server: SMTPServer, args: list[str]) -> AuthResult:
        return AuthResult(success=False, handled=False)


@contextmanager
def silent_listener() -> Iterator[tuple[str, int]]:
    """A port whose connections the kernel completes but that never hear a byte."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        port: int = sock.getsockname()[1]
        yield "127.0.0.1", port


# -- smtplib parity: the same calls through smtplib and aiosmtp, each against its own
# -- aiosmtpd with the same configuration -----------------------------------------------

import inspect  # noqa: E402
import smtplib  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import anyio  # noqa: E402

import aiosmtp  # noqa: E402

#: The client timeout of the parity runs; every run is also bounded as a whole.
PARITY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Client:
    """A stand-in, in a Call's arguments, for an attribute of the client under test
    (``Client("auth_plain")`` is ``smtp.auth_plain`` for whichever client runs)."""

    attribute: str


@dataclass
class Call:
    """One method call, made the same way on an smtplib.SMTP and an aiosmtp.SMTP."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def bind(self, smtp: object) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        def resolve(value: Any) -> Any:
            return getattr(smtp, value.attribute) if isinstance(value, Client) else value

        method = getattr(smtp, self.method)
        args = tuple(resolve(arg) for arg in self.args)
        kwargs = {name: resolve(value) for name, value in self.kwargs.items()}
        return method, args, kwargs


def call(method: str, *args: Any, **kwargs: Any) -> Call:
    return Call(method, args, kwargs)


def attribute(name: str) -> Call:
    """Read a state attribute (``esmtp_features``, ``ehlo_resp``...) of the client."""
    return Call("__getattribute__", (name,))


@dataclass
class Outcome:
    """What a run of calls gave: each call's return value or the exception it raised
    (a failed call does not end the run: the next calls show the session's state),
    and the messages the server stored."""

    results: list[Any]
    messages: list[Received]

    @property
    def values(self) -> list[Any]:
        return [result for result in self.results if not isinstance(result, BaseException)]

    @property
    def errors(self) -> list[BaseException]:
        return [result for result in self.results if isinstance(result, BaseException)]

    @property
    def error(self) -> BaseException | None:
        return next(iter(self.errors), None)


def _run_smtplib(host: str, port: int, calls: Sequence[Call]) -> list[Any]:
    results: list[Any] = []
    with smtplib.SMTP(host, port, timeout=PARITY_TIMEOUT) as smtp:
        for one in calls:
            method, args, kwargs = one.bind(smtp)
            try:
                results.append(method(*args, **kwargs))
            except Exception as exc:
                results.append(exc)
    return results


async def _run_aiosmtp(host: str, port: int, calls: Sequence[Call]) -> list[Any]:
    results: list[Any] = []
    with anyio.fail_after(PARITY_TIMEOUT):
        async with aiosmtp.SMTP(host, port, timeout=PARITY_TIMEOUT) as smtp:
            for one in calls:
                method, args, kwargs = one.bind(smtp)
                try:
                    value = method(*args, **kwargs)
                    if inspect.isawaitable(value):
                        value = await value
                    results.append(value)
                except Exception as exc:
                    results.append(exc)
    return results


def _options(options: list[str]) -> list[str]:
    # smtplib says "size=", aiosmtp "SIZE=": ESMTP keywords are case-insensitive.
    result = []
    for option in options:
        keyword, equals, value = option.partition("=")
        result.append(keyword.upper() + equals + value)
    return result


def comparable(message: Received) -> Received:
    return Received(
        message.mail_from,
        _options(message.mail_options),
        message.rcpt_tos,
        message.rcpt_options,
        message.content,
    )


def assert_same_exception(expected: BaseException, actual: BaseException) -> None:
    expected_type = type(expected)
    assert isinstance(actual, expected_type), (expected, actual)
    if expected_type.__module__ == "smtplib":
        # aiosmtp's own class of the same name, a subclass of smtplib's.
        assert type(actual).__module__.startswith("aiosmtp"), type(actual)
        assert type(actual).__name__ == expected_type.__name__, (expected, actual)
    else:
        assert type(actual) is expected_type, (expected, actual)
    for attribute in ("smtp_code", "smtp_error", "sender", "recipients"):
        if hasattr(expected, attribute):
            assert getattr(actual, attribute) == getattr(expected, attribute), attribute


def assert_same_result(index: int, method: str, expected: Any, actual: Any) -> None:
    where = f"call #{index} ({method})"
    if isinstance(expected, BaseException):
        assert isinstance(actual, BaseException), (
            f"{where}: smtplib raised {expected!r}, aiosmtp returned {actual!r}"
        )
        assert_same_exception(expected, actual)
        return
    assert not isinstance(actual, BaseException), (
        f"{where}: smtplib returned {expected!r}, aiosmtp raised {actual!r}"
    )
    assert actual == expected, where
    if method == "__getattribute__":
        assert type(actual) is type(expected), (where, actual)
    elif isinstance(expected, tuple):
        assert isinstance(actual, aiosmtp.Reply), (where, actual)
    elif isinstance(expected, dict):
        assert isinstance(actual, aiosmtp.SendResult), (where, actual)


async def parity(
    calls: Sequence[Call],
    *,
    handler: Callable[[], RecordingHandler] = EventRecordingHandler,
    **server_options: Any,
) -> tuple[Outcome, Outcome]:
    """Run ``calls`` with smtplib (in a thread) and with aiosmtp, each against a fresh
    aiosmtpd made with ``server_options``; assert, call by call, the same return values
    or the same exceptions, and the same stored messages; return (smtplib's, aiosmtp's)
    outcomes."""
    with aiosmtpd_server(handler=handler(), **server_options) as server:
        results = await anyio.to_thread.run_sync(_run_smtplib, server.host, server.port, calls)
        std = Outcome(results, list(server.messages))
    with aiosmtpd_server(handler=handler(), **server_options) as server:
        ours = Outcome(await _run_aiosmtp(server.host, server.port, calls), list(server.messages))
    assert len(ours.results) == len(std.results) == len(calls)
    for index, (one, expected, actual) in enumerate(
        zip(calls, std.results, ours.results, strict=True)
    ):
        assert_same_result(index, one.method, expected, actual)
    assert [comparable(m) for m in ours.messages] == [comparable(m) for m in std.messages]
    return std, ours
