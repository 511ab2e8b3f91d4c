"""The byte transport under the client: what it may do, and its anyio implementation.

It knows nothing of SMTP. It connects (TCP with happy eyeballs, Unix sockets,
implicit TLS), reads, writes, upgrades a plaintext stream to TLS in place, and
closes, each bounded by the timeout. Every anyio, OS and ssl error is translated
in ``_translate_errors`` into the exception users catch (after httpcore's
``_backends/anyio.py``).

There are two implementations of ``Transport``, chosen when connecting: under
asyncio, ``_asyncio_transport.AsyncioTransport`` drives an ``asyncio.Protocol``
directly (a reply costs one future instead of anyio's checkpoints and wrappers,
which were most of the client's time per message); under any other backend (trio),
``AnyioTransport`` here does the work through anyio's streams.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import math
import os
import select
import ssl
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NoReturn, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from ._proxy import Proxy, open_stream
from .errors import (
    SMTPCertificateError,
    SMTPConnectError,
    SMTPException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)

__all__ = ["AnyioTransport", "Transport", "running_on_asyncio"]

_READ_SIZE = 65536
# A peer that is gone may never answer close_notify: do not wait for it long.
_CLOSE_TIMEOUT = 2.0


def _translated(exc: BaseException, doing: str, *, connecting: bool = False) -> Exception | None:
    """Our exception for an anyio, OS or ssl one; None for anything else."""
    if isinstance(exc, SMTPException):
        return None  # ours already (an OSError too, through smtplib's)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SMTPCertificateError(
            f"certificate verification failed while {doing}: {exc.verify_message or exc}"
        )
    if isinstance(exc, ssl.SSLError):
        return SMTPTLSError(f"TLS failed while {doing}: {exc}")
    if isinstance(exc, anyio.EndOfStream | anyio.IncompleteRead):
        return SMTPServerDisconnected(f"connection closed by the server while {doing}")
    if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            return _translated(cause, doing)
        detail = f": {cause}" if cause else ""
        return SMTPServerDisconnected(f"connection lost while {doing}{detail}")
    if isinstance(exc, TimeoutError):
        return None  # the caller knows which timeout it was
    if isinstance(exc, OSError):
        if connecting:
            return SMTPConnectError(-1, f"{doing} failed: {exc}")
        return SMTPServerDisconnected(f"connection lost while {doing}: {exc}")
    return None


def _raise_translated(exc: Exception, doing: str) -> NoReturn:
    ours = _translated(exc, doing)
    if ours is None:
        raise exc
    raise ours from exc


@contextlib.contextmanager
def _translate_errors(
    doing: str, timeout: float | None, *, connecting: bool = False
) -> Iterator[None]:
    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError as exc:
        raise SMTPTimeoutError(f"timed out after {timeout} s while {doing}") from exc
    except Exception as exc:
        ours = _translated(exc, doing, connecting=connecting)
        if ours is None:
            raise
        raise ours from exc


_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _root_causes(exc: OSError) -> list[OSError]:
    """The errors behind anyio's "All connection attempts failed"."""
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return [cause]
    if isinstance(cause, BaseExceptionGroup):
        found = [error for error in cause.exceptions if isinstance(error, OSError)]
        if found:
            return found
    return [exc]


def running_on_asyncio() -> bool:
    """Whether the current task runs on asyncio (else trio, through anyio).

    ``AIOSMTP_TRANSPORT=anyio`` keeps the anyio streams on asyncio too.
    """
    if os.environ.get("AIOSMTP_TRANSPORT") == "anyio":
        return False
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Transport(abc.ABC):
    """A connected byte stream, plaintext or TLS: what the client may ask of it.

    Reads and writes happen inside a ``deadlines()`` block; each is bounded by the
    timeout it is given, and raises SMTPTimeoutError when that expires.
    """

    peer: str

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
    ) -> Transport:
        """Connect; with ``tls_context``, TLS starts at once (implicit TLS); with
        ``proxy``, through that proxy's tunnel."""
        return await _implementation().connect_tcp(
            host,
            port,
            timeout=timeout,
            source_address=source_address,
            tls_context=tls_context,
            server_hostname=server_hostname,
            proxy=proxy,
        )

    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float | None) -> Transport:
        return await _implementation().connect_unix(path, timeout=timeout)

    @property
    @abc.abstractmethod
    def is_tls(self) -> bool:
        raise NotImplementedError

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) on a TLS connection, else None: for
        SCRAM's tls-server-end-point channel binding (RFC 5929 section 4)."""
        return None

    @abc.abstractmethod
    def deadlines(self) -> contextlib.AbstractContextManager[None]:
        """A block in which each operation is bounded by its own timeout."""
        raise NotImplementedError

    @abc.abstractmethod
    def pause_deadline(self) -> None:
        """Lift the deadline of the last operation while the caller does other work
        in a deadlines() block (such as reading the next piece of a message)."""
        raise NotImplementedError

    @abc.abstractmethod
    def is_readable(self) -> bool:
        """Whether bytes (or the end of the stream) wait to be read, without waiting."""
        raise NotImplementedError

    @abc.abstractmethod
    async def receive(self, timeout: float | None, reported: float | None = None) -> bytes:
        """Read what has arrived; ``reported`` is the timeout to name on expiry when
        ``timeout`` is what remains of a longer one."""
        raise NotImplementedError

    @abc.abstractmethod
    async def send(self, data: bytes | memoryview, timeout: float | None) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None:
        """Upgrade this stream to TLS in place."""
        raise NotImplementedError

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close, waiting a bounded time even when cancelled."""
        raise NotImplementedError

    @abc.abstractmethod
    async def abort(self) -> None:
        """Close at once, without waiting for the peer."""
        raise NotImplementedError


def _implementation() -> type[Transport]:
    """The Transport class for the backend the current task runs on."""
    if running_on_asyncio():
        from ._asyncio_transport import AsyncioTransport

        return AsyncioTransport
    return AnyioTransport


class _Deadlines:
    """The context manager of ``AnyioTransport.deadlines()``; a class, not a generator,
    because it wraps every exchange of every message."""

    __slots__ = ("_scope", "_transport")

    def __init__(self, transport: AnyioTransport) -> None:
        self._transport = transport
        self._scope = anyio.CancelScope()

    def __enter__(self) -> None:
        self._scope.__enter__()
        self._transport._scopes.append(self._scope)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        transport = self._transport
        transport._scopes.remove(self._scope)
        # The scope swallows only the cancellation its own deadline caused.
        self._scope.__exit__(exc_type, exc, tb)
        if self._scope.cancelled_caught:
            raise SMTPTimeoutError(
                f"timed out after {transport._timeout} s while {transport._doing}"
            )


class AnyioTransport(Transport):
    """A Transport over an anyio byte stream: the one used under trio."""

    def __init__(self, stream: anyio.abc.ByteStream, peer: str) -> None:
        self._stream = stream
        self.peer = peer
        # Cancel scopes of the deadlines() blocks, innermost last. An operation
        # inside one moves that scope's deadline instead of opening a scope of its
        # own: a cancel scope per read and write was the costliest part of sending.
        self._scopes: list[anyio.CancelScope] = []
        self._doing = ""
        self._timeout: float | None = None

    def deadlines(self) -> _Deadlines:
        return _Deadlines(self)

    def pause_deadline(self) -> None:
        if self._scopes:
            self._scopes[-1].deadline = math.inf

    def _start(self, doing: str, timeout: float | None, reported: float | None = None) -> None:
        # Every read and write happens inside a deadlines() block (the client's I/O
        # guard): outside one it would have no timeout at all.
        assert self._scopes, "a read or write outside Transport.deadlines()"
        self._doing = doing
        self._timeout = timeout if reported is None else reported
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        self._scopes[-1].deadline = deadline

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
    ) -> AnyioTransport:
        if proxy is not None:
            return await cls._connect_through(
                proxy, host, port, timeout, source_address, tls_context, server_hostname
            )
        local_host, local_port = source_address if source_address else (None, 0)
        kwargs: dict[str, Any] = {}
        if local_host:
            kwargs["local_host"] = local_host
        if local_port:
            kwargs["local_port"] = local_port
        doing = f"connecting to {host}:{port}"
        with _translate_errors(doing, timeout, connecting=True):
            try:
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port, **kwargs)
            except TypeError as exc:  # an anyio that predates local_port
                raise ValueError(
                    f"cannot bind the source port {local_port}: this anyio cannot"
                ) from exc
            except OSError as exc:
                causes = _root_causes(exc)
                if local_port and any(cause.errno in _BIND_ERRORS for cause in causes):
                    raise ValueError(
                        f"cannot bind the source address {source_address}: {causes[0]}"
                    ) from exc
                if len(causes) == 1 and causes[0] is not exc:
                    raise causes[0] from exc
                raise
        transport = cls(stream, f"{host}:{port}")
        if tls_context is not None:
            await transport.start_tls(tls_context, server_hostname or host, timeout)
        return transport

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
    ) -> AnyioTransport:
        doing = f"connecting to {host}:{port} through the proxy {proxy}"
        with _translate_errors(doing, timeout, connecting=True):
            stream = await open_stream(
                proxy, host, port, timeout=timeout, source_address=source_address
            )
        transport = cls(stream, f"{host}:{port}")
        if tls_context is not None:
            # The name to verify is the server's, never the proxy's.
            await transport.start_tls(tls_context, server_hostname or host, timeout)
        return transport

    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float | None) -> AnyioTransport:
        with _translate_errors(f"connecting to {path}", timeout, connecting=True):
            stream = await anyio.connect_unix(path)
        return cls(stream, path)

    @property
    def is_tls(self) -> bool:
        return isinstance(self._stream, TLSStream)

    def peer_certificate(self) -> bytes | None:
        ssl_object = self._stream.extra(TLSAttribute.ssl_object, None)
        return None if ssl_object is None else ssl_object.getpeercert(binary_form=True)

    def is_readable(self) -> bool:
        if self.is_tls:
            # Readable bytes in the kernel may be TLS records with no data in them (a
            # TLS 1.3 session ticket), and telling would mean reading: say nothing.
            return False
        sock = self._stream.extra(SocketAttribute.raw_socket, None)
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True  # closed under us
        return bool(readable)

    async def receive(self, timeout: float | None, reported: float | None = None) -> bytes:
        if timeout is not None and timeout <= 0:
            raise SMTPTimeoutError(f"timed out after {reported} s while reading a reply")
        self._start("reading a reply", timeout, reported)
        try:
            return await self._stream.receive(_READ_SIZE)
        except Exception as exc:
            _raise_translated(exc, "reading a reply")

    async def send(self, data: bytes | memoryview, timeout: float | None) -> None:
        self._start("sending", timeout)
        try:
            # anyio's streams take any bytes-like object, though typed for bytes.
            await self._stream.send(cast(bytes, data))
        except Exception as exc:
            _raise_translated(exc, "sending")

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None:
        with _translate_errors("in the TLS handshake", timeout):
            try:
                # standard_compatible=False: many MTAs close without close_notify,
                # and that must not turn a finished session into an error.
                self._stream = await TLSStream.wrap(
                    self._stream,
                    server_side=False,
                    hostname=server_hostname,
                    ssl_context=context,
                    standard_compatible=False,
                )
            except BaseException:
                await self.abort()
                raise

    async def aclose(self) -> None:
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            with contextlib.suppress(Exception):
                await self._stream.aclose()
                return
        await self.abort()

    async def abort(self) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await anyio.aclose_forcefully(self._stream)
