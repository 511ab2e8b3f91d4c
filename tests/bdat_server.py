"""A threaded SMTP / LMTP server with CHUNKING (RFC 3030), for the BDAT, streaming
and pool tests.

Theory of operation: one thread accepts, and one thread per connection speaks SMTP
over a plain blocking socket, so the server behaves the same whichever event loop
drives the client. Every batch of bytes received and every reply sent is kept per
connection in arrival order (``Connection.transcript``); ``Connection.rounds()``
groups the client's bytes by the server's answers, so a test can prove that MAIL,
the RCPTs and ``BDAT n LAST`` with its payload arrived in one piece before the
server had answered anything. With ``settle`` the server, after each read, waits
that long for more bytes before it acts, so that one client write is never seen as
two because the kernel happened to split it.

The test arms refusals and faults by setting attributes (a reply for MAIL, for a
given RCPT, for the n-th BDAT chunk of a transaction; 421 at a command; dropping
the connection at a given point, a given number of times; holding back the reply
to the end of the data until released). Counters track connections ever opened,
open now and the most open at once. A failure inside the server's own code is
kept and re-raised by ``close()``, so it can never pass silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, NoReturn

import anyio

__all__ = [
    "BDATServer",
    "Connection",
    "DropPoint",
    "Message",
    "dot_stuffed",
    "eventually",
    "normalised",
]

#: Where the server can hang up without a reply:
#: "mail": on MAIL; "data-command": on DATA, before 354; "mid-data": after 354,
#: once the first line of the message has arrived, with a reset (RST) so that the
#: client cannot finish sending; "bdat": on a BDAT command,
#: before reading its chunk; "after-end": once the whole message (final dot or
#: BDAT LAST chunk) has arrived and been stored.
DropPoint = Literal["mail", "data-command", "mid-data", "bdat", "after-end"]

# Granularity of blocking waits, so that close() and kill_connections() are heard.
_POLL = 0.02
# A session that hears nothing from its client for this long is ended.
_IDLE_LIMIT = 30.0
# How long a hang-up waits for the client to close its side.
_DRAIN_LIMIT = 2.0


class _Hangup(Exception):
    """The session is over (the client left, or the server decided to drop it)."""


@dataclass
class Message:
    """One message the server took in (it may still have dropped the connection
    before answering)."""

    connection: int
    mail_from: str
    mail_options: list[str]
    recipients: list[str]
    #: The message as stored: BDAT chunks joined, or the DATA payload un-stuffed
    #: without the final ".\r\n" (empty when the server does not store).
    data: bytes
    via: Literal["BDAT", "DATA"]
    #: The size of every BDAT chunk of the message, in order.
    chunk_sizes: list[int]
    #: DATA: the payload exactly as received, through ".\r\n"; BDAT: the chunks.
    wire: bytes
    size: int
    sha256: str


@dataclass
class Connection:
    """What the server saw on one connection."""

    number: int
    #: Every command line, with its CRLF (message data excluded).
    commands: list[bytes] = field(default_factory=list)
    #: ("C", a batch of bytes received) and ("S", a reply sent), in order.
    transcript: list[tuple[Literal["C", "S"], bytes]] = field(default_factory=list)
    open: bool = True
    quit: bool = False
    kill: bool = False

    def received(self) -> bytes:
        """Every byte the client sent on this connection."""
        return b"".join(data for side, data in self.transcript if side == "C")

    def rounds(self) -> list[bytes]:
        """The client's bytes between one answer of the server and the next: with
        pipelining, one element per round trip."""
        rounds: list[bytes] = []
        current: list[bytes] = []
        for side, data in self.transcript:
            if side == "C":
                current.append(data)
            elif current:
                rounds.append(b"".join(current))
                current = []
        if current:
            rounds.append(b"".join(current))
        return rounds

    def verbs(self) -> list[str]:
        return [line.split(b" ", 1)[0].strip().upper().decode() for line in self.commands]


class _Transaction:
    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.recipients: list[str] = []
        self.chunks: list[bytes] = []
        self.chunk_sizes: list[int] = []
        self.digest = hashlib.sha256()
        self.size = 0
        self.failed = False


class _Session:
    def __init__(self, server: BDATServer, sock: socket.socket, record: Connection) -> None:
        self.server = server
        self.sock = sock
        self.record = record
        self.buffer = bytearray()
        self.txn = _Transaction()

    # -- bytes in and out

    def _fill(self) -> None:
        deadline = time.monotonic() + _IDLE_LIMIT
        while True:
            if self.server._stopping.is_set() or self.record.kill:
                raise _Hangup
            if time.monotonic() > deadline:
                raise _Hangup
            self.sock.settimeout(_POLL)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                raise _Hangup from None
            if not data:
                raise _Hangup
            if self.server.settle:
                gathered = bytearray(data)
                with contextlib.suppress(OSError):
                    while select.select([self.sock], [], [], self.server.settle)[0]:
                        more = self.sock.recv(65536)
                        if not more:
                            break
                        gathered += more
                data = bytes(gathered)
            if self.server.store:
                self.server._note(self.record, "C", data)
            self.buffer += data
            return

    def readline(self) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            self._fill()
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def reply(self, *lines: str) -> None:
        data = "".join(f"{line}\r\n" for line in lines).encode()
        self.server._note(self.record, "S", data)
        self.sock.settimeout(_DRAIN_LIMIT)
        try:
            self.sock.sendall(data)
        except OSError:
            raise _Hangup from None

    def hangup(self) -> NoReturn:
        """Close without a word: FIN, then wait (bounded) for the client to close."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _DRAIN_LIMIT
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and not self.server._stopping.is_set():
                self.sock.settimeout(_POLL)
                try:
                    if not self.sock.recv(65536):
                        break
                except TimeoutError:
                    continue
        raise _Hangup

    def abort(self) -> NoReturn:
        """Close at once with RST, unread data and all: the client's next write fails
        (a graceful hang-up would let it finish sending its message)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        raise _Hangup

    # -- the conversation

    def run(self) -> None:
        server = self.server
        self.reply(f"220 {server.name} {'LMTP' if server.lmtp else 'ESMTP'} ready")
        while True:
            line = self.readline()
            with server._lock:
                self.record.commands.append(line)
            words = line.decode("utf-8", "replace").strip().split()
            verb = words[0].upper() if words else ""
            if server._take(server.close_with_421, verb):
                self.reply("421 4.3.2 Service shutting down")
                self.hangup()
            handler = getattr(self, f"do_{verb.lower()}", None) if verb.isalpha() else None
            if handler is None:
                self.reply("500 5.5.2 Command unrecognized")
            else:
                handler(words[1:])

    def do_ehlo(self, args: list[str]) -> None:
        if self.server.lmtp:
            self.reply("500 5.5.1 This is LMTP: say LHLO")
            return
        self._greet()

    def do_lhlo(self, args: list[str]) -> None:
        if not self.server.lmtp:
            self.reply("500 5.5.1 This is SMTP: say EHLO")
            return
        self._greet()

    def _greet(self) -> None:
        server = self.server
        features = [server.name, "8BITMIME", "ENHANCEDSTATUSCODES"]
        if server.pipelining:
            features.append("PIPELINING")
        if server.size is not None:
            features.append(f"SIZE {server.size}")
        if server.chunking:
            features.append("CHUNKING")
        features.extend(server.extra_features)
        self.txn = _Transaction()
        self.reply(
            *(f"250{'-' if n < len(features) - 1 else ' '}{f}" for n, f in enumerate(features))
        )

    def do_helo(self, args: list[str]) -> None:
        self.txn = _Transaction()
        self.reply(f"250 {self.server.name}")

    def do_noop(self, args: list[str]) -> None:
        self.reply("250 2.0.0 Ok")

    def do_rset(self, args: list[str]) -> None:
        self.txn = _Transaction()
        self.reply("250 2.0.0 Ok")

    def do_quit(self, args: list[str]) -> None:
        with self.server._lock:
            self.record.quit = True
        self.reply("221 2.0.0 Bye")
        raise _Hangup

    def do_mail(self, args: list[str]) -> None:
        server = self.server
        if server._take(server.drops, "mail"):
            self.hangup()
        if self.txn.mail_from is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return
        if not args or not args[0].upper().startswith("FROM:<") or not args[0].endswith(">"):
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        options = args[1:]
        for option in options:
            keyword, _, value = option.partition("=")
            if keyword.upper() == "SIZE" and server.size is not None and int(value) > server.size:
                self.reply("552 5.3.4 Message size exceeds fixed limit")
                return
        if server.mail_reply is not None:
            self.reply(server.mail_reply)
            return
        self.txn = _Transaction()
        self.txn.mail_from = args[0][6:-1]
        self.txn.mail_options = options
        self.reply("250 2.1.0 Ok")

    def do_rcpt(self, args: list[str]) -> None:
        server = self.server
        if self.txn.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not args or not args[0].upper().startswith("TO:<") or not args[0].endswith(">"):
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        address = args[0][4:-1]
        refusal = server.rcpt_replies.get(address)
        if refusal is not None:
            self.reply(refusal)
            return
        if server.rcpt_limit is not None and len(self.txn.recipients) >= server.rcpt_limit:
            self.reply("452 4.5.3 Error: too many recipients")
            return
        self.txn.recipients.append(address)
        self.reply("250 2.1.5 Ok")

    def do_bdat(self, args: list[str]) -> None:
        server = self.server
        if not args or not args[0].isdigit() or len(args) > 2:
            self.reply("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        last = len(args) == 2
        if last and args[1].upper() != "LAST":
            self.reply("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        if not server.chunking:
            self.reply("502 5.5.1 BDAT not offered")
            return
        if server._take(server.drops, "bdat"):
            self.hangup()
        size = int(args[0])
        # RFC 3030 section 2: the chunk is read (and maybe discarded) whatever is said.
        chunk = self.read_exactly(size)
        txn = self.txn
        number = len(txn.chunk_sizes) + 1
        if txn.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not txn.recipients:
            self.reply("554 5.5.1 Error: no valid recipients")
            self.txn = _Transaction() if last else txn
            return
        if txn.failed:
            self.reply("503 5.5.1 Error: the transaction has already failed")
            self.txn = _Transaction() if last else txn
            return
        refusal = server.chunk_replies.get(number)
        if refusal is not None:
            txn.failed = True
            txn.chunk_sizes.append(size)
            self.reply(refusal)
            if last:
                self.txn = _Transaction()
            return
        txn.chunk_sizes.append(size)
        txn.size += size
        txn.digest.update(chunk)
        if server.store:
            txn.chunks.append(chunk)
        if not last:
            self.reply(f"250 2.0.0 {size} octets received")
            return
        data = b"".join(txn.chunks)
        self._end_of_data("BDAT", data, data)

    def do_data(self, args: list[str]) -> None:
        server = self.server
        txn = self.txn
        if server._take(server.drops, "data-command"):
            self.hangup()
        if txn.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not txn.recipients:
            self.reply("554 5.5.1 Error: no valid recipients")
            return
        if txn.chunk_sizes:
            self.reply("503 5.5.1 Error: DATA in a BDAT transaction")
            return
        if server.data_command_reply is not None:
            self.reply(server.data_command_reply)
            return
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        wire: list[bytes] = []
        content: list[bytes] = []
        while True:
            line = self.readline()
            if line == b".\r\n":
                break
            if server._take(server.drops, "mid-data"):
                self.abort()
            unstuffed = line[1:] if line.startswith(b".") else line
            txn.size += len(unstuffed)
            txn.digest.update(unstuffed)
            if server.store:
                wire.append(line)
                content.append(unstuffed)
        wire.append(b".\r\n")
        self._end_of_data("DATA", b"".join(content), b"".join(wire) if server.store else b"")

    def _end_of_data(self, via: Literal["BDAT", "DATA"], data: bytes, wire: bytes) -> None:
        server = self.server
        txn, self.txn = self.txn, _Transaction()
        assert txn.mail_from is not None
        message = Message(
            connection=self.record.number,
            mail_from=txn.mail_from,
            mail_options=txn.mail_options,
            recipients=txn.recipients,
            data=data,
            via=via,
            chunk_sizes=txn.chunk_sizes,
            wire=wire,
            size=txn.size,
            sha256=txn.digest.hexdigest(),
        )
        with server._lock:
            server.messages.append(message)
        if server._take(server.drops, "after-end"):
            self.hangup()
        while not server._release.wait(_POLL):
            if server._stopping.is_set() or self.record.kill:
                raise _Hangup
        if server.final_reply_delay:
            time.sleep(server.final_reply_delay)
        if server.lmtp:
            self.reply(
                *(
                    server.lmtp_replies.get(address, f"250 2.1.5 <{address}> delivered")
                    for address in txn.recipients
                )
            )
        else:
            self.reply(server.final_reply.format(number=len(server.messages)))


class BDATServer:
    """The server; use it as a context manager (``close()`` re-raises its failures)."""

    def __init__(
        self,
        *,
        pipelining: bool = True,
        chunking: bool = True,
        size: int | None = 1_000_000_000,
        lmtp: bool = False,
        extra_features: tuple[str, ...] = (),
        store: bool = True,
        settle: float = 0.0,
        host: str = "127.0.0.1",
        name: str = "bdat.test",
    ) -> None:
        self.pipelining = pipelining
        self.chunking = chunking
        self.size = size
        self.lmtp = lmtp
        self.extra_features = extra_features
        #: False: keep no data and no transcript (only sizes and hashes), so that
        #: the server adds nothing to a memory measurement of the client.
        self.store = store
        self.settle = settle
        self.name = name

        # What the test can arm; a reply is a whole line such as "550 5.1.1 No".
        self.mail_reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}
        #: Answer 452 to every RCPT after this many accepted in one transaction.
        self.rcpt_limit: int | None = None
        #: The reply to the n-th (from 1) BDAT chunk of a transaction, instead of 250.
        self.chunk_replies: dict[int, str] = {}
        self.data_command_reply: str | None = None
        self.final_reply = "250 2.0.0 Ok: queued as Q{number}"
        #: LMTP: the reply for a recipient after the data (default 250).
        self.lmtp_replies: dict[str, str] = {}
        #: verb -> how many more times to answer it with 421 and hang up.
        self.close_with_421: dict[str, int] = {}
        #: DropPoint -> how many more times to hang up there without a reply.
        self.drops: dict[str, int] = {}
        self.final_reply_delay = 0.0

        self.messages: list[Message] = []
        self.connections: list[Connection] = []
        self.open_now = 0
        self.peak_open = 0
        self.errors: list[BaseException] = []

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._release = threading.Event()
        self._release.set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((host, 0), backlog=128)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def __repr__(self) -> str:
        return (
            f"<BDATServer {self.host}:{self.port} opened={self.opened} open={self.open_now} "
            f"messages={len(self.messages)}>"
        )

    # -- controls

    def drop(self, point: DropPoint, times: int = 1) -> None:
        """Hang up without a reply at ``point``, the next ``times`` times."""
        with self._lock:
            self.drops[point] = self.drops.get(point, 0) + times

    def hold_final_replies(self) -> None:
        """Keep back every reply to the end of the data until release_final_replies()."""
        self._release.clear()

    def release_final_replies(self) -> None:
        self._release.set()

    def kill_connections(self) -> None:
        """Hang up every open connection (as a server ending idle sessions does)."""
        with self._lock:
            for connection in self.connections:
                connection.kill = True

    def _take(self, counters: dict[str, int], key: str) -> bool:
        """Use up one of ``counters[key]``; whether there was one."""
        with self._lock:
            left = counters.get(key, 0)
            if left <= 0:
                return False
            counters[key] = left - 1
            return True

    def _note(self, record: Connection, side: Literal["C", "S"], data: bytes) -> None:
        with self._lock:
            record.transcript.append((side, data))

    # -- what happened

    @property
    def opened(self) -> int:
        """Connections ever accepted."""
        with self._lock:
            return len(self.connections)

    @property
    def quits(self) -> int:
        with self._lock:
            return sum(connection.quit for connection in self.connections)

    def commands(self) -> list[bytes]:
        """Every command line of every connection, connection after connection."""
        with self._lock:
            return [line for connection in self.connections for line in connection.commands]

    # -- threads

    def _accept_loop(self) -> None:
        self._listener.settimeout(_POLL)
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                record = Connection(len(self.connections) + 1)
                self.connections.append(record)
                self.open_now += 1
                self.peak_open = max(self.peak_open, self.open_now)
            thread = threading.Thread(target=self._serve, args=(sock, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, record: Connection) -> None:
        session = _Session(self, sock, record)
        try:
            session.run()
        except _Hangup:
            pass
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                record.open = False
                self.open_now -= 1

    def close(self) -> None:
        self._stopping.set()
        self._release.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(5)
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> BDATServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def normalised(body: bytes) -> bytes:
    """What a client must transmit of ``body`` (before any dot-stuffing): every bare
    CR and bare LF as CRLF, and a CRLF at the end of a message that lacks one."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text


def dot_stuffed(text: bytes) -> bytes:
    """``text`` (already normalised) as a DATA payload, through the final dot."""
    return re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (the server works in its own threads)."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 (set by server threads, not tasks)
            await anyio.sleep(0.005)
