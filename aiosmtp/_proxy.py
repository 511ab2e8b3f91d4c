"""Connecting through a SOCKS or HTTP CONNECT proxy.

Theory of operation: the proxy is a URL given to the client (``proxy=``), parsed and
checked when the client is built, before any I/O. Connecting then opens a tunnel
through the proxy to the SMTP server and hands the transport a socket (asyncio) or a
socket stream (anyio, under trio) that is already connected, end to end, to that
server; everything after it (the greeting, implicit TLS or STARTTLS, verified against
the server's name, never the proxy's) is the same as on a direct connection.

SOCKS 4, 4a, 5 and 5h are spoken by python-socks (the optional extra ``proxy``),
through its asyncio or its anyio backend, whichever the transport runs on. HTTP
CONNECT (RFC 9110 section 9.3.6) is done here, in a few lines, because SMTP servers
speak first: a greeting that follows the proxy's ``200`` in the same read must not be
lost, and python-socks reads the proxy's reply with one ``recv`` of up to 64 KiB and
drops whatever came with it. Here the reply is read without ever reading past its
end, so the greeting stays in the socket for the transport.

The proxy's password never appears in a log line, a repr or an exception message:
each names the proxy as ``scheme://host:port``.

Only the ``proxy=`` argument counts: ``ALL_PROXY``, ``HTTPS_PROXY`` and the like are
never read, so a library's mail never changes route because of a variable meant for
a web browser.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc

from .errors import SMTPConnectError, SMTPException

__all__ = ["Proxy", "open_socket", "open_stream", "parse_proxy"]

logger = logging.getLogger("aiosmtp.proxy")

#: The schemes understood, and for each whether the proxy resolves the server's
#: name (``h`` / ``a``: the name is sent to the proxy) or the client does.
_SCHEMES = {
    "socks5": False,
    "socks5h": True,
    "socks4": False,
    "socks4a": True,
    "http": True,
}
_EXTRA_HINT = "pip install 'aiosmtp[proxy]'"
# A reply to CONNECT longer than this is not a proxy talking.
_MAX_REPLY = 16384
_END_OF_HEADER = b"\r\n\r\n"


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL. Its repr and str never show the credentials."""

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def remote_dns(self) -> bool:
        """Whether the proxy, not the client, resolves the server's name."""
        return _SCHEMES[self.scheme]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __repr__(self) -> str:
        credentials = ", with credentials" if self.username is not None else ""
        return f"<Proxy {self}{credentials}>"


def parse_proxy(url: str | Proxy) -> Proxy:
    """Check a proxy URL; ValueError (before any I/O) for one that cannot be used.

    The messages name the URL without its credentials.
    """
    if isinstance(url, Proxy):
        return url
    if not isinstance(url, str):
        raise TypeError(f"proxy must be a URL string, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        # The message of urllib's error may quote the URL: do not repeat it.
        raise ValueError(f"invalid proxy URL ({_redacted(url)}): bad port or host") from None
    scheme = parts.scheme.lower()
    where = _redacted(url)
    if scheme not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ValueError(f"unknown proxy scheme {scheme!r} in {where}: use one of {known}")
    host = parts.hostname
    if not host:
        raise ValueError(f"the proxy URL {where} has no host")
    if port is None:
        raise ValueError(f"the proxy URL {where} has no port")
    if port == 0:
        raise ValueError(f"the proxy URL {where} has port 0")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"the proxy URL {where} has a path, query or fragment")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if not username and not password:
        username = password = None  # "socks5://@host:1080", "http://:@host:3128"
    if scheme.startswith("socks4") and password is not None:
        raise ValueError(f"SOCKS4 has no passwords (only a user id): {where}")
    if scheme.startswith("socks5") and username is not None:
        # RFC 1929: both fields are 1 to 255 bytes; python-socks would otherwise
        # quietly fall back to no authentication at all.
        if not username or not password:
            raise ValueError(f"SOCKS5 needs both a user name and a password: {where}")
        if len(username.encode()) > 255 or len(password.encode()) > 255:
            raise ValueError(f"SOCKS5 user names and passwords are at most 255 bytes: {where}")
    if scheme.startswith("socks") and not f"{username or ''}{password or ''}".isascii():
        # RFC 1928/1929 name no encoding, and python-socks sends ASCII only.
        raise ValueError(f"SOCKS user names and passwords must be ASCII: {where}")
    if scheme == "http" and username is not None and ":" in username:
        raise ValueError(f"an HTTP proxy user name cannot hold ':' (RFC 7617): {where}")
    proxy = Proxy(scheme, host, port, username, password if username is not None else None)
    if scheme != "http":
        _require_python_socks(proxy)
    return proxy


def _redacted(url: str) -> str:
    """The URL with everything up to its last ``@`` hidden: a password may hold a
    ``/`` or ``?`` that was not percent-encoded, so the authority's end is not known."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return "<proxy URL>" if "@" in url else repr(url)
    _, at, after = rest.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{after}"


def _require_python_socks(proxy: Proxy) -> None:
    try:
        import python_socks  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"a {proxy.scheme}:// proxy needs the python-socks package: {_EXTRA_HINT}"
        ) from exc


def _check_destination(host: str, port: int) -> None:
    if not host or any(char in host for char in "\r\n\0 \t/@"):
        raise ValueError(f"cannot ask a proxy for the host {host!r}")
    if not 0 < port < 65536:
        raise ValueError(f"cannot ask a proxy for the port {port}")


def _bind_failure(exc: BaseException, local_addr: tuple[str, int] | None) -> ValueError | None:
    """ValueError, as on a direct connection, where a given source port could not be
    bound; the OSError may be deep in a chain of causes or in an exception group."""
    from ._transport import _BIND_ERRORS

    if local_addr is None or not local_addr[1]:
        return None
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if isinstance(error, OSError) and error.errno in _BIND_ERRORS:
            return ValueError(f"cannot bind the source address {local_addr}: {error}")
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        if error.__cause__ is not None:
            pending.append(error.__cause__)
    return None


@contextlib.contextmanager
def _proxy_errors(
    proxy: Proxy, host: str, port: int, local_addr: tuple[str, int] | None
) -> Iterator[None]:
    """python-socks' errors as SMTPConnectError, naming the proxy and the reason.

    Its timeout (a TimeoutError) and OS errors other than its own go on to the
    transport's translation, as on a direct connection.
    """
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

    try:
        yield
    except (SMTPException, ProxyTimeoutError):
        raise
    except ProxyConnectionError as exc:
        bind_failure = _bind_failure(exc, local_addr)
        if bind_failure is not None:
            raise bind_failure from exc
        reason = getattr(exc.__cause__, "strerror", None) or exc.strerror or exc
        raise SMTPConnectError(-1, f"cannot connect to the proxy {proxy}: {reason}") from exc
    except ProxyError as exc:
        raise SMTPConnectError(
            -1, f"the proxy {proxy} did not open a tunnel to {host}:{port}: {exc}"
        ) from exc
    except (OSError, TimeoutError, ValueError):
        raise
    except Exception as exc:  # a proxy that hung up mid-handshake, or spoke nonsense
        detail = str(exc) or str(exc.__cause__ or "") or type(exc).__name__
        raise SMTPConnectError(
            -1, f"the proxy {proxy} failed while opening a tunnel to {host}:{port}: {detail}"
        ) from exc


def _limit(timeout: float | None) -> float:
    # python-socks turns "no timeout" into 60 s; the caller's own deadline (or none)
    # is what bounds the handshake.
    return math.inf if timeout is None else timeout + 1.0


def _local_address(source_address: tuple[str, int] | None) -> tuple[str, int] | None:
    if source_address and (source_address[0] or source_address[1]):
        return source_address[0] or "0.0.0.0", source_address[1]
    return None


def _log_connect(proxy: Proxy, host: str, port: int) -> None:
    logger.debug("connecting to %s:%d through the proxy %s", host, port, proxy)


# -- asyncio: a connected socket for loop.create_connection(sock=...) ------------------


async def open_socket(
    proxy: Proxy,
    host: str,
    port: int,
    *,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """A socket connected through the proxy to (host, port), for asyncio.

    Runs inside the caller's deadline; raises SMTPConnectError when the proxy is
    down, refuses, or rejects the credentials.
    """
    _check_destination(host, port)
    _log_connect(proxy, host, port)
    local_addr = _local_address(source_address)
    if proxy.scheme == "http":
        sock = await _asyncio_connect(proxy, local_addr)
        try:
            await _http_connect(proxy, host, port, *_asyncio_io(sock))
        except BaseException:
            sock.close()
            raise
        return sock

    import asyncio

    from python_socks.async_.asyncio import Proxy as SocksProxy

    socks = SocksProxy(
        _socks_type(proxy),
        proxy.host,
        proxy.port,
        proxy.username,
        proxy.password,
        rdns=proxy.remote_dns,
        loop=asyncio.get_running_loop(),
    )
    with _proxy_errors(proxy, host, port, local_addr):
        result: socket.socket = await socks.connect(
            host, port, timeout=_limit(timeout), local_addr=local_addr
        )
        return result


async def _asyncio_connect(proxy: Proxy, local_addr: tuple[str, int] | None) -> socket.socket:
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SMTPConnectError(-1, f"cannot resolve the proxy {proxy}: {exc}") from exc
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if local_addr is not None:
                sock.bind(local_addr)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            bind_failure = _bind_failure(exc, local_addr)
            if bind_failure is not None:
                raise bind_failure from exc
            errors.append(exc)
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    reason = errors[0].strerror or errors[0] if errors else "no address"
    raise SMTPConnectError(-1, f"cannot connect to the proxy {proxy}: {reason}")


def _asyncio_io(
    sock: socket.socket,
) -> tuple[Callable[[bytes], Awaitable[None]], Callable[[int], Awaitable[bytes]]]:
    import asyncio

    loop = asyncio.get_running_loop()

    async def send(data: bytes) -> None:
        await loop.sock_sendall(sock, data)

    async def receive(max_bytes: int) -> bytes:
        return await loop.sock_recv(sock, max_bytes)

    return send, receive


# -- anyio (trio): a connected socket stream for AnyioTransport --------------------------


async def open_stream(
    proxy: Proxy,
    host: str,
    port: int,
    *,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
) -> anyio.abc.SocketStream:
    """A socket stream connected through the proxy to (host, port), on anyio."""
    _check_destination(host, port)
    _log_connect(proxy, host, port)
    kwargs: dict[str, Any] = {}
    local_addr = _local_address(source_address)
    if local_addr is not None:
        kwargs["local_host"] = local_addr[0]
        if local_addr[1]:
            kwargs["local_port"] = local_addr[1]
    if proxy.scheme == "http":
        try:
            stream: anyio.abc.SocketStream = await anyio.connect_tcp(
                proxy.host, proxy.port, **kwargs
            )
        except OSError as exc:
            bind_failure = _bind_failure(exc, local_addr)
            if bind_failure is not None:
                raise bind_failure from exc
            reason = getattr(exc.__cause__, "strerror", None) or exc.strerror or exc
            raise SMTPConnectError(-1, f"cannot connect to the proxy {proxy}: {reason}") from exc
        try:
            await _http_connect(proxy, host, port, stream.send, _anyio_receive(stream))
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        return stream

    from python_socks.async_.anyio import Proxy as SocksProxy

    socks = SocksProxy(
        _socks_type(proxy),
        proxy.host,
        proxy.port,
        proxy.username,
        proxy.password,
        rdns=proxy.remote_dns,
    )
    with _proxy_errors(proxy, host, port, local_addr):
        tunnel: anyio.abc.SocketStream = await socks.connect(
            host, port, timeout=_limit(timeout), **kwargs
        )
        return tunnel


def _anyio_receive(stream: anyio.abc.SocketStream) -> Callable[[int], Awaitable[bytes]]:
    async def receive(max_bytes: int) -> bytes:
        try:
            return await stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""

    return receive


def _socks_type(proxy: Proxy) -> Any:
    from python_socks import ProxyType

    return ProxyType.SOCKS5 if proxy.scheme.startswith("socks5") else ProxyType.SOCKS4


# -- HTTP CONNECT (RFC 9110 section 9.3.6) -------------------------------------------------


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    """The CONNECT request for (host, port), with Basic credentials (RFC 7617)."""
    try:
        authority = f"[{ipaddress.IPv6Address(host)}]:{port}"
    except ValueError:
        authority = f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username is not None:
        token = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(token).decode('ascii')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def safe_read_size(received: bytes | bytearray) -> int:
    """How many bytes may be read without reading past the end of the reply's header.

    The end is CRLF CRLF: when the bytes so far end with the first k bytes of it,
    at least 4 - k more bytes are still the header's. Reading no more than that never
    takes a byte of the server's greeting from the socket, at the cost of a few
    reads for a reply that is only ever some dozens of bytes long.
    """
    for matched in (3, 2, 1):
        if received.endswith(_END_OF_HEADER[:matched]):
            return len(_END_OF_HEADER) - matched
    return len(_END_OF_HEADER)


def parse_connect_reply(header: bytes) -> tuple[int, str]:
    """The status code and reason of a CONNECT reply's header; ValueError if none."""
    status_line = header.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code_text, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code_text) != 3 or not code_text.isdigit():
        raise ValueError(f"not an HTTP reply: {status_line[:80]!r}")
    return int(code_text), reason.strip()


async def _http_connect(
    proxy: Proxy,
    host: str,
    port: int,
    send: Callable[[bytes], Awaitable[None]],
    receive: Callable[[int], Awaitable[bytes]],
) -> None:
    try:
        await send(connect_request(proxy, host, port))
        header = bytearray()
        while not header.endswith(_END_OF_HEADER):
            if len(header) > _MAX_REPLY:
                raise SMTPConnectError(
                    -1, f"the proxy {proxy} sent a reply header over {_MAX_REPLY} bytes"
                )
            chunk = await receive(safe_read_size(header))
            if not chunk:
                raise SMTPConnectError(
                    -1, f"the proxy {proxy} closed the connection before its reply to CONNECT"
                )
            header += chunk
            if not b"HTTP/".startswith(header[:5]):
                # Not an HTTP proxy (an SMTP server, say): do not wait for a blank line.
                break
    except (OSError, anyio.BrokenResourceError) as exc:
        if isinstance(exc, SMTPException):
            raise
        cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc
        raise SMTPConnectError(
            -1, f"the proxy {proxy} failed while opening a tunnel to {host}:{port}: {cause}"
        ) from exc
    try:
        code, reason = parse_connect_reply(bytes(header))
    except ValueError as exc:
        raise SMTPConnectError(-1, f"the proxy {proxy} answered CONNECT with {exc}") from None
    # RFC 9110 section 9.3.6: any 2xx means the tunnel is open.
    if not 200 <= code < 300:
        raise SMTPConnectError(
            -1,
            f"the proxy {proxy} did not open a tunnel to {host}:{port}: {code} {reason}".rstrip(),
        )
