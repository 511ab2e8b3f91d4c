"""The Transport under asyncio: an ``asyncio.Protocol`` driven directly.

Theory of operation: the event loop calls the protocol when bytes arrive, and
``receive()`` hands them over; only when nothing has arrived yet does it wait, on
one future, with one timer for its deadline. Writes go to the loop's transport at
once and wait only while the loop's write buffer is over its high-water mark, so
the next write never stacks a second copy of a large message. Everything else
(connecting, the TLS handshake, closing) is rare and goes through anyio, which is
just as correct and costs nothing that matters there.

The cancellation of the task (an anyio cancel scope, a timeout of the caller's)
arrives as ``CancelledError`` in the one await, and leaves the protocol clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import select
import socket
import ssl
from typing import cast

import anyio

from ._proxy import Proxy, open_socket
from ._transport import (
    _BIND_ERRORS,
    _CLOSE_TIMEOUT,
    Transport,
    _translate_errors,
    _translated,
)
from .errors import SMTPServerDisconnected, SMTPTimeoutError, SMTPTLSError

__all__ = ["AsyncioTransport"]

# Past this many unread bytes the loop stops reading from the socket, so that a
# server that floods a client that is not reading fills the kernel's buffers, not
# the client's memory.
_MAX_BUFFERED = 1 << 20
# RFC 8305's recommended delay between connection attempts (as anyio uses).
_HAPPY_EYEBALLS_DELAY = 0.25
_TIMED_OUT = "timed out"


class _StreamProtocol(asyncio.Protocol):
    """Collects what the loop reads and wakes the one task waiting for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.received: list[bytes] = []
        self.buffered = 0
        self.eof = False
        # Set once the connection is gone; the error, if it ended with one.
        self.lost = False
        self.lost_error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.tls = False
        self.reader: asyncio.Future[str | None] | None = None
        self.drainer: asyncio.Future[str | None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are no asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.buffered += len(data)
        if self.buffered > _MAX_BUFFERED and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        # Keep writing to a server that only closed its side, as over anyio's
        # streams: what it makes of the rest of the message is its reply's (or its
        # silence's) to tell. TLS cannot stay half open.
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_error = exc
        self._wake_reader()
        self._wake_drainer()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_drainer()

    def _wake_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _wake_drainer(self) -> None:
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    def take_received(self) -> bytes:
        received = self.received
        data = received[0] if len(received) == 1 else b"".join(received)
        received.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data


class _NoDeadlines:
    """Each operation here arms its own timer; the block itself has nothing to do."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_DEADLINES = _NoDeadlines()


class AsyncioTransport(Transport):
    """A Transport over an asyncio transport and protocol."""

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol, peer: str) -> None:
        self._transport = transport
        self._protocol = protocol
        self.peer = peer
        self._tls = False
        # One timer serves every wait: it is armed for the current wait's deadline
        # only when none is pending that would fire sooner, and on firing either
        # expires the wait or re-arms for its (later) deadline. Deadlines mostly
        # move later, so a message costs no timer of its own.
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def _set_deadline(self, timeout: float | None) -> None:
        if timeout is None:
            self._deadline = math.inf
            return
        loop = self._protocol.loop
        deadline = self._deadline = loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        protocol = self._protocol
        waiter = protocol.reader or protocol.drainer
        if waiter is None or self._deadline == math.inf:
            return
        loop = protocol.loop
        if loop.time() >= self._deadline:
            if not waiter.done():
                waiter.set_result(_TIMED_OUT)
        else:
            self._timer = loop.call_at(self._deadline, self._on_timer)

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    @classmethod
    async def connect_tcp(
        cls,
        host: str,
        port: int,
        *,
        timeout: float | None,
        source_address: tuple[str, int] | None = None,
        tls_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        proxy: Proxy | None = None,
    ) -> AsyncioTransport:
        if proxy is not None:
            return await cls._connect_through(
                proxy, host, port, timeout, source_address, tls_context, server_hostname
            )
        loop = asyncio.get_running_loop()
        local_addr = None
        if source_address and (source_address[0] or source_address[1]):
            local_addr = (source_address[0] or "0.0.0.0", source_address[1])
        protocol = _StreamProtocol(loop)
        doing = f"connecting to {host}:{port}"
        with _translate_errors(doing, timeout, connecting=True):
            try:
                if isinstance(loop, asyncio.BaseEventLoop):
                    transport, _ = await loop.create_connection(
                        lambda: protocol,
                        host,
                        port,
                        local_addr=local_addr,
                        happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                    )
                else:
                    # Other loops (uvloop) have no Happy Eyeballs option (RFC 8305).
                    transport, _ = await loop.create_connection(
                        lambda: protocol, host, port, local_addr=local_addr
                    )
            except OSError as exc:
                if local_addr and local_addr[1] and exc.errno in _BIND_ERRORS:
                    raise ValueError(
                        f"cannot bind the source address {source_address}: {exc}"
                    ) from exc
                raise
        connected = cls(transport, protocol, f"{host}:{port}")
        if tls_context is not None:
            await connected.start_tls(tls_context, server_hostname or host, timeout)
        return connected

    @classmethod
    async def _connect_through(
        cls,
        proxy: Proxy,
        host: str,
        port: int,
        timeout: float | None,
        source_address: tuple[str, int] | None,
        tls_context: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> AsyncioTransport:
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol(loop)
        doing = f"connecting to {host}:{port} through the proxy {proxy}"
        with _translate_errors(doing, timeout, connecting=True):
            sock = await open_socket(
                proxy, host, port, timeout=timeout, source_address=source_address
            )
            try:
                transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
            except BaseException:
                sock.close()
                raise
        assert isinstance(transport, asyncio.Transport)
        connected = cls(transport, protocol, f"{host}:{port}")
        if tls_context is not None:
            # The name to verify is the server's, never the proxy's.
            await connected.start_tls(tls_context, server_hostname or host, timeout)
        return connected

    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float | None) -> AsyncioTransport:
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol(loop)
        with _translate_errors(f"connecting to {path}", timeout, connecting=True):
            transport, _ = await loop.create_unix_connection(lambda: protocol, path)
        return cls(transport, protocol, path)

    @property
    def is_tls(self) -> bool:
        return self._tls

    def peer_certificate(self) -> bytes | None:
        ssl_object = self._transport.get_extra_info("ssl_object") if self._tls else None
        return None if ssl_object is None else ssl_object.getpeercert(binary_form=True)

    def deadlines(self) -> _NoDeadlines:
        return _NO_DEADLINES

    def pause_deadline(self) -> None:
        return None

    def is_readable(self) -> bool:
        protocol = self._protocol
        if protocol.received or protocol.eof or protocol.lost:
            return True
        if self._tls:
            # The kernel's bytes may be TLS records with no data in them (a TLS 1.3
            # session ticket); the loop reads and decrypts them soon enough anyway.
            return False
        # Bytes the loop has not picked up yet still wait in the kernel.
        sock: socket.socket | None = self._transport.get_extra_info("socket")
        if sock is None:
            return True  # the transport is closing
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True  # closed under us
        return bool(readable)

    def _lost(self, doing: str) -> Exception:
        protocol = self._protocol
        error = protocol.lost_error
        if error is None:
            if protocol.eof or protocol.lost:
                return SMTPServerDisconnected(f"connection closed by the server while {doing}")
            return SMTPServerDisconnected(f"connection lost while {doing}")
        ours = _translated(error, doing)
        if ours is None:
            ours = SMTPServerDisconnected(f"connection lost while {doing}: {error}")
        ours.__cause__ = error
        return ours

    async def receive(self, timeout: float | None, reported: float | None = None) -> bytes:
        protocol = self._protocol
        if protocol.received:
            return protocol.take_received()
        if protocol.eof or protocol.lost:
            raise self._lost("reading a reply")
        if timeout is not None and timeout <= 0:
            raise SMTPTimeoutError(f"timed out after {reported} s while reading a reply")
        waiter: asyncio.Future[str | None] = protocol.loop.create_future()
        protocol.reader = waiter
        self._set_deadline(timeout)
        try:
            outcome = await waiter
        finally:
            protocol.reader = None
        if protocol.received:
            return protocol.take_received()
        if outcome is _TIMED_OUT:
            limit = timeout if reported is None else reported
            raise SMTPTimeoutError(f"timed out after {limit} s while reading a reply")
        raise self._lost("reading a reply")

    async def send(self, data: bytes | memoryview, timeout: float | None) -> None:
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise self._lost("sending")
        self._transport.write(data)
        if not protocol.writing_paused:
            return
        # The loop holds more than its high-water mark: wait until it has drained.
        waiter: asyncio.Future[str | None] = protocol.loop.create_future()
        protocol.drainer = waiter
        self._set_deadline(timeout)
        try:
            outcome = await waiter
        finally:
            protocol.drainer = None
        if protocol.lost:
            raise self._lost("sending")
        if outcome is _TIMED_OUT:
            raise SMTPTimeoutError(f"timed out after {timeout} s while sending")

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None:
        protocol = self._protocol
        try:
            if protocol.received:
                # Plaintext that came before the handshake must never be read as if
                # it had come through TLS (CVE-2011-0411).
                raise SMTPTLSError("plaintext bytes received before the TLS handshake")
            if protocol.lost or protocol.eof:
                raise self._lost("in the TLS handshake")
            loop = protocol.loop
            with _translate_errors("in the TLS handshake", timeout):
                upgraded = await loop.start_tls(
                    self._transport,
                    protocol,
                    context,
                    server_side=False,
                    server_hostname=server_hostname,
                )
            if upgraded is None:
                raise SMTPServerDisconnected("connection lost in the TLS handshake")
        except BaseException:
            await self.abort()
            raise
        self._transport = upgraded
        protocol.transport = upgraded
        protocol.tls = self._tls = True

    async def aclose(self) -> None:
        self._stop_timer()
        closed = self._protocol.closed
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            with contextlib.suppress(Exception):
                self._transport.close()
                await closed
                return
        await self.abort()

    async def abort(self) -> None:
        self._stop_timer()
        with contextlib.suppress(Exception):
            self._transport.abort()
