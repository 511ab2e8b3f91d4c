"""An in-process SMTP / LMTP server that records what it is sent, for tests.

Theory of operation: the server is written on anyio, so it runs under asyncio and
trio alike, in the caller's own event loop (``async with RecordingServer() as
server``) or in a thread of its own (``RecordingServer.in_thread()``, see
``_thread.py``). Each accepted connection is served by one task, which reads
command lines from a buffer and answers them in order. Replies are collected and
written only when the buffer holds no further complete command, so a pipelined
group (RFC 2920) is answered as a group, and a client that waits for each reply
still gets it at once.

The session follows RFC 5321 strictly enough to catch a misbehaving client:
commands out of sequence get 503, unknown parameters 555, over-long lines 500,
a payload over the size limit 552; DATA is un-dot-stuffed and ends only at
CRLF.CRLF; BDAT (RFC 3030) reads exactly the announced octets; LMTP (RFC 2033)
answers the end of the data once per recipient. A message is recorded before its
250 is sent, so once a client has its reply the message is in ``messages``.

Faults are rules armed per step (``refuse``, ``delay``, ``drop``); each applies to
the first matching event, ``times`` times (or for ever). They live in a locked list
so a test can arm them from any thread while the server runs.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import ssl
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ._records import RecordedMessage, SessionRecord, Step, _Faults, _Rule

if TYPE_CHECKING:
    from ._thread import ThreadedRecordingServer

__all__ = ["DEFAULT_EXTENSIONS", "RecordingServer"]

#: What the server advertises in its EHLO reply unless told otherwise.
DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "SIZE",
    "CHUNKING",
    "DSN",
    "ENHANCEDSTATUSCODES",
)
_KNOWN_EXTENSIONS = frozenset({*DEFAULT_EXTENSIONS, "BINARYMIME"})
_CONFIGURED = frozenset({"STARTTLS", "AUTH"})
_AUTH_MECHANISMS = ("PLAIN", "LOGIN")
# Steps where ``match`` names an address (or, for EHLO, the client's name).
_MATCHABLE = frozenset({Step.EHLO, Step.MAIL, Step.RCPT, Step.DATA, Step.DOT, Step.BDAT})

_CLOSED = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)


class _Hangup(Exception):
    """The session is over: the client left, or the server ends it."""


class _LineTooLong(Exception):
    """A line went past the limit; what it ended with is kept for DATA."""

    def __init__(self, tail: bytes) -> None:
        super().__init__("line too long")
        self.tail = tail


class _Session:
    """One connection: its stream, its buffers and where the SMTP dialogue stands."""

    def __init__(
        self, server: RecordingServer, stream: anyio.abc.ByteStream, record: SessionRecord
    ) -> None:
        self.server = server
        self.stream = stream
        self.record = record
        self.buffer = bytearray()
        # Where the search for the next LF resumes: the buffer is never rescanned.
        self.scanned = 0
        self.out = bytearray()
        self.esmtp = False
        self.greeted = False
        self.auth_user: str | None = None
        self.reset()

    def reset(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[list[str]] = []
        self.smtputf8 = False
        self.binarymime = False
        self.chunks: bytearray | None = None
        self.chunks_failed = False
        self.oversize = False

    # -- bytes in and out -----------------------------------------------------------

    async def flush(self) -> None:
        if self.out:
            data = bytes(self.out)
            self.out.clear()
            await self.stream.send(data)

    async def fill(self) -> None:
        # Nothing more is buffered: answer the group received so far, then wait.
        await self.flush()
        with anyio.fail_after(self.server.idle_timeout):
            self.buffer += await self.stream.receive()

    async def readline(self) -> bytes:
        """One line, with its line ending (LF or CRLF)."""
        limit = self.server.line_limit
        too_long = False
        while True:
            index = self.buffer.find(b"\n", self.scanned)
            if index >= 0:
                line = bytes(self.buffer[: index + 1])
                del self.buffer[: index + 1]
                self.scanned = 0
                if too_long or len(line) > limit:
                    raise _LineTooLong(line[-2:])
                return line
            if len(self.buffer) > limit:
                # Keep only the last byte: it may be the CR of the coming CRLF.
                too_long = True
                del self.buffer[:-1]
            self.scanned = len(self.buffer)
            await self.fill()

    async def read_exactly(self, size: int, sink: bytearray | None) -> None:
        """Read ``size`` octets, appending them to ``sink`` unless it is None."""
        while size:
            if not self.buffer:
                await self.fill()
            piece = self.buffer[:size]
            del self.buffer[: len(piece)]
            self.scanned = 0
            size -= len(piece)
            if sink is not None:
                sink += piece

    def reply(self, code: int, text: str, enhanced: str | None = None) -> None:
        if enhanced is not None and self.server.enhanced_codes:
            text = f"{enhanced} {text}"
        lines = text.split("\n")
        for line in lines[:-1]:
            self.out += f"{code}-{line}\r\n".encode()
        self.out += f"{code} {lines[-1]}\r\n".encode()

    # -- faults ---------------------------------------------------------------------

    async def faults_at(self, step: Step, subjects: list[str]) -> tuple[_Rule, list[str]] | None:
        """Play any delay armed for ``step``, then return the drop or refusal armed for
        it (a drop wins), with the subjects it hits."""
        faults = self.server.faults
        delay = faults.take("delay", step, subjects)
        if delay is not None:
            await self.flush()
            await anyio.sleep(delay[0].seconds)
        return faults.take("drop", step, subjects) or faults.take("refuse", step, subjects)

    async def drop(self) -> None:
        await self.flush()
        raise _Hangup

    async def refuse(self, rule: _Rule) -> None:
        self.reply(rule.code, rule.text)
        if rule.code == 421:
            # RFC 5321 3.8: 421 means the server is closing the channel.
            await self.drop()

    async def play(self, step: Step, subjects: list[str] | None = None) -> bool:
        """Apply the faults for a step that has no per-recipient outcome; True when a
        refusal was sent (the caller then stops)."""
        fault = await self.faults_at(step, subjects or [""])
        if fault is None:
            return False
        rule, _hits = fault
        if rule.kind == "drop":
            await self.drop()
        await self.refuse(rule)
        return True


class RecordingServer:
    """An SMTP (or LMTP) server for tests that records every message it accepts.

    ``async with RecordingServer() as server:`` listens on ``server.host`` and
    ``server.port`` for the duration of the block, in the running event loop
    (asyncio or trio). ``RecordingServer.in_thread(...)`` runs one in a thread of
    its own instead, for synchronous code and for clients in other processes.

    ``tls_context`` (a server-side ``ssl.SSLContext``) makes it offer STARTTLS, or,
    with ``implicit_tls=True``, speak TLS from the first byte. ``auth`` (user name
    to password) makes it offer AUTH PLAIN and LOGIN. ``extensions`` lists the EHLO
    keywords to advertise (``SIZE`` is sent with ``size_limit``); ``lmtp=True``
    speaks LMTP. ``unix_path`` listens on a Unix socket instead of TCP.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth: dict[str, str] | None = None,
        extensions: Iterable[str] = DEFAULT_EXTENSIONS,
        lmtp: bool = False,
        size_limit: int = 32 * 1024 * 1024,
        line_limit: int = 8192,
        hostname: str = "recording.test",
        idle_timeout: float = 30.0,
        unix_path: str | None = None,
    ) -> None:
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        keywords = [extension.upper() for extension in extensions]
        for keyword in keywords:
            if keyword in _CONFIGURED:
                raise ValueError(f"{keyword} is offered by configuration, not by extensions")
            if keyword not in _KNOWN_EXTENSIONS:
                raise ValueError(f"unknown extension {keyword!r}")
        self.host = host
        self.port = port
        self.unix_path = unix_path
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.auth = dict(auth) if auth is not None else None
        self.extensions = tuple(keywords)
        self.lmtp = lmtp
        self.size_limit = size_limit
        self.line_limit = line_limit
        self.hostname = hostname
        self.idle_timeout = idle_timeout
        self.faults = _Faults()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[RecordedMessage] = []
        self._sessions: list[SessionRecord] = []
        self._errors: list[BaseException] = []
        self._numbers = itertools.count(1)
        self._queue_ids = itertools.count(1)
        self._event: anyio.Event | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._listeners: list[anyio.abc.Listener[Any]] = []

    @classmethod
    def in_thread(
        cls, *args: Any, backend: str = "asyncio", **kwargs: Any
    ) -> ThreadedRecordingServer:
        """The same server, running in its own event loop in a thread:
        ``with RecordingServer.in_thread(...) as server:``. ``backend`` is
        ``"asyncio"`` or ``"trio"``; the other arguments are ``RecordingServer``'s."""
        from ._thread import ThreadedRecordingServer

        return ThreadedRecordingServer(cls(*args, **kwargs), backend=backend)

    # -- what the test reads --------------------------------------------------------

    @property
    def messages(self) -> list[RecordedMessage]:
        """The messages accepted so far, oldest first (a copy: safe from any thread)."""
        with self._lock:
            return list(self._messages)

    @property
    def sessions(self) -> list[SessionRecord]:
        """Every connection accepted so far, oldest first."""
        with self._lock:
            return list(self._sessions)

    @property
    def enhanced_codes(self) -> bool:
        return "ENHANCEDSTATUSCODES" in self.extensions

    def clear(self) -> None:
        """Forget the messages and sessions recorded so far (armed faults stay)."""
        with self._lock:
            self._messages.clear()
            self._sessions.clear()

    def clear_faults(self) -> None:
        """Disarm every refusal, delay and drop."""
        self.faults.clear()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedMessage]:
        """Wait until at least ``count`` messages have been recorded and return them;
        ``TimeoutError`` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while True:
                event = self._event
                with self._lock:
                    if len(self._messages) >= count:
                        return list(self._messages)
                if event is None:
                    raise RuntimeError("the server is not running")
                await event.wait()

    def wait_for_sync(self, count: int, timeout: float = 5.0) -> list[RecordedMessage]:
        """``wait_for`` for a thread other than the server's own."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._messages)} of {count} messages arrived in {timeout}s"
                )
            return list(self._messages)

    # -- faults ---------------------------------------------------------------------

    def refuse(
        self,
        step: Step | str,
        code: int = 550,
        text: str | None = None,
        *,
        match: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer ``step`` with ``code`` and ``text`` instead of going on.

        ``match`` (an address; for EHLO the client's name) limits the refusal to
        the events that name it: for DATA, DOT and BDAT, a message with that
        recipient (under LMTP, a refusal at DOT hits only the matching recipients).
        ``times`` limits how often it applies (default: always). A refusal at DOT
        means the message is not recorded; 421 at any step closes the connection.
        """
        step = _step(step, match)
        if not 400 <= code <= 599:
            raise ValueError("a refusal needs a 4xx or 5xx code")
        if text is None:
            text = f"{code // 100}.0.0 Refused by the recording server at {step.value}"
            if not self.enhanced_codes:
                text = text.split(" ", 1)[1]
        self.faults.add(_Rule("refuse", step, match=match, times=times, code=code, text=text))

    def delay(
        self,
        step: Step | str,
        seconds: float,
        *,
        match: str | None = None,
        times: int | None = None,
    ) -> None:
        """Wait ``seconds`` before answering ``step`` (replies already due are sent
        first)."""
        step = _step(step, match)
        if not seconds >= 0 or math.isinf(seconds):
            raise ValueError("seconds must be finite and not negative")
        self.faults.add(_Rule("delay", step, match=match, times=times, seconds=seconds))

    def drop(
        self,
        step: Step | str,
        *,
        match: str | None = None,
        times: int | None = None,
        record: bool = False,
    ) -> None:
        """Close the connection at ``step`` without answering it (replies already
        due are sent first). At DOT (or a ``BDAT LAST``), ``record=True`` keeps the
        message first, like a server that queued it and died before replying."""
        step = _step(step, match)
        if record and step is not Step.DOT:
            raise ValueError("record applies to a drop at DOT only")
        self.faults.add(_Rule("drop", step, match=match, times=times, record=record))

    # -- running ----------------------------------------------------------------------

    async def __aenter__(self) -> RecordingServer:
        if self.unix_path is not None:
            self._listeners = [await anyio.create_unix_listener(self.unix_path)]
        else:
            multi = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            self._listeners = list(multi.listeners)
            self.port = self._listeners[0].extra(anyio.abc.SocketAttribute.local_port)
        self._event = anyio.Event()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for listener in self._listeners:
            self._task_group.start_soon(listener.serve, self._serve, self._task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task_group = self._task_group
        assert task_group is not None
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                for listener in self._listeners:
                    await listener.aclose()
            self._task_group = None
            self._event = None
        if self._errors and exc_type is None:
            raise RuntimeError("the recording server failed") from self._errors[0]

    async def _serve(self, stream: anyio.abc.ByteStream) -> None:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address, "unknown")
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        peer = peer or self.unix_path or "unknown"
        with self._lock:
            record = SessionRecord(next(self._numbers), peer)
            self._sessions.append(record)
        try:
            if self.implicit_tls:
                assert self.tls_context is not None
                try:
                    with anyio.fail_after(self.idle_timeout):
                        stream = await TLSStream.wrap(
                            stream,
                            server_side=True,
                            ssl_context=self.tls_context,
                            standard_compatible=False,
                        )
                except (*_CLOSED, TimeoutError):
                    return
                record.tls = True
            session = _Session(self, stream, record)
            try:
                await self._converse(session)
            except (_Hangup, *_CLOSED):
                pass
            except TimeoutError:
                session.out.clear()
                session.reply(421, "Idle for too long, closing", "4.4.2")
                with anyio.move_on_after(1), _suppress_closed():
                    await session.flush()
            except Exception as exc:  # a bug of the server's own: keep it for __aexit__
                self._errors.append(exc)
            stream = session.stream
        finally:
            record.closed = True
            with anyio.move_on_after(1, shield=True), _suppress_closed():
                await stream.aclose()

    def _record(self, session: _Session, data: bytes, via: str, rcpt_tos: list[str]) -> str:
        queue_id = f"{next(self._queue_ids):08X}"
        options = [
            options
            for address, options in zip(session.rcpt_tos, session.rcpt_options, strict=True)
            if address in rcpt_tos
        ]
        message = RecordedMessage(
            mail_from=session.mail_from or "",
            rcpt_tos=list(rcpt_tos),
            mail_options=list(session.mail_options),
            rcpt_options=options,
            data=data,
            via=via,
            queue_id=queue_id,
            session=session.record.number,
            peer=session.record.peer,
            ehlo_name=session.record.ehlo_name,
            tls=session.record.tls,
            auth_user=session.auth_user,
            lmtp=self.lmtp,
        )
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
        if self._event is not None:
            self._event.set()
            self._event = anyio.Event()
        return queue_id

    # -- the dialogue -------------------------------------------------------------------

    async def _converse(self, session: _Session) -> None:
        fault = await session.faults_at(Step.GREETING, [""])
        if fault is not None and fault[0].kind == "drop":
            await session.drop()
        if fault is not None:
            await session.refuse(fault[0])
            await self._no_service(session)
            return
        kind = "LMTP" if self.lmtp else "ESMTP"
        session.reply(220, f"{self.hostname} {kind} aiosmtp.testing ready")
        while True:
            try:
                raw = await session.readline()
            except _LineTooLong:
                session.reply(500, "Line too long", "5.5.2")
                continue
            try:
                line = raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                session.reply(500, "Command is not valid UTF-8", "5.5.2")
                continue
            verb, _, argument = line.partition(" ")
            verb = verb.upper()
            session.record.commands.append(
                f"AUTH {argument.split(' ')[0]}" if verb == "AUTH" else line
            )
            handler = _HANDLERS.get(verb)
            if handler is None:
                session.reply(500, "Command not recognized", "5.5.2")
                continue
            await handler(self, session, argument.strip())

    async def _no_service(self, session: _Session) -> None:
        # RFC 5321 3.1: after a 554 greeting, wait for QUIT; refuse everything else.
        while True:
            try:
                line = await session.readline()
            except _LineTooLong:
                line = b""
            session.record.commands.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line.rstrip(b"\r\n").upper() == b"QUIT":
                session.reply(221, "Bye", "2.0.0")
                await session.drop()
            session.reply(503, "No SMTP service here", "5.5.1")

    async def _ehlo(self, session: _Session, argument: str, verb: str) -> None:
        if self.lmtp != (verb == "LHLO"):
            session.reply(500, f"{verb} is not spoken here", "5.5.1")
            return
        if not argument:
            session.reply(501, f"Syntax: {verb} hostname", "5.5.4")
            return
        if await session.play(Step.EHLO, [argument]):
            return
        # RFC 5321 4.1.4: a new EHLO resets the transaction.
        session.reset()
        session.record.ehlo_name = argument
        session.greeted = True
        session.esmtp = verb != "HELO"
        if not session.esmtp:
            session.reply(250, self.hostname)
            return
        lines = [f"{self.hostname} greets {argument}"]
        lines += [f"SIZE {self.size_limit}" if kw == "SIZE" else kw for kw in self.extensions]
        if self.auth is not None:
            lines.append("AUTH " + " ".join(_AUTH_MECHANISMS))
        if self.tls_context is not None and not session.record.tls:
            lines.append("STARTTLS")
        session.reply(250, "\n".join(lines))

    async def _helo(self, session: _Session, argument: str) -> None:
        await self._ehlo(session, argument, "HELO")

    async def _ehlo_cmd(self, session: _Session, argument: str) -> None:
        await self._ehlo(session, argument, "EHLO")

    async def _lhlo(self, session: _Session, argument: str) -> None:
        await self._ehlo(session, argument, "LHLO")

    async def _mail(self, session: _Session, argument: str) -> None:
        if not session.greeted:
            session.reply(503, "Send HELO/EHLO first", "5.5.1")
            return
        if session.mail_from is not None:
            session.reply(503, "Nested MAIL command", "5.5.1")
            return
        parsed = _parse_path(argument, "FROM:")
        if parsed is None:
            session.reply(501, "Syntax: MAIL FROM:<address>", "5.5.4")
            return
        address, params = parsed
        smtputf8 = binarymime = False
        for param in params:
            keyword, _, value = param.partition("=")
            keyword = keyword.upper()
            if not session.esmtp or not self._mail_param_ok(keyword, value.upper()):
                session.reply(555, f"Parameter {param} not recognized", "5.5.4")
                return
            if keyword == "SIZE" and int(value) > self.size_limit:
                session.reply(552, "Message size exceeds the limit", "5.3.4")
                return
            smtputf8 = smtputf8 or keyword == "SMTPUTF8"
            binarymime = binarymime or (keyword == "BODY" and value.upper() == "BINARYMIME")
        if not address.isascii() and not smtputf8:
            session.reply(553, "Non-ASCII address needs SMTPUTF8", "5.6.7")
            return
        if await session.play(Step.MAIL, [address]):
            return
        session.mail_from = address
        session.mail_options = params
        session.smtputf8 = smtputf8
        session.binarymime = binarymime
        session.reply(250, "Sender ok", "2.1.0")

    def _mail_param_ok(self, keyword: str, value: str) -> bool:
        extensions = self.extensions
        if keyword == "SIZE":
            return "SIZE" in extensions and value.isdigit()
        if keyword == "BODY":
            allowed = {"7BIT"}
            if "8BITMIME" in extensions:
                allowed.add("8BITMIME")
            if "BINARYMIME" in extensions:
                allowed.add("BINARYMIME")
            return value in allowed
        if keyword == "SMTPUTF8":
            return "SMTPUTF8" in extensions and not value
        if keyword in {"RET", "ENVID"}:
            return "DSN" in extensions and (keyword == "ENVID" or value in {"FULL", "HDRS"})
        if keyword == "AUTH":
            return self.auth is not None
        return False

    async def _rcpt(self, session: _Session, argument: str) -> None:
        if session.mail_from is None:
            session.reply(503, "Need MAIL before RCPT", "5.5.1")
            return
        if session.chunks is not None:
            session.reply(503, "RCPT after BDAT", "5.5.1")
            return
        parsed = _parse_path(argument, "TO:")
        if parsed is None or not parsed[0]:
            session.reply(501, "Syntax: RCPT TO:<address>", "5.5.4")
            return
        address, params = parsed
        for param in params:
            keyword = param.partition("=")[0].upper()
            if not (session.esmtp and keyword in {"NOTIFY", "ORCPT"} and "DSN" in self.extensions):
                session.reply(555, f"Parameter {param} not recognized", "5.5.4")
                return
        if not address.isascii() and not session.smtputf8:
            session.reply(553, "Non-ASCII address needs SMTPUTF8", "5.6.7")
            return
        if await session.play(Step.RCPT, [address]):
            return
        session.rcpt_tos.append(address)
        session.rcpt_options.append(params)
        session.reply(250, "Recipient ok", "2.1.5")

    def _not_ready_for_data(self, session: _Session) -> bool:
        if session.mail_from is None:
            session.reply(503, "Need MAIL command", "5.5.1")
        elif not session.rcpt_tos:
            session.reply(554, "No valid recipients", "5.5.1")
        else:
            return False
        return True

    async def _data(self, session: _Session, argument: str) -> None:
        if argument:
            session.reply(501, "Syntax: DATA", "5.5.4")
            return
        if self._not_ready_for_data(session):
            return
        if session.chunks is not None or session.binarymime:
            session.reply(503, "DATA cannot follow BDAT or BODY=BINARYMIME", "5.5.1")
            return
        if await session.play(Step.DATA, list(session.rcpt_tos)):
            return
        session.reply(354, "End data with <CR><LF>.<CR><LF>")
        payload = bytearray()
        too_long = False
        # A line begins after CRLF only (a bare LF does not end an SMTP line), and the
        # payload ends at CRLF "." CRLF and nowhere else.
        line_start = True
        while True:
            try:
                line = await session.readline()
            except _LineTooLong as exc:
                too_long = True
                line_start = exc.tail.endswith(b"\r\n")
                continue
            if line_start and line == b".\r\n":
                break
            if line_start and line.startswith(b"."):
                line = line[1:]
            line_start = line.endswith(b"\r\n")
            if len(payload) + len(line) > self.size_limit:
                session.oversize = True
            elif not too_long:
                payload += line
        if too_long:
            session.reset()
            session.reply(500, "Line too long", "5.5.2")
            return
        await self._finish(session, bytes(payload), "DATA")

    async def _bdat(self, session: _Session, argument: str) -> None:
        words = argument.split()
        if not 1 <= len(words) <= 2 or not words[0].isdigit():
            session.reply(501, "Syntax: BDAT size [LAST]", "5.5.4")
            return
        if len(words) == 2 and words[1].upper() != "LAST":
            session.reply(501, "Syntax: BDAT size [LAST]", "5.5.4")
            return
        size, last = int(words[0]), len(words) == 2
        # RFC 3030 2: the chunk is read whatever the reply to it will be.
        if "CHUNKING" not in self.extensions:
            await session.read_exactly(size, None)
            session.reply(502, "BDAT not implemented", "5.5.1")
            return
        if session.mail_from is None or not session.rcpt_tos or session.chunks_failed:
            await session.read_exactly(size, None)
            if not self._not_ready_for_data(session):
                session.reply(503, "Transaction failed earlier; send RSET", "5.5.1")
            return
        if session.chunks is None:
            session.chunks = bytearray()
        room = self.size_limit - len(session.chunks)
        if size > room:
            session.oversize = True
            await session.read_exactly(size, None)
        else:
            await session.read_exactly(size, session.chunks)
        if not last:
            fault = await session.faults_at(Step.BDAT, list(session.rcpt_tos))
            if fault is not None:
                if fault[0].kind == "drop":
                    await session.drop()
                session.chunks_failed = True
                session.chunks = bytearray()
                await session.refuse(fault[0])
                return
            session.reply(250, f"{size} octets received", "2.0.0")
            return
        if await session.play(Step.BDAT, list(session.rcpt_tos)):
            session.reset()
            return
        await self._finish(session, bytes(session.chunks), "BDAT")

    async def _finish(self, session: _Session, data: bytes, via: str) -> None:
        """Answer the end of the payload: record, refuse or drop it."""
        recipients = list(session.rcpt_tos)
        if session.oversize:
            session.reset()
            for _ in recipients if self.lmtp else recipients[:1]:
                session.reply(552, "Message size exceeds the limit", "5.3.4")
            return
        fault = await session.faults_at(Step.DOT, recipients)
        refused: list[str] = []
        if fault is not None:
            rule, hits = fault
            if rule.kind == "drop":
                if rule.record:
                    self._record(session, data, via, recipients)
                await session.drop()
            refused = hits if self.lmtp else recipients
            if rule.code == 421:
                await session.refuse(rule)
        accepted = [address for address in recipients if address not in refused]
        queue_id = self._record(session, data, via, accepted) if accepted else ""
        if self.lmtp:
            for address in recipients:
                if address in refused and fault is not None:
                    session.reply(fault[0].code, fault[0].text)
                else:
                    session.reply(250, f"<{address}> delivered as {queue_id}", "2.1.5")
        elif fault is not None:
            session.reply(fault[0].code, fault[0].text)
        else:
            session.reply(250, f"Ok: queued as {queue_id}", "2.0.0")
        session.reset()

    async def _rset(self, session: _Session, argument: str) -> None:
        if argument:
            session.reply(501, "Syntax: RSET", "5.5.4")
            return
        session.reset()
        session.reply(250, "Ok", "2.0.0")

    async def _noop(self, session: _Session, argument: str) -> None:
        session.reply(250, "Ok", "2.0.0")

    async def _vrfy(self, session: _Session, argument: str) -> None:
        if not argument:
            session.reply(501, "Syntax: VRFY address", "5.5.4")
            return
        session.reply(252, "Cannot VRFY user, but will accept the message", "2.5.2")

    async def _expn(self, session: _Session, argument: str) -> None:
        session.reply(502, "EXPN not available", "5.5.1")

    async def _help(self, session: _Session, argument: str) -> None:
        session.reply(214, "aiosmtp.testing: a recording server for tests", "2.0.0")

    async def _quit(self, session: _Session, argument: str) -> None:
        if not await session.play(Step.QUIT):
            session.reply(221, "Bye", "2.0.0")
        await session.drop()

    async def _starttls(self, session: _Session, argument: str) -> None:
        if self.tls_context is None:
            session.reply(502, "STARTTLS not available", "5.5.1")
            return
        if session.record.tls:
            session.reply(503, "Already under TLS", "5.5.1")
            return
        if argument:
            session.reply(501, "Syntax: STARTTLS", "5.5.4")
            return
        if await session.play(Step.STARTTLS):
            return
        session.reply(220, "Ready to start TLS", "2.0.0")
        await session.flush()
        # RFC 3207 4.2: whatever arrived after the command, before the handshake, is
        # plaintext someone may have injected; it is thrown away.
        session.buffer.clear()
        session.scanned = 0
        with anyio.fail_after(self.idle_timeout):
            session.stream = await TLSStream.wrap(
                session.stream,
                server_side=True,
                ssl_context=self.tls_context,
                standard_compatible=False,
            )
        session.record.tls = True
        # RFC 3207 4.2: the server forgets everything it learnt before TLS.
        session.reset()
        session.greeted = session.esmtp = False
        session.auth_user = None
        session.record.ehlo_name = None

    async def _auth(self, session: _Session, argument: str) -> None:
        if self.auth is None:
            session.reply(502, "AUTH not available", "5.5.1")
            return
        if not session.esmtp:
            session.reply(503, "Send EHLO first", "5.5.1")
            return
        if session.auth_user is not None:
            session.reply(503, "Already authenticated", "5.5.1")
            return
        if session.mail_from is not None:
            session.reply(503, "AUTH not allowed during a transaction", "5.5.1")
            return
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in _AUTH_MECHANISMS:
            session.reply(504, f"Mechanism {mechanism or '?'} not available", "5.5.4")
            return
        if await session.play(Step.AUTH):
            return
        try:
            if mechanism == "PLAIN":
                response = initial.strip() or await self._challenge(session, "")
                fields = _b64(response).split(b"\0")
                if len(fields) != 3:
                    raise ValueError("PLAIN needs three fields")
                user, password = fields[1].decode(), fields[2].decode()
            else:
                answer = initial.strip() or await self._challenge(session, "VXNlcm5hbWU6")
                user = _b64(answer).decode()
                password = _b64(await self._challenge(session, "UGFzc3dvcmQ6")).decode()
        except _Cancelled:
            session.reply(501, "Authentication cancelled", "5.7.0")
            return
        except ValueError:
            session.reply(501, "Malformed authentication response", "5.5.2")
            return
        if self.auth.get(user) != password:
            session.reply(535, "Authentication credentials invalid", "5.7.8")
            return
        session.auth_user = session.record.auth_user = user
        session.reply(235, "Authentication successful", "2.7.0")

    async def _challenge(self, session: _Session, challenge: str) -> str:
        session.out += f"334 {challenge}\r\n".encode()
        try:
            line = (await session.readline()).rstrip(b"\r\n").decode("ascii")
        except (_LineTooLong, UnicodeDecodeError) as exc:
            raise ValueError("bad response") from exc
        if line == "*":
            raise _Cancelled
        return line


class _Cancelled(Exception):
    """The client answered a SASL challenge with ``*`` (RFC 4954 4)."""


_HANDLERS = {
    "HELO": RecordingServer._helo,
    "EHLO": RecordingServer._ehlo_cmd,
    "LHLO": RecordingServer._lhlo,
    "MAIL": RecordingServer._mail,
    "RCPT": RecordingServer._rcpt,
    "DATA": RecordingServer._data,
    "BDAT": RecordingServer._bdat,
    "RSET": RecordingServer._rset,
    "NOOP": RecordingServer._noop,
    "VRFY": RecordingServer._vrfy,
    "EXPN": RecordingServer._expn,
    "HELP": RecordingServer._help,
    "QUIT": RecordingServer._quit,
    "STARTTLS": RecordingServer._starttls,
    "AUTH": RecordingServer._auth,
}


def _step(step: Step | str, match: str | None) -> Step:
    try:
        parsed = Step(step.upper())
    except ValueError:
        names = ", ".join(member.value for member in Step)
        raise ValueError(f"unknown step {step!r}; one of {names}") from None
    if match is not None and parsed not in _MATCHABLE:
        raise ValueError(f"match does not apply to {parsed.value}")
    return parsed


def _parse_path(argument: str, prefix: str) -> tuple[str, list[str]] | None:
    """``FROM:<address> PARAM=value ...`` -> (address, params), or None."""
    if argument[: len(prefix)].upper() != prefix:
        return None
    rest = argument[len(prefix) :].lstrip(" ")
    if not rest.startswith("<"):
        return None
    quoted = escaped = False
    for index, char in enumerate(rest[1:], start=1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            address = rest[1:index]
            # A source route (RFC 5321 4.1.2, obsolete) is accepted and ignored.
            if address.startswith("@") and ":" in address:
                address = address.split(":", 1)[1]
            return address, rest[index + 1 :].split()
    return None


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc


class _suppress_closed:
    """``contextlib.suppress`` of the ways a closing connection can fail."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, _CLOSED)
