"""A scripted fake SMTP server, for byte-exact and fault tests.

Theory of operation: each server runs in its own thread with plain blocking sockets,
so it behaves the same whichever event loop drives the client under test. It accepts
one connection (TCP on 127.0.0.1, or a Unix socket) and plays a script: a list of
steps such as ``send(b"220 hi\\r\\n")``, ``expect(b"EHLO x\\r\\n")`` or ``close()``.
When the script has run out, the server waits for the client to hang up and treats
any further byte as an error, so a test sees "nothing more was sent".

Every byte received is recorded in ``transcript``, and ``log`` keeps the order in
which the two sides spoke. Whatever goes against the script (an unexpected line,
a client that hangs up early, a TLS handshake that should have failed) is stored
and re-raised by ``join()``; the ``scripted`` fixture joins every server at
teardown, so a failure in a server thread can never pass silently.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio

import aiosmtp

__all__ = [
    "CLIENT_NAME",
    "GREETING",
    "TIMEOUT",
    "MiniSMTP",
    "ScriptError",
    "ScriptedServer",
    "ScriptedServers",
    "ServerConnection",
    "Step",
    "call",
    "client",
    "close",
    "ehlo_ok",
    "ehlo_reply",
    "expect",
    "expect_eof",
    "expect_line",
    "expect_together",
    "greet",
    "nocase",
    "quit_ok",
    "recv_until",
    "reset",
    "send",
    "shutdown_write",
    "sleep",
    "start_tls",
    "stop_reading",
    "trickle",
]

#: The client timeout every scripted test uses: short, so that faults are quick.
TIMEOUT = 0.3
#: The EHLO name every scripted test gives the client.
CLIENT_NAME = "client.example"
GREETING = b"220 test.example ESMTP scripted\r\n"

#: How long the server waits for the client at any one point before it gives up.
_IO_TIMEOUT = 5.0
#: Granularity of the server's blocking waits, so that join() can interrupt them.
_POLL = 0.02

Matcher = bytes | re.Pattern[bytes] | Callable[[bytes], bool]


class ScriptError(AssertionError):
    """The client did something the script did not allow."""


class _Aborted(ScriptError):
    """join() gave up waiting for the server thread."""


# -- the server's side of one connection ------------------------------------------


class ServerConnection:
    """The accepted connection, as the steps see it."""

    def __init__(self, server: ScriptedServer, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket = sock
        self.buffer = bytearray()
        self.closed = False
        self.tls = False

    def _deadline(self) -> float:
        return time.monotonic() + self.server.io_timeout

    def receive(self, deadline: float | None = None) -> bool:
        """Read one chunk into the buffer; False at end of file."""
        deadline = self._deadline() if deadline is None else deadline
        while True:
            if self.server._abort.is_set():
                raise _Aborted("join() gave up while the server waited for the client")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScriptError(f"the client sent nothing for {self.server.io_timeout} s")
            self.sock.settimeout(min(_POLL, remaining))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                data = b""
            if not data:
                return False
            self.server._record("C", data)
            self.buffer += data
            return True

    def read_line(self, what: str = "a line") -> bytes:
        """The next line, through its LF."""
        while (end := self.buffer.find(b"\n")) < 0:
            if not self.receive():
                raise ScriptError(
                    f"the client closed the connection while the server expected {what}"
                    f" (unconsumed: {bytes(self.buffer)!r})"
                )
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def read_line_or_none(self) -> bytes | None:
        """The next line, or None when the client hangs up between lines."""
        while (end := self.buffer.find(b"\n")) < 0:
            if not self.receive():
                if self.buffer:
                    raise ScriptError(f"the client hung up mid-line: {bytes(self.buffer)!r}")
                return None
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def read_exact(self, expected: bytes) -> None:
        """Read ``len(expected)`` bytes and check them, failing at the first wrong byte."""
        while True:
            have = bytes(self.buffer[: len(expected)])
            if not expected.startswith(have):
                raise ScriptError(f"expected {expected!r}, got {self._rest_of_line()!r}")
            if len(have) == len(expected):
                del self.buffer[: len(expected)]
                return
            if not self.receive():
                raise ScriptError(
                    f"the client closed the connection; expected {expected!r}, got {have!r}"
                )

    def _rest_of_line(self) -> bytes:
        """For error messages: what is buffered, through the end of its line if that
        arrives soon."""
        deadline = time.monotonic() + 0.2
        with contextlib.suppress(ScriptError, OSError):
            while b"\n" not in self.buffer and self.receive(deadline):
                pass
        end = self.buffer.find(b"\n")
        return bytes(self.buffer if end < 0 else self.buffer[: end + 1])

    def read_until(self, terminator: bytes) -> bytes:
        """Everything through the first ``terminator``."""
        searched = 0
        while (end := self.buffer.find(terminator, searched)) < 0:
            searched = max(len(self.buffer) - len(terminator) + 1, 0)
            if not self.receive():
                raise ScriptError(
                    f"the client closed the connection before {terminator!r}"
                    f" (unconsumed: {bytes(self.buffer[:200])!r})"
                )
        data = bytes(self.buffer[: end + len(terminator)])
        del self.buffer[: end + len(terminator)]
        return data

    def send(self, data: bytes) -> None:
        self.server._record("S", data)
        self.sock.settimeout(self.server.io_timeout)
        self.sock.sendall(data)

    def expect_eof(self) -> None:
        """The client hangs up without sending another byte."""
        if self.buffer:
            raise ScriptError(f"unexpected bytes from the client: {bytes(self.buffer)!r}")
        while self.receive():
            raise ScriptError(f"unexpected bytes from the client: {bytes(self.buffer)!r}")

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if reset:
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


# -- steps ---------------------------------------------------------------------------


class Step:
    """One thing the server does; ``run`` raises ScriptError when the client misbehaves."""

    def run(self, conn: ServerConnection) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class _Send(Step):
    data: bytes

    def run(self, conn: ServerConnection) -> None:
        conn.send(self.data)


@dataclass(frozen=True)
class _Trickle(Step):
    data: bytes
    delay: float

    def run(self, conn: ServerConnection) -> None:
        for index in range(len(self.data)):
            conn.send(self.data[index : index + 1])
            time.sleep(self.delay)


def _describe(matcher: Matcher) -> str:
    if isinstance(matcher, bytes):
        return repr(matcher)
    if isinstance(matcher, re.Pattern):
        return f"a line matching {matcher.pattern!r}"
    return f"a line accepted by {getattr(matcher, '__name__', matcher)!r}"


@dataclass(frozen=True)
class _Expect(Step):
    matcher: Matcher
    lines: list[bytes] | None = None

    def run(self, conn: ServerConnection) -> None:
        if isinstance(self.matcher, bytes):
            conn.read_exact(self.matcher)
            return
        line = conn.read_line(_describe(self.matcher))
        if not line.endswith(b"\r\n"):
            raise ScriptError(f"a command line must end in CRLF: {line!r}")
        text = line[:-2]
        if isinstance(self.matcher, re.Pattern):
            ok = self.matcher.fullmatch(text) is not None
        else:
            ok = self.matcher(text)
        if not ok:
            raise ScriptError(f"expected {_describe(self.matcher)}, got {line!r}")
        if self.lines is not None:
            self.lines.append(text)


@dataclass(frozen=True)
class _ExpectTogether(Step):
    data: bytes

    def run(self, conn: ServerConnection) -> None:
        # Nothing is answered before all of it has arrived: a client that waits
        # for a reply on the way never gets there.
        if conn.buffer:
            raise ScriptError(f"bytes before the group: {bytes(conn.buffer)!r}")
        first_chunk = len(conn.server.chunks)
        conn.read_exact(self.data)
        chunks = conn.server.chunks[first_chunk:]
        if len(chunks) != 1:
            raise ScriptError(f"the group arrived in {len(chunks)} pieces: {chunks!r}")


@dataclass(frozen=True)
class _RecvUntil(Step):
    terminator: bytes
    check: bytes | Callable[[bytes], bool] | None
    into: list[bytes] | None

    def run(self, conn: ServerConnection) -> None:
        data = conn.read_until(self.terminator)
        if isinstance(self.check, bytes):
            if data != self.check:
                raise ScriptError(f"expected {self.check!r}, got {data!r}")
        elif self.check is not None and not self.check(data):
            raise ScriptError(f"data refused by {self.check!r}: {data[:200]!r}")
        if self.into is not None:
            self.into.append(data)


@dataclass(frozen=True)
class _Sleep(Step):
    seconds: float

    def run(self, conn: ServerConnection) -> None:
        if conn.server._abort.wait(self.seconds):
            raise _Aborted("join() gave up while the server slept")


@dataclass(frozen=True)
class _Close(Step):
    reset: bool = False

    def run(self, conn: ServerConnection) -> None:
        conn.close(reset=self.reset)


@dataclass(frozen=True)
class _ShutdownWrite(Step):
    def run(self, conn: ServerConnection) -> None:
        conn.sock.shutdown(socket.SHUT_WR)


@dataclass(frozen=True)
class _StopReading(Step):
    def run(self, conn: ServerConnection) -> None:
        # Neither read nor write until the test has seen what it wanted (join()
        # releases it); the client's writes pile up in the socket buffers.
        deadline = time.monotonic() + conn.server.io_timeout
        while not conn.server._release.wait(_POLL):
            if conn.server._abort.is_set() or time.monotonic() > deadline:
                raise _Aborted("stop_reading() was never released")


@dataclass(frozen=True)
class _StartTLS(Step):
    context: ssl.SSLContext
    expect_failure: bool

    def run(self, conn: ServerConnection) -> None:
        if conn.buffer:
            raise ScriptError(f"plaintext after STARTTLS: {bytes(conn.buffer)!r}")
        # The client must really start a handshake: a TLS handshake record first.
        conn.sock.settimeout(conn.server.io_timeout)
        first = conn.sock.recv(1, socket.MSG_PEEK)
        if first != b"\x16":
            raise ScriptError(f"the client did not start a TLS handshake: {first!r}")
        try:
            tls_sock = self.context.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            if not self.expect_failure:
                raise
            conn.server.tls_error = exc
            conn.close()
            return
        if self.expect_failure:
            tls_sock.close()
            conn.closed = True
            raise ScriptError("the client completed a TLS handshake it should have refused")
        conn.sock = tls_sock
        conn.tls = True
        conn.server._record("TLS", b"")


@dataclass(frozen=True)
class _ExpectEOF(Step):
    def run(self, conn: ServerConnection) -> None:
        conn.expect_eof()
        conn.close()


@dataclass(frozen=True)
class _Call(Step):
    function: Callable[[ServerConnection], None]

    def run(self, conn: ServerConnection) -> None:
        self.function(conn)


def send(data: bytes) -> Step:
    """Send these bytes, in one write."""
    return _Send(data)


def trickle(data: bytes, delay: float = 0.001) -> Step:
    """Send these bytes one at a time, ``delay`` seconds apart."""
    return _Trickle(data, delay)


def expect(matcher: Matcher, *, into: list[bytes] | None = None) -> Step:
    """Bytes: exactly these bytes next. A regex or a predicate: one CRLF line, whose
    text (without the CRLF) must match (``fullmatch``); ``into`` collects it."""
    return _Expect(matcher, into)


def expect_line(*, into: list[bytes] | None = None) -> Step:
    """Any one CRLF-terminated line."""
    return _Expect(lambda line: True, into)


def expect_together(data: bytes) -> Step:
    """Exactly these bytes, all of them in one piece before anything is answered:
    what a pipelined group written at once looks like."""
    return _ExpectTogether(data)


def recv_until(
    terminator: bytes,
    check: bytes | Callable[[bytes], bool] | None = None,
    *,
    into: list[bytes] | None = None,
) -> Step:
    """Everything through ``terminator`` (e.g. ``b"\\r\\n.\\r\\n"``); ``check`` is the
    exact bytes expected (terminator included) or a predicate."""
    return _RecvUntil(terminator, check, into)


def sleep(seconds: float) -> Step:
    return _Sleep(seconds)


def close() -> Step:
    """Hang up (FIN). The script must end here."""
    return _Close()


def reset() -> Step:
    """Hang up with a TCP reset. The script must end here."""
    return _Close(reset=True)


def shutdown_write() -> Step:
    """Half close: the client reads end of file, the server can still read."""
    return _ShutdownWrite()


def stop_reading() -> Step:
    """Read nothing (and send nothing) until the test joins the server."""
    return _StopReading()


def start_tls(context: ssl.SSLContext, *, expect_failure: bool = False) -> Step:
    """Upgrade the connection to TLS, server side. With ``expect_failure`` the client
    must abort the handshake (the script ends there), and the error is kept in
    ``tls_error``."""
    return _StartTLS(context, expect_failure)


def expect_eof() -> Step:
    """The client hangs up without another byte. The script must end here."""
    return _ExpectEOF()


def call(function: Callable[[ServerConnection], None]) -> Step:
    """Run ``function(conn)``: for servers with logic of their own."""
    return _Call(function)


# -- the server ------------------------------------------------------------------------


class ScriptedServer:
    """One listening socket, one accepted connection, one script, one thread."""

    def __init__(
        self,
        script: Sequence[Step],
        *,
        unix_path: str | None = None,
        io_timeout: float = _IO_TIMEOUT,
        name: str = "scripted server",
    ) -> None:
        self.script = list(script)
        self.io_timeout = io_timeout
        self.name = name
        self.host = "127.0.0.1"
        self.path = unix_path
        self.tls_error: BaseException | None = None
        self.peer: Any = None
        self._log: list[tuple[str, bytes]] = []
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._reported = False
        self._step = -1
        if unix_path is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(unix_path)
            self._listener.listen(1)
            self.port = 0
        else:
            self._listener = socket.create_server((self.host, 0))
            self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __repr__(self) -> str:
        where = self.path or f"{self.host}:{self.port}"
        return f"<ScriptedServer {self.name} {where} step {self._step}/{len(self.script)}>"

    # -- what was said

    def _record(self, direction: str, data: bytes) -> None:
        with self._lock:
            self._log.append((direction, data))
            if direction == "C":
                self._chunks.append(data)

    @property
    def transcript(self) -> bytes:
        """Every byte the client sent, in order (after STARTTLS: the plaintext)."""
        with self._lock:
            return b"".join(data for direction, data in self._log if direction == "C")

    @property
    def log(self) -> list[tuple[str, bytes]]:
        """("C", bytes) from the client, ("S", bytes) from the server, ("TLS", b"")
        where the TLS handshake completed, in the order they happened."""
        with self._lock:
            return list(self._log)

    @property
    def chunks(self) -> list[bytes]:
        """What each recv() returned."""
        with self._lock:
            return list(self._chunks)

    # -- the thread

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def release(self) -> None:
        """Let a ``stop_reading()`` step go on."""
        self._release.set()

    def _accept(self) -> socket.socket | None:
        deadline = time.monotonic() + self.io_timeout
        self._listener.settimeout(_POLL)
        while True:
            try:
                sock, self.peer = self._listener.accept()
            except TimeoutError:
                if self._abort.is_set() or time.monotonic() > deadline:
                    if self.script:
                        raise ScriptError("the client never connected") from None
                    return None
                continue
            sock.setblocking(True)
            if sock.family != socket.AF_UNIX:
                # Each send() goes out at once, so that timings are what the script says.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

    def _run(self) -> None:
        step: Step | None = None
        try:
            sock = self._accept()
            if sock is None:
                return
            conn = ServerConnection(self, sock)
            try:
                for index, step in enumerate(self.script):
                    self._step = index
                    if conn.closed:
                        raise ScriptError("a step after the connection was closed")
                    step.run(conn)
                step = None
                if not conn.closed:
                    conn.expect_eof()
            finally:
                conn.close()
        except BaseException as exc:
            where = f"step {self._step} {step!r}" if step is not None else "after the script"
            error = ScriptError(f"{self.name}: {where}: {exc}")
            error.__cause__ = exc
            self._error = error

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the script to end; re-raise what went wrong in the thread (once)."""
        self._release.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        hung = self._thread.is_alive()
        if hung:
            self._abort.set()
            self._thread.join(2.0)
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._reported:
            return
        if self._error is not None:
            self._reported = True
            raise self._error
        if hung:
            self._reported = True
            raise ScriptError(f"{self.name}: the server thread did not finish")

    async def finished(self) -> None:
        """``join()`` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.join)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.join()


def _flatten(steps: Iterable[Step | Iterable[Step]]) -> list[Step]:
    flat: list[Step] = []
    for item in steps:
        if isinstance(item, Step):
            flat.append(item)
        else:
            flat.extend(_flatten(item))
    return flat


class ScriptedServers:
    """The ``scripted`` fixture: ``scripted(step, [steps], ...)`` starts a server;
    every server is joined at the end and the first failure re-raised."""

    def __init__(self) -> None:
        self.servers: list[ScriptedServer] = []

    def __call__(
        self,
        *steps: Step | Iterable[Step],
        unix_path: str | None = None,
        io_timeout: float = _IO_TIMEOUT,
    ) -> ScriptedServer:
        server = ScriptedServer(
            _flatten(steps),
            unix_path=unix_path,
            io_timeout=io_timeout,
            name=f"scripted server #{len(self.servers) + 1}",
        )
        self.servers.append(server)
        return server.start()

    def join_all(self) -> None:
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.join()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also: {other}")
            raise errors[0]

    def __enter__(self) -> ScriptedServers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.join_all()


# -- building blocks for scripts ---------------------------------------------------------


def nocase(text: str) -> re.Pattern[bytes]:
    """A whole line equal to ``text`` but for case (smtplib sends "mail FROM:")."""
    return re.compile(re.escape(text.encode()), re.IGNORECASE)


def greet(greeting: bytes = GREETING) -> Step:
    return send(greeting)


def ehlo_reply(*features: str, code: int = 250, name: str = "test.example") -> bytes:
    lines = [name, *features]
    return b"".join(
        f"{code}{'-' if index < len(lines) - 1 else ' '}{line}\r\n".encode()
        for index, line in enumerate(lines)
    )


def ehlo_ok(*features: str, name: str = CLIENT_NAME, verb: str = "EHLO") -> list[Step]:
    """The client's EHLO (exact bytes) and a 250 listing ``features``."""
    return [expect(f"{verb} {name}\r\n".encode()), send(ehlo_reply(*features))]


def quit_ok() -> list[Step]:
    return [expect(b"QUIT\r\n"), send(b"221 2.0.0 bye\r\n")]


def client(
    server: ScriptedServer,
    cls: type[aiosmtp.SMTP] = aiosmtp.SMTP,
    *,
    timeout: float | None = TIMEOUT,
    **kwargs: Any,
) -> aiosmtp.SMTP:
    """A client for ``server`` (not yet connected), with the test EHLO name."""
    kwargs.setdefault("local_hostname", CLIENT_NAME)
    host = server.path or server.host
    return cls(host=host, port=server.port, timeout=timeout, **kwargs)


# -- a tiny SMTP server with logic, for tests whose order of events is not fixed --------------


@dataclass
class MiniSMTP:
    """A small in-order SMTP server, run with ``call(MiniSMTP(...))`` after the greeting.

    Every reply names its command ("250 2.0.0 noop-ok"), so a client that reads a
    stale reply shows it. ``hold_at`` holds the reply to the n-th command (0 is the
    first after the greeting; the end of the data counts as one): the server sets
    ``reached`` and waits for ``release``. The client hanging up at any point ends it.
    """

    features: Sequence[str] = ("PIPELINING",)
    delay: float = 0.0
    hold_at: int | None = None
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lmtp: bool = False
    commands: list[bytes] = field(default_factory=list)
    transactions: list[list[bytes]] = field(default_factory=list)
    state: Literal["running", "hung up", "quit"] = "running"

    def _hung_up(self, conn: ServerConnection) -> None:
        # What the client had sent before it left is of no interest any more.
        self.state = "hung up"
        conn.close()

    def _reply(self, conn: ServerConnection, data: bytes) -> bool:
        if self.hold_at is not None and len(self.commands) - 1 == self.hold_at:
            self.reached.set()
            deadline = time.monotonic() + conn.server.io_timeout
            while not self.release.wait(_POLL):
                if conn.server._abort.is_set() or time.monotonic() > deadline:
                    raise _Aborted("MiniSMTP was never released")
        if self.delay:
            time.sleep(self.delay)
        try:
            conn.send(data)
        except OSError:
            self._hung_up(conn)
            return False
        return True

    def __call__(self, conn: ServerConnection) -> None:
        rcpts = 0
        current: list[bytes] = []
        while True:
            line = conn.read_line_or_none()
            if line is None:
                self._hung_up(conn)
                return
            self.commands.append(line)
            current.append(line)
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"LHLO"):
                reply = ehlo_reply(*self.features)
            elif verb == b"MAIL":
                rcpts, current = 0, [line]
                reply = b"250 2.1.0 mail-ok\r\n"
            elif verb == b"RCPT":
                rcpts += 1
                reply = b"250 2.1.5 rcpt-ok\r\n"
            elif verb == b"DATA":
                if not self._reply(conn, b"354 data-go\r\n"):
                    return
                parts: list[bytes] = []
                while (piece := conn.read_line_or_none()) is not None:
                    parts.append(piece)
                    if piece == b".\r\n":
                        break
                else:
                    self._hung_up(conn)
                    return
                body = b"".join(parts)
                self.commands.append(body)
                current.append(body)
                self.transactions.append(current)
                current = []
                count = rcpts if self.lmtp else 1
                reply = b"".join(b"250 2.0.0 queued-ok\r\n" for _ in range(max(count, 1)))
            elif verb == b"RSET":
                reply = b"250 2.0.0 rset-ok\r\n"
            elif verb == b"NOOP":
                reply = b"250 2.0.0 noop-ok\r\n"
            elif verb == b"QUIT":
                self._reply(conn, b"221 2.0.0 quit-ok\r\n")
                self.state = "quit"
                return
            else:
                reply = b"502 5.5.2 unknown-command\r\n"
            if not self._reply(conn, reply):
                return
