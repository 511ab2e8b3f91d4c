"""Sending through SOCKS 4/4a/5/5h and HTTP CONNECT proxies (``proxy=``).

The proxy here is a small one written for these tests on anyio, run in the test's
own event loop on loopback: it speaks SOCKS4(a), SOCKS5 (RFC 1928, with RFC 1929
user/password) and HTTP CONNECT (with Basic credentials), and records every tunnel
it opens: who asked, for which destination, and its own address toward the server.
A connection went through the proxy when the server saw exactly that address.
pproxy, the obvious ready-made one, does not start where uvloop is installed and
remembers an authenticated client address for a day (so a wrong password would
pass after a right one); a test proxy also lets a test resolve names that only the
proxy knows, and send the server's greeting in the same segment as its own reply.
"""

from __future__ import annotations

import base64
import contextlib
import email.message
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pytest
import trustme
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

import aiosmtp
from aiosmtp import LMTP, SMTP, SMTP_SSL, SMTPConnectError, SMTPPool, SMTPTimeoutError
from aiosmtp._proxy import (
    Proxy,
    connect_request,
    parse_connect_reply,
    parse_proxy,
    safe_read_size,
)
from aiosmtp.errors import SMTPCertificateError

from .scripted import MiniSMTP, ScriptedServers, call, greet, recv_until
from .servers import (
    USERS,
    EventRecordingHandler,
    RunningServer,
    aiosmtpd_server,
    free_port,
    silent_listener,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 5.0
#: A bound on every test as a whole.
LIMIT = 20.0
#: A name that only the test proxy can resolve (to 127.0.0.1).
PROXIED_NAME = "smtp.proxied.test"
PROXY_USER = "proxy-user"
PROXY_PASSWORD = "s3cret-Pr0xy-password"
#: HTTP Basic credentials are UTF-8 (RFC 7617); SOCKS ones are ASCII.
HTTP_PASSWORD = "s3cret-Pr0xy-pässwörd"


# -- the test proxy ------------------------------------------------------------------


@dataclass
class Tunnel:
    scheme: str
    #: The client's address, as the proxy saw it.
    client: tuple[str, int]
    #: The destination the client asked for, before the proxy resolved it.
    target: tuple[str, int]
    #: The proxy's own address toward the server: the peer the server sees.
    upstream: tuple[str, int]


@dataclass
class LoopbackProxy:
    """SOCKS4(a), SOCKS5 and HTTP CONNECT on one loopback port."""

    username: str | None = None
    password: str | None = None
    #: Names only the proxy resolves.
    names: dict[str, str] = field(default_factory=lambda: {PROXIED_NAME: "127.0.0.1"})
    #: Send the reply to the handshake in the same segment as the server's greeting
    #: (and, for HTTP, the status line apart from the rest of the header).
    coalesce: bool = False
    #: Hang up after the client's first byte, mid-handshake.
    hang_up: bool = False
    port: int = 0
    tunnels: list[Tunnel] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, scheme: str, *, user: str | None = None, password: str | None = None) -> str:
        user = self.username if user is None else user
        password = self.password if password is None else password
        if user is None:
            return f"{scheme}://{self.url_host}"
        if password is None or scheme.startswith("socks4"):
            return f"{scheme}://{user}@{self.url_host}"
        return f"{scheme}://{user}:{password}@{self.url_host}"

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            reader = BufferedByteReceiveStream(client)
            with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead, OSError):
                first = await reader.receive_exactly(1)
                if self.hang_up:
                    self.refusals.append("hung up")
                elif first == b"\x05":
                    await self._socks5(client, reader)
                elif first == b"\x04":
                    await self._socks4(client, reader)
                else:
                    await self._http(client, reader, first)

    async def _connect(self, host: str, port: int) -> anyio.abc.SocketStream | None:
        try:
            return await anyio.connect_tcp(self.names.get(host, host), port)
        except OSError:
            self.refusals.append(f"cannot reach {host}:{port}")
            return None

    async def _socks5(
        self, client: anyio.abc.SocketStream, reader: BufferedByteReceiveStream
    ) -> None:
        count = (await reader.receive_exactly(1))[0]
        methods = await reader.receive_exactly(count)
        wanted = 0x00 if self.username is None else 0x02
        if wanted not in methods:
            self.refusals.append("socks5: no acceptable method")
            await client.send(b"\x05\xff")
            return
        await client.send(bytes([5, wanted]))
        if wanted == 0x02:
            version = (await reader.receive_exactly(1))[0]
            user = await reader.receive_exactly((await reader.receive_exactly(1))[0])
            password = await reader.receive_exactly((await reader.receive_exactly(1))[0])
            expected = (str(self.username).encode(), str(self.password).encode())
            if version != 1 or (user, password) != expected:
                self.refusals.append("socks5: bad credentials")
                await client.send(b"\x01\x01")
                return
            await client.send(b"\x01\x00")
        _, command, _, kind = tuple(await reader.receive_exactly(4))
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.receive_exactly(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.receive_exactly(16)))
        else:
            host = (await reader.receive_exactly((await reader.receive_exactly(1))[0])).decode()
        port = int.from_bytes(await reader.receive_exactly(2), "big")
        failure = b"\x00\x01" + bytes(6)
        if command != 1:
            await client.send(b"\x05\x07" + failure)
            return
        upstream = await self._connect(host, port)
        if upstream is None:
            await client.send(b"\x05\x05" + failure)  # connection refused
            return
        bound_host, bound_port = _address(upstream)
        reply = (
            b"\x05\x00\x00\x01"
            + ipaddress.IPv4Address(bound_host).packed
            + int(bound_port).to_bytes(2, "big")
        )
        await self._relay("socks5", client, reader, upstream, (host, port), [reply])

    async def _socks4(
        self, client: anyio.abc.SocketStream, reader: BufferedByteReceiveStream
    ) -> None:
        command = (await reader.receive_exactly(1))[0]
        port = int.from_bytes(await reader.receive_exactly(2), "big")
        address = await reader.receive_exactly(4)
        user = (await reader.receive_until(b"\x00", 256)).decode()
        host = str(ipaddress.IPv4Address(address))
        if address[:3] == b"\0\0\0" and address[3]:  # SOCKS4a: the name follows
            host = (await reader.receive_until(b"\x00", 256)).decode()
        if command != 1 or (self.username is not None and user != self.username):
            self.refusals.append("socks4: refused")
            await client.send(b"\x00\x5b" + bytes(6))
            return
        upstream = await self._connect(host, port)
        if upstream is None:
            await client.send(b"\x00\x5b" + bytes(6))
            return
        await self._relay(
            "socks4", client, reader, upstream, (host, port), [b"\x00\x5a" + bytes(6)]
        )

    async def _http(
        self, client: anyio.abc.SocketStream, reader: BufferedByteReceiveStream, first: bytes
    ) -> None:
        header = (first + await reader.receive_until(b"\r\n\r\n", 16384)).decode()
        request_line, *header_lines = header.split("\r\n")
        method, authority, _ = request_line.split(" ")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method != "CONNECT":
            await client.send(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {token}":
                self.refusals.append("http: bad credentials")
                await client.send(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                )
                return
        host, _, port_text = authority.rpartition(":")
        host = host.strip("[]")
        upstream = await self._connect(host, int(port_text))
        if upstream is None:
            await client.send(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        replies = [b"HTTP/1.1 200 Connection established\r\n", b"Via: 1.1 test\r\n\r\n"]
        await self._relay("http", client, reader, upstream, (host, int(port_text)), replies)

    async def _relay(
        self,
        scheme: str,
        client: anyio.abc.SocketStream,
        reader: BufferedByteReceiveStream,
        upstream: anyio.abc.SocketStream,
        target: tuple[str, int],
        replies: list[bytes],
    ) -> None:
        self.tunnels.append(
            Tunnel(scheme, _address(client, remote=True), target, _address(upstream))
        )
        async with upstream:
            if self.coalesce:
                *before, last = replies
                for reply in before:
                    await client.send(reply)
                    await anyio.sleep(0.01)
                # Wait for the server's first bytes and send them with the last reply.
                await client.send(last + await upstream.receive())
            else:
                await client.send(b"".join(replies))
            async with anyio.create_task_group() as group:

                async def pump(
                    source: anyio.abc.ByteReceiveStream, sink: anyio.abc.ByteSendStream
                ) -> None:
                    with contextlib.suppress(
                        anyio.EndOfStream,
                        anyio.BrokenResourceError,
                        anyio.ClosedResourceError,
                        OSError,
                    ):
                        while True:
                            await sink.send(await source.receive())
                    group.cancel_scope.cancel()  # either side gone: the tunnel is done

                group.start_soon(pump, reader, upstream)
                group.start_soon(pump, upstream, client)


def _address(stream: anyio.abc.SocketStream, *, remote: bool = False) -> tuple[str, int]:
    attribute = SocketAttribute.remote_address if remote else SocketAttribute.local_address
    address = stream.extra(attribute)
    assert isinstance(address, tuple)
    return str(address[0]), int(address[1])


def recorder(server: RunningServer) -> EventRecordingHandler:
    handler = server.handler
    assert isinstance(handler, EventRecordingHandler)
    return handler


@contextlib.asynccontextmanager
async def running_proxy(**options: object) -> AsyncIterator[LoopbackProxy]:
    proxy = LoopbackProxy(**options)  # type: ignore[arg-type]
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    proxy.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy
        finally:
            group.cancel_scope.cancel()


def assert_through(proxy: LoopbackProxy, server: RunningServer, tunnels: int = 1) -> None:
    """Every session the server saw came from the proxy's side of a tunnel."""
    assert len(proxy.tunnels) == tunnels, proxy.tunnels
    seen = {tuple(peer[:2]) for peer in recorder(server).peers}
    assert seen == {tunnel.upstream for tunnel in proxy.tunnels}
    clients = {tunnel.client for tunnel in proxy.tunnels}
    assert not seen & clients  # the server never saw the client itself


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def named_server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A certificate for localhost and PROXIED_NAME only: not for 127.0.0.1, the
    proxy's host, so that verifying the wrong name fails."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", PROXIED_NAME).configure_cert(context)
    return context


@pytest.fixture
def starttls_server(named_server_context: ssl.SSLContext) -> Iterator[RunningServer]:
    with aiosmtpd_server(
        handler=EventRecordingHandler(), starttls_context=named_server_context, auth=True
    ) as server:
        yield server


@pytest.fixture
def implicit_server(named_server_context: ssl.SSLContext) -> Iterator[RunningServer]:
    with aiosmtpd_server(
        handler=EventRecordingHandler(), implicit_tls_context=named_server_context, auth=True
    ) as server:
        yield server


def message(subject: str = "through a proxy") -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.org"
    msg["Subject"] = subject
    msg.set_content("Hello from the other side of a tunnel.\n")
    return msg


# -- through each kind of proxy ----------------------------------------------------------

# (scheme, destination name, with credentials)
ROUTES = [
    pytest.param("socks5", "localhost", False, id="socks5"),
    pytest.param("socks5", "localhost", True, id="socks5-auth"),
    pytest.param("socks5h", PROXIED_NAME, False, id="socks5h"),
    pytest.param("socks5h", PROXIED_NAME, True, id="socks5h-auth"),
    pytest.param("socks4", "localhost", False, id="socks4"),
    pytest.param("socks4a", PROXIED_NAME, True, id="socks4a-userid"),
    pytest.param("http", PROXIED_NAME, False, id="http"),
    pytest.param("http", PROXIED_NAME, True, id="http-auth"),
]


@pytest.mark.parametrize(("scheme", "destination", "auth"), ROUTES)
async def test_starttls_and_login_through_proxy(
    scheme: str,
    destination: str,
    auth: bool,
    starttls_server: RunningServer,
    client_context: ssl.SSLContext,
) -> None:
    password = HTTP_PASSWORD if scheme == "http" else PROXY_PASSWORD
    credentials = {"username": PROXY_USER, "password": password} if auth else {}
    with anyio.fail_after(LIMIT):
        async with running_proxy(**credentials) as proxy:
            url = proxy.url(scheme)
            async with SMTP(destination, starttls_server.port, timeout=TIMEOUT, proxy=url) as smtp:
                await smtp.starttls(context=client_context)
                await smtp.login("alice", USERS["alice"])
                await smtp.send_message(message())
    assert len(starttls_server.messages) == 1
    assert recorder(starttls_server).ehlos[-1][1]  # the last EHLO came after STARTTLS
    assert_through(proxy, starttls_server)
    (tunnel,) = proxy.tunnels
    assert tunnel.scheme == {"socks5h": "socks5", "socks4a": "socks4"}.get(scheme, scheme)
    if scheme in ("socks5", "socks4"):
        # The client resolved the name: the proxy got an address.
        assert tunnel.target == ("127.0.0.1", starttls_server.port)
    else:
        # The proxy got the name, which only it can resolve.
        assert tunnel.target == (destination, starttls_server.port)


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
async def test_implicit_tls_through_proxy(
    scheme: str, implicit_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy,
            SMTP_SSL(
                PROXIED_NAME,
                implicit_server.port,
                timeout=TIMEOUT,
                context=client_context,
                proxy=proxy.url(scheme),
            ) as smtp,
        ):
            assert smtp.is_tls
            await smtp.login("bob", USERS["bob"])
            await smtp.sendmail("bob@example.org", ["alice@example.org"], b"Subject: x\r\n\r\nx")
    assert len(implicit_server.messages) == 1
    assert_through(proxy, implicit_server)


async def _connect_with_tls(
    tls: str, host: str, port: int, url: str, context: ssl.SSLContext
) -> None:
    if tls == "implicit":
        async with SMTP_SSL(host, port, timeout=TIMEOUT, context=context, proxy=url):
            pass
    else:
        async with SMTP(host, port, timeout=TIMEOUT, proxy=url) as smtp:
            await smtp.starttls(context=context)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_certificate_checked_against_the_destination_name(
    tls: str,
    starttls_server: RunningServer,
    implicit_server: RunningServer,
    client_context: ssl.SSLContext,
) -> None:
    """The certificate names the server, not the proxy: a destination it does not
    name fails verification, though the tunnel itself is fine."""
    server = starttls_server if tls == "starttls" else implicit_server
    with anyio.fail_after(LIMIT):
        async with running_proxy(names={"other.proxied.test": "127.0.0.1"}) as proxy:
            url = proxy.url("socks5h")
            with pytest.raises(SMTPCertificateError):
                await _connect_with_tls(
                    tls, "other.proxied.test", server.port, url, client_context
                )
            # ... and the same route to the name it does hold succeeds.
            proxy.names[PROXIED_NAME] = "127.0.0.1"
            await _connect_with_tls(tls, PROXIED_NAME, server.port, url, client_context)
    assert len(proxy.tunnels) == 2


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_greeting_in_the_same_segment_as_the_proxy_reply(
    scheme: str, starttls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    """A proxy that sends the server's greeting right behind its own reply (and an
    HTTP header in two pieces) must not cost the greeting."""
    with anyio.fail_after(LIMIT):
        async with (
            running_proxy(coalesce=True) as proxy,
            SMTP(
                "localhost", starttls_server.port, timeout=TIMEOUT, proxy=proxy.url(scheme)
            ) as smtp,
        ):
            await smtp.starttls(context=client_context)
            reply = await smtp.noop()
    assert reply.code == 250
    assert_through(proxy, starttls_server)


async def test_lmtp_over_tcp_through_proxy(scripted: ScriptedServers) -> None:
    server_script = MiniSMTP(lmtp=True)
    server = scripted(greet(), call(server_script))
    with anyio.fail_after(LIMIT):
        async with (
            running_proxy() as proxy,
            LMTP(server.host, server.port, timeout=TIMEOUT, proxy=proxy.url("socks5")) as lmtp,
        ):
            refused = await lmtp.sendmail(
                "a@example.org", ["b@example.org", "c@example.org"], b"Subject: x\r\n\r\nx"
            )
    assert refused == {}
    assert server_script.commands[0].startswith(b"LHLO ")
    assert len(server_script.transactions) == 1
    assert [tunnel.target for tunnel in proxy.tunnels] == [(server.host, server.port)]


async def test_source_address_binds_the_connection_to_the_proxy(
    starttls_server: RunningServer,
) -> None:
    with anyio.fail_after(LIMIT):
        async with running_proxy() as proxy:
            port = free_port()
            async with SMTP(
                "localhost",
                starttls_server.port,
                timeout=TIMEOUT,
                source_address=("127.0.0.1", port),
                proxy=proxy.url("http"),
            ) as smtp:
                await smtp.ehlo()
    assert proxy.tunnels[0].client == ("127.0.0.1", port)
    assert_through(proxy, starttls_server)


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_source_port_in_use_is_a_value_error(scheme: str) -> None:
    """As on a direct connection (the API's promise for source_address)."""
    with socket.create_server(("127.0.0.1", 0)) as taken, anyio.fail_after(LIMIT):
        async with running_proxy() as proxy:
            smtp = SMTP(
                timeout=TIMEOUT,
                source_address=("127.0.0.1", taken.getsockname()[1]),
                proxy=proxy.url(scheme),
            )
            with pytest.raises(ValueError, match="cannot bind the source address"):
                await smtp.connect("localhost", 25)
    assert proxy.tunnels == []


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_anyio_streams_on_asyncio(
    scheme: str,
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    starttls_server: RunningServer,
    client_context: ssl.SSLContext,
) -> None:
    """AIOSMTP_TRANSPORT=anyio: python-socks' anyio backend, on asyncio (on trio it
    is the only one, and every other test covers it)."""
    if anyio_backend != "asyncio":
        pytest.skip("the anyio streams are the default on trio")
    monkeypatch.setenv("AIOSMTP_TRANSPORT", "anyio")
    with anyio.fail_after(LIMIT):
        async with (
            running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy,
            SMTP(
                "localhost", starttls_server.port, timeout=TIMEOUT, proxy=proxy.url(scheme)
            ) as smtp,
        ):
            await smtp.starttls(context=client_context)
            await smtp.send_message(message())
    assert len(starttls_server.messages) == 1
    assert_through(proxy, starttls_server)


# -- the pool and aiosmtp.send ---------------------------------------------------------


async def test_pool_through_proxy(
    starttls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy,
            SMTPPool(
                PROXIED_NAME,
                starttls_server.port,
                max_connections=2,
                tls="starttls",
                context=client_context,
                username="alice",
                password=USERS["alice"],
                timeout=TIMEOUT,
                proxy=proxy.url("socks5h"),
            ) as pool,
            anyio.create_task_group() as group,
        ):
            for number in range(6):
                group.start_soon(pool.send_message, message(f"message {number}"))
    assert len(starttls_server.messages) == 6
    assert 1 <= len(proxy.tunnels) <= 2
    assert_through(proxy, starttls_server, tunnels=len(proxy.tunnels))


async def test_send_through_proxy(
    implicit_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(LIMIT):
        async with running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy:
            result = await aiosmtp.send(
                message(),
                PROXIED_NAME,
                implicit_server.port,
                tls="implicit",
                context=client_context,
                username="bob",
                password=USERS["bob"],
                timeout=TIMEOUT,
                proxy=proxy.url("http"),
            )
    assert result == {}
    assert len(implicit_server.messages) == 1
    assert_through(proxy, implicit_server)


@pytest.mark.parametrize("proxy_is_local", [True, False])
async def test_pool_credentials_in_plaintext_only_when_the_proxy_is_local(
    proxy_is_local: bool, starttls_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without TLS the pool sends a password only to a server on this machine; through
    a proxy, "localhost" is the proxy's, so the proxy must be on this machine too.
    (The test proxy is on loopback either way: the pool is told it is not.)"""
    if not proxy_is_local:
        monkeypatch.setattr(aiosmtp.pool, "_is_local", lambda host: host == "localhost")
    with anyio.fail_after(LIMIT):
        async with (
            running_proxy() as proxy,
            SMTPPool(
                "localhost",
                starttls_server.port,
                tls="none",
                username="alice",
                password=USERS["alice"],
                timeout=TIMEOUT,
                proxy=proxy.url("socks5"),
            ) as pool,
        ):
            if proxy_is_local:
                await pool.sendmail("a@example.org", ["b@example.org"], b"x")
            else:
                with pytest.raises(aiosmtp.SMTPNotSupportedError, match="not encrypted"):
                    await pool.sendmail("a@example.org", ["b@example.org"], b"x")
    assert len(proxy.tunnels) == 1
    assert len(recorder(starttls_server).auths) == (1 if proxy_is_local else 0)


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "http"])
async def test_wrong_proxy_password(scheme: str, starttls_server: RunningServer) -> None:
    with anyio.fail_after(LIMIT):
        async with running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy:
            url = proxy.url(scheme, password="wrong-Pr0xy-password")
            with pytest.raises(SMTPConnectError) as caught:
                async with SMTP("localhost", starttls_server.port, timeout=TIMEOUT, proxy=url):
                    pass
    text = str(caught.value)
    assert f"{scheme}://127.0.0.1:{proxy.port}" in text
    assert "wrong-Pr0xy-password" not in text
    assert PROXY_USER not in text
    assert "authentication" in text.lower()
    assert proxy.tunnels == []
    assert recorder(starttls_server).peers == []


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_proxy_without_credentials_refused(
    scheme: str, starttls_server: RunningServer
) -> None:
    with anyio.fail_after(LIMIT):
        async with running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy:
            url = f"{scheme}://{proxy.url_host}"
            with pytest.raises(SMTPConnectError, match=r"127\.0\.0\.1"):
                async with SMTP("localhost", starttls_server.port, timeout=TIMEOUT, proxy=url):
                    pass
    assert proxy.tunnels == []
    assert len(proxy.refusals) == 1


@pytest.mark.parametrize("scheme", ["socks5", "socks4", "http"])
async def test_proxy_down(scheme: str) -> None:
    port = free_port()
    with anyio.fail_after(LIMIT), pytest.raises(SMTPConnectError) as caught:
        async with SMTP("localhost", 25, timeout=TIMEOUT, proxy=f"{scheme}://127.0.0.1:{port}"):
            pass
    assert f"proxy {scheme}://127.0.0.1:{port}" in str(caught.value)


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a", "http"])
async def test_proxy_cannot_reach_the_server(scheme: str) -> None:
    closed_port = free_port()
    with anyio.fail_after(LIMIT):
        async with running_proxy() as proxy:
            with pytest.raises(SMTPConnectError) as caught:
                async with SMTP(
                    PROXIED_NAME, closed_port, timeout=TIMEOUT, proxy=proxy.url(scheme)
                ):
                    pass
    assert proxy.refusals == [f"cannot reach {PROXIED_NAME}:{closed_port}"]
    assert f"{scheme}://127.0.0.1:{proxy.port}" in str(caught.value)


@pytest.mark.parametrize("scheme", ["socks5", "socks4", "http"])
async def test_proxy_hangs_up_mid_handshake(scheme: str) -> None:
    with anyio.fail_after(LIMIT):
        async with running_proxy(hang_up=True) as proxy:
            with pytest.raises(SMTPConnectError, match=f"proxy {scheme}://127.0.0.1"):
                async with SMTP("localhost", 25, timeout=TIMEOUT, proxy=proxy.url(scheme)):
                    pass
    assert proxy.refusals == ["hung up"]


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_proxy_handshake_is_bounded_by_the_timeout(scheme: str) -> None:
    with (
        silent_listener() as (host, port),
        anyio.fail_after(LIMIT),
        pytest.raises(SMTPTimeoutError, match="through the proxy"),
    ):
        async with SMTP("localhost", 25, timeout=0.3, proxy=f"{scheme}://{host}:{port}"):
            pass


async def test_proxy_down_in_the_pool_and_send() -> None:
    url = f"socks5://127.0.0.1:{free_port()}"
    with anyio.fail_after(LIMIT):
        with pytest.raises(SMTPConnectError, match="proxy"):
            await aiosmtp.send(message(), "localhost", 25, tls="none", timeout=TIMEOUT, proxy=url)
        async with SMTPPool("localhost", 25, tls="none", timeout=TIMEOUT, proxy=url) as pool:
            with pytest.raises(SMTPConnectError, match="proxy"):
                await pool.send_message(message())


async def test_an_smtp_server_given_as_an_http_proxy(scripted: ScriptedServers) -> None:
    """A server that does not speak HTTP fails at once, not at the timeout."""
    connect = b"CONNECT localhost:25 HTTP/1.1\r\nHost: localhost:25\r\n\r\n"
    server = scripted(greet(), recv_until(b"\r\n\r\n", connect))
    with anyio.fail_after(LIMIT), pytest.raises(SMTPConnectError, match="not an HTTP reply"):
        async with SMTP(
            "localhost", 25, timeout=TIMEOUT, proxy=f"http://{server.host}:{server.port}"
        ):
            pass


async def test_cancelled_during_the_handshake() -> None:
    with silent_listener() as (host, port), anyio.fail_after(LIMIT):
        smtp = SMTP(timeout=None, proxy=f"socks5://{host}:{port}")
        with anyio.move_on_after(0.2) as scope:
            await smtp.connect("localhost", 25)
        assert scope.cancelled_caught
        assert smtp.is_closed


# -- credentials are never shown ---------------------------------------------------------


async def test_proxy_credentials_never_logged(
    starttls_server: RunningServer,
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    with anyio.fail_after(LIMIT):
        async with running_proxy(username=PROXY_USER, password=PROXY_PASSWORD) as proxy:
            for scheme in ("socks5", "http"):
                smtp = SMTP(
                    "localhost", starttls_server.port, timeout=TIMEOUT, proxy=proxy.url(scheme)
                )
                smtp.set_debuglevel(2)
                async with smtp:
                    await smtp.starttls(context=client_context)
                    await smtp.noop()
                shown = [repr(smtp), str(smtp.proxy), repr(smtp.proxy), repr(vars(smtp))]
                assert not any(PROXY_PASSWORD in text for text in shown)
    assert "through the proxy socks5://127.0.0.1" in caplog.text
    logged = caplog.text + capsys.readouterr().err
    assert PROXY_PASSWORD not in logged
    assert base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode() not in logged


# -- checked before any I/O ----------------------------------------------------------------

BAD_URLS = [
    pytest.param("socks6://127.0.0.1:1080", "unknown proxy scheme", id="scheme"),
    pytest.param("https://127.0.0.1:3128", "unknown proxy scheme", id="https"),
    pytest.param("127.0.0.1:1080", "unknown proxy scheme", id="no-scheme"),
    pytest.param("socks5://127.0.0.1", "no port", id="no-port"),
    pytest.param("socks5://u:p@127.0.0.1:0", "port 0", id="port-0"),
    pytest.param("socks5://:secret@127.0.0.1:99999", "bad port", id="port-range"),
    pytest.param("socks5://u:secret@127.0.0.1:x", "bad port", id="port-text"),
    pytest.param("socks5://:1080", "no host", id="no-host"),
    pytest.param("http://u:secret@127.0.0.1:3128/path", "path", id="path"),
    pytest.param("socks5://u@127.0.0.1:1080", "user name and a password", id="no-password"),
    pytest.param("socks5://:secret@127.0.0.1:1080", "user name and a password", id="no-user"),
    pytest.param("socks4://u:secret@127.0.0.1:1080", "SOCKS4 has no passwords", id="socks4"),
    pytest.param(f"socks5://{'u' * 256}:secret@h:1", "255 bytes", id="long-user"),
    pytest.param("socks5://u:s%C3%A9cret@h:1", "must be ASCII", id="non-ascii"),
    pytest.param("socks5://u:pa/secret@h:1080", "bad port", id="unencoded-slash"),
    pytest.param("socks5://u:pa?secret@h:1080", "bad port", id="unencoded-question-mark"),
]


@pytest.mark.parametrize(("url", "error"), BAD_URLS)
def test_bad_proxy_url(url: str, error: str) -> None:
    for make in (
        lambda: SMTP("localhost", proxy=url),
        lambda: SMTP_SSL(proxy=url),
        lambda: LMTP("localhost", proxy=url),
        lambda: SMTPPool("localhost", proxy=url),
    ):
        with pytest.raises(ValueError, match=error) as caught:
            make()
        assert "secret" not in str(caught.value)


def test_good_proxy_urls() -> None:
    proxy = parse_proxy("SOCKS5H://us%40er:pa%3Ass@[::1]:1080/")
    assert proxy == Proxy("socks5h", "::1", 1080, "us@er", "pa:ss")
    assert proxy.remote_dns
    assert str(proxy) == "socks5h://[::1]:1080"
    assert repr(proxy) == "<Proxy socks5h://[::1]:1080, with credentials>"
    assert not parse_proxy("socks5://h:1").remote_dns
    assert parse_proxy("http://h:3128").username is None
    assert parse_proxy("http://:@h:3128").username is None
    assert parse_proxy("http://u:@h:3128").password == ""
    assert parse_proxy("socks4a://ident@h:1080").username == "ident"


async def test_no_proxy_for_a_unix_socket() -> None:
    with pytest.raises(ValueError, match="Unix socket"):
        LMTP("/run/lmtp.sock", proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="Unix socket"):
        SMTPPool("/run/lmtp.sock", lmtp=True, proxy="socks5://127.0.0.1:1080")
    lmtp = LMTP(proxy="socks5://127.0.0.1:1080")
    with anyio.fail_after(LIMIT), pytest.raises(ValueError, match="Unix socket"):
        await lmtp.connect("/run/lmtp.sock")


async def test_bad_destination_rejected_before_the_proxy_hears_it() -> None:
    with anyio.fail_after(LIMIT):
        async with running_proxy() as proxy:
            smtp = SMTP(timeout=TIMEOUT, proxy=proxy.url("http"))
            with pytest.raises(ValueError, match="cannot ask a proxy"):
                await smtp.connect("evil.example\r\nX-Injected: 1", 25)
    assert proxy.tunnels == []
    assert proxy.refusals == []


def test_missing_python_socks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "python_socks", None)
    with pytest.raises(ImportError, match=r"aiosmtp\[proxy\]"):
        SMTP("localhost", proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ImportError, match=r"aiosmtp\[proxy\]"):
        SMTPPool("localhost", proxy="socks5h://127.0.0.1:1080")
    # HTTP CONNECT needs no extra package.
    assert SMTP("localhost", proxy="http://127.0.0.1:3128").proxy is not None


def test_environment_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALL_PROXY", "all_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(name, "socks5://127.0.0.1:1")
    assert SMTP("localhost").proxy is None
    assert SMTPPool("localhost").proxy is None


# -- the HTTP CONNECT pieces ------------------------------------------------------------------


def test_connect_request() -> None:
    proxy = Proxy("http", "p", 3128, "jörg", "pä:ss")
    request = connect_request(proxy, "2001:db8::1", 25)
    token = base64.b64encode("jörg:pä:ss".encode()).decode()
    assert request == (
        b"CONNECT [2001:db8::1]:25 HTTP/1.1\r\nHost: [2001:db8::1]:25\r\n"
        b"Proxy-Authorization: Basic " + token.encode() + b"\r\n\r\n"
    )
    assert connect_request(Proxy("http", "p", 1), "mx.example", 587) == (
        b"CONNECT mx.example:587 HTTP/1.1\r\nHost: mx.example:587\r\n\r\n"
    )


def test_reply_read_never_goes_past_its_end() -> None:
    """Reading the reply in the sizes given, from a stream that holds the greeting
    right behind it, takes exactly the reply, whatever the reply looks like."""
    greeting = b"220 mx ESMTP\r\n"
    for reply in (
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.0 200 Connection established\r\nVia: x\r\n\r\n",
        b"HTTP/1.1 200 \r\n\r\r\n\r\n",
        b"HTTP/1.1 200 a\r\nX: \r\r\n\r\n",
    ):
        stream = reply + greeting
        taken = b""
        while not taken.endswith(b"\r\n\r\n"):
            size = safe_read_size(taken)
            assert size >= 1
            taken += stream[len(taken) : len(taken) + size]
        assert taken == reply


def test_parse_connect_reply() -> None:
    assert parse_connect_reply(b"HTTP/1.1 200 Connection established\r\n\r\n") == (
        200,
        "Connection established",
    )
    assert parse_connect_reply(b"HTTP/1.0 407 Proxy Auth Required\r\nX: y\r\n\r\n")[0] == 407
    assert parse_connect_reply(b"HTTP/1.1 204\r\n\r\n") == (204, "")
    for bad in (b"220 mx ESMTP\r\n", b"HTTP/1.1 2000 x\r\n\r\n", b"\r\n\r\n"):
        with pytest.raises(ValueError, match="not an HTTP reply"):
            parse_connect_reply(bad)
