"""SMTPPool and aiosmtp.send: the cap, reuse, expiry, retirement, broken connections,
rate limit, acquire timeout, cancellation, the no-duplicate rule, 452 follow-ups,
the TLS and credentials policy, repr, and QUIT on the way out.

The connection counts are taken at the server (tests/bdat_server.py), which sees
every connection the pool opens and every QUIT.
"""

from __future__ import annotations

import io
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

import aiosmtp
from aiosmtp._body import CHUNK_SIZE
from aiosmtp.pool import _is_local

from .bdat_server import BDATServer, eventually
from .servers import RecordingHandler, RunningServer, aiosmtpd_server

pytestmark = pytest.mark.anyio

#: Bounds each test as a whole; never reached when it passes.
LIMIT = 20
#: The client timeout where no timeout is meant to fire.
TIMEOUT = 5.0
#: Where one is meant to fire: short, so that the test is quick.
SHORT = 0.3
NAME = "client.example"
BODY = b"Subject: pooled\r\n\r\nhello\r\n"


@pytest.fixture
def server() -> Iterator[BDATServer]:
    with BDATServer() as server:
        yield server


@pytest.fixture(params=["BDAT", "DATA"])
def either(request: pytest.FixtureRequest) -> Iterator[BDATServer]:
    """The same server with and without CHUNKING."""
    with BDATServer(chunking=request.param == "BDAT") as server:
        yield server


def pool(server: BDATServer, **options: Any) -> aiosmtp.SMTPPool:
    options.setdefault("tls", "none")
    options.setdefault("timeout", TIMEOUT)
    return aiosmtp.SMTPPool(server.host, server.port, local_hostname=NAME, **options)


async def send(smtp_pool: aiosmtp.SMTPPool, recipient: str = "b@x.org") -> aiosmtp.SendResult:
    return await smtp_pool.sendmail("a@x.org", [recipient], BODY)


def recipients_of(server: BDATServer) -> list[list[str]]:
    return [message.recipients for message in server.messages]


# -- the cap, reuse, expiry, retirement --------------------------------------------------


async def test_the_cap_is_never_exceeded(server: BDATServer) -> None:
    server.final_reply_delay = 0.005  # transactions overlap
    results: dict[int, aiosmtp.SendResult] = {}

    async def one(number: int) -> None:
        results[number] = await send(smtp_pool, f"r{number}@x.org")

    with anyio.fail_after(LIMIT):
        async with (
            pool(server, max_connections=3) as smtp_pool,
            anyio.create_task_group() as tasks,
        ):
            for number in range(50):
                tasks.start_soon(one, number)
    assert server.peak_open == 3
    assert server.opened == 3
    assert len(results) == 50
    assert all(result == {} and result.reply.code == 250 for result in results.values())
    assert sorted(r for rs in recipients_of(server) for r in rs) == sorted(
        f"r{number}@x.org" for number in range(50)
    )


async def test_a_connection_is_reused(either: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(either) as smtp_pool:
            await send(smtp_pool)
            await send(smtp_pool)
    assert either.opened == 1
    verbs = either.connections[0].verbs()
    # A finished transaction leaves the session clean: no RSET is needed between them.
    assert "RSET" not in verbs
    assert verbs.count("MAIL") == 2
    assert verbs[-1] == "QUIT"


async def test_an_idle_connection_expires(server: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(server, idle_timeout=0.2) as smtp_pool:
            await send(smtp_pool)
            first = server.connections[0]
            # The pool itself ends the idle session, with QUIT.
            await eventually(lambda: not first.open)
            assert first.quit
            assert "#1" not in repr(smtp_pool)
            await send(smtp_pool)
    assert server.opened == 2
    assert [message.connection for message in server.messages] == [1, 2]


async def test_a_connection_is_retired_after_its_quota(server: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(server, max_messages_per_connection=2) as smtp_pool:
            for _ in range(5):
                await send(smtp_pool)
            await eventually(lambda: server.quits >= 2)
    assert [message.connection for message in server.messages] == [1, 1, 2, 2, 3]
    assert server.opened == 3
    assert all(connection.quit for connection in server.connections)


async def test_a_connection_the_server_closed_is_replaced(either: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(either) as smtp_pool:
            await send(smtp_pool, "first@x.org")
            either.kill_connections()  # as a server ending idle sessions does
            await eventually(lambda: either.open_now == 0)
            await anyio.sleep(0.05)  # the FIN has reached the client's socket
            result = await send(smtp_pool, "second@x.org")
    assert result == {}
    assert recipients_of(either) == [["first@x.org"], ["second@x.org"]]
    assert either.opened == 2


# -- rate limit, acquire timeout, cancellation ----------------------------------------


async def test_the_rate_limit_holds_across_the_pool(server: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(server, rate_limit=20, max_connections=5) as smtp_pool:
            started = anyio.current_time()
            async with anyio.create_task_group() as tasks:
                for number in range(10):
                    tasks.start_soon(send, smtp_pool, f"r{number}@x.org")
            elapsed = anyio.current_time() - started
    assert len(server.messages) == 10
    assert elapsed >= 0.44  # ten starts, 50 ms apart


async def test_waiting_for_a_connection_times_out(server: BDATServer) -> None:
    server.hold_final_replies()
    with anyio.fail_after(LIMIT):
        async with (
            pool(server, max_connections=1, timeout=SHORT, data_timeout=TIMEOUT) as smtp_pool,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(send, smtp_pool, "slow@x.org")
            await eventually(lambda: len(server.messages) == 1)
            with pytest.raises(aiosmtp.SMTPTimeoutError):
                await send(smtp_pool, "impatient@x.org")
            # The slow one waits for its reply with data_timeout, not timeout.
            await anyio.sleep(SHORT)
            server.release_final_replies()
        async with pool(server, max_connections=1, timeout=SHORT) as smtp_pool:
            assert (await send(smtp_pool, "later@x.org")) == {}
    assert recipients_of(server) == [["slow@x.org"], ["later@x.org"]]
    assert server.connections[0].verbs().count("MAIL") == 1  # the impatient one never got in


async def test_cancelling_a_waiting_task(server: BDATServer) -> None:
    server.hold_final_replies()
    with anyio.fail_after(LIMIT):
        async with pool(server, max_connections=1) as smtp_pool:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send, smtp_pool, "first@x.org")
                await eventually(lambda: len(server.messages) == 1)
                with anyio.move_on_after(0.1) as waiting:
                    await send(smtp_pool, "cancelled@x.org")
                assert waiting.cancelled_caught
                server.release_final_replies()
            assert (await send(smtp_pool, "third@x.org")) == {}
    assert recipients_of(server) == [["first@x.org"], ["third@x.org"]]
    assert server.opened == 1
    assert server.peak_open == 1


async def test_cancelling_a_sending_task(either: BDATServer) -> None:
    started = anyio.Event()

    async def never_ends() -> AsyncIterator[bytes]:
        yield b"Subject: stuck\r\n\r\n" + b"x" * 100_000 + b"\r\n"
        started.set()
        await anyio.sleep_forever()
        yield b"never\r\n"

    with anyio.fail_after(LIMIT):
        async with pool(either, max_connections=1) as smtp_pool:
            await send(smtp_pool, "first@x.org")
            with anyio.CancelScope() as scope:

                async def cancel_when_sending() -> None:
                    await started.wait()
                    scope.cancel()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(cancel_when_sending)
                    await smtp_pool.sendmail("a@x.org", ["stuck@x.org"], never_ends())
            assert scope.cancelled_caught
            # The connection it used is dropped, not QUIT and not reused.
            first = either.connections[0]
            await eventually(lambda: not first.open)
            assert not first.quit
            assert (await send(smtp_pool, "after@x.org")) == {}
    assert recipients_of(either) == [["first@x.org"], ["after@x.org"]]
    assert either.opened == 2
    assert either.peak_open == 1


# -- nothing sent twice, nothing lost silently -----------------------------------------


async def test_lost_after_the_end_of_data_is_never_retried(either: BDATServer) -> None:
    either.drop("after-end")
    with anyio.fail_after(LIMIT):
        async with pool(either) as smtp_pool:
            with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
                await send(smtp_pool, "unknown@x.org")
            assert either.opened == 1
            assert (await send(smtp_pool, "next@x.org")) == {}
    # The message of unknown fate arrived once and was not sent again.
    assert recipients_of(either) == [["unknown@x.org"], ["next@x.org"]]
    assert either.opened == 2


async def test_no_reply_within_data_timeout_is_never_retried(server: BDATServer) -> None:
    server.hold_final_replies()
    with anyio.fail_after(LIMIT):
        async with pool(server, data_timeout=SHORT) as smtp_pool:
            with pytest.raises(aiosmtp.SMTPDeliveryUnknownError) as caught:
                await send(smtp_pool, "unknown@x.org")
            assert isinstance(caught.value, aiosmtp.SMTPTimeoutError)
            server.release_final_replies()
            assert (await send(smtp_pool, "next@x.org")) == {}
    assert recipients_of(server) == [["unknown@x.org"], ["next@x.org"]]


@pytest.mark.parametrize(
    ("chunking", "point", "size"),
    [
        (False, "data-command", 100),
        (False, "mid-data", 8_000_000),
        (True, "bdat", 3 * CHUNK_SIZE),
    ],
)
async def test_lost_before_the_end_of_data_is_retried_once(
    tmp_path: Path, chunking: bool, point: str, size: int
) -> None:
    text = b"Subject: retried\r\n\r\n" + (b"r" * 98 + b"\r\n") * (size // 100)
    path = tmp_path / "retried.eml"
    path.write_bytes(text)
    with BDATServer(chunking=chunking) as server, anyio.fail_after(LIMIT):
        server.drop(point)  # type: ignore[arg-type]
        async with pool(server) as smtp_pool:
            assert (await smtp_pool.sendmail("a@x.org", ["b@x.org"], text)) == {}
            server.drop(point)  # type: ignore[arg-type]
            with path.open("rb") as file:
                assert (await smtp_pool.sendmail("a@x.org", ["c@x.org"], file)) == {}
        # Exactly one delivery each, whole: the file was read again from its start.
        assert recipients_of(server) == [["b@x.org"], ["c@x.org"]]
        assert [message.data for message in server.messages] == [text, text]
        # Each retry on a fresh connection; the second message reused the first's retry.
        assert [message.connection for message in server.messages] == [2, 3]
        assert server.opened == 3


async def test_421_before_the_end_of_data_is_retried_on_a_fresh_connection(
    either: BDATServer,
) -> None:
    either.close_with_421 = {"MAIL": 1}
    with anyio.fail_after(LIMIT):
        async with pool(either) as smtp_pool:
            result = await send(smtp_pool)
    assert result == {}
    assert result.reply.code == 250
    assert recipients_of(either) == [["b@x.org"]]
    assert either.opened == 2


async def test_a_consumed_stream_is_not_retried() -> None:
    async def stream() -> AsyncIterator[bytes]:
        yield b"Subject: stream\r\n\r\n"
        for _ in range(125):
            yield b"s" * 65_534 + b"\r\n"
            await anyio.lowlevel.checkpoint()

    with BDATServer(chunking=False) as server, anyio.fail_after(LIMIT):
        server.drop("mid-data")
        async with pool(server) as smtp_pool:
            with pytest.raises(aiosmtp.SMTPServerDisconnected) as caught:
                await smtp_pool.sendmail("a@x.org", ["b@x.org"], stream())
            assert not isinstance(caught.value, aiosmtp.SMTPDeliveryUnknownError)
        assert server.messages == []
        assert server.opened == 1


# -- 452: the rest in a following transaction -------------------------------------------


async def test_452_recipients_go_in_a_following_transaction(either: BDATServer) -> None:
    either.rcpt_limit = 2
    either.rcpt_replies = {"bad@x.org": "550 5.1.1 No such user"}
    recipients = ["r0@x.org", "bad@x.org", "r1@x.org", "r2@x.org", "r3@x.org", "r4@x.org"]
    with anyio.fail_after(LIMIT):
        async with pool(either) as smtp_pool:
            result = await smtp_pool.sendmail("a@x.org", recipients, io.BytesIO(BODY))
    assert result == {"bad@x.org": (550, b"5.1.1 No such user")}
    assert result.reply.code == 250
    assert recipients_of(either) == [
        ["r0@x.org", "r1@x.org"],
        ["r2@x.org", "r3@x.org"],
        ["r4@x.org"],
    ]
    assert [message.data for message in either.messages] == [BODY] * 3


async def test_send_delivers_452_recipients_too(server: BDATServer) -> None:
    server.rcpt_limit = 1
    with anyio.fail_after(LIMIT):
        result = await aiosmtp.send(
            BODY,
            server.host,
            server.port,
            tls="none",
            from_addr="a@x.org",
            to_addrs=["b@x.org", "c@x.org"],
            timeout=TIMEOUT,
        )
    assert result == {}
    assert recipients_of(server) == [["b@x.org"], ["c@x.org"]]


async def test_an_lmtp_pool_reports_each_recipient() -> None:
    with BDATServer(lmtp=True) as server, anyio.fail_after(LIMIT):
        server.lmtp_replies = {"c@x.org": "550 5.2.1 Mailbox disabled"}
        async with aiosmtp.SMTPPool(
            server.host, server.port, lmtp=True, tls="none", timeout=TIMEOUT
        ) as smtp_pool:
            result = await smtp_pool.sendmail("a@x.org", ["b@x.org", "c@x.org"], BODY)
            assert (await send(smtp_pool, "d@x.org")) == {}
        assert result == {"c@x.org": (550, b"5.2.1 Mailbox disabled")}
        assert result.reply == (550, b"5.2.1 Mailbox disabled")  # the last per-recipient one
        assert recipients_of(server) == [["b@x.org", "c@x.org"], ["d@x.org"]]
        assert server.opened == 1
        assert server.connections[0].verbs()[:2] == ["LHLO", "MAIL"]


# -- TLS and credentials -------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", None])
async def test_starttls_required_but_not_offered(server: BDATServer, tls: str | None) -> None:
    with anyio.fail_after(LIMIT):
        async with aiosmtp.SMTPPool(
            server.host,
            server.port,
            tls=tls,  # type: ignore[arg-type]
            timeout=TIMEOUT,
        ) as smtp_pool:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="STARTTLS"):
                await send(smtp_pool)
    assert server.connections[0].verbs() == ["EHLO"]  # no MAIL, nothing of the message
    assert server.messages == []
    await eventually(lambda: server.open_now == 0)


async def test_opportunistic_tls_sends_in_plaintext_without_starttls(server: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(server, tls="opportunistic") as smtp_pool:
            assert (await send(smtp_pool)) == {}
    assert server.connections[0].verbs() == ["EHLO", "MAIL", "RCPT", "BDAT", "QUIT"]


class TLSAwareHandler(RecordingHandler):
    """Notes whether each message and each login came over TLS."""

    def __init__(self) -> None:
        super().__init__()
        self.message_tls: list[bool] = []
        self.logins: list[tuple[str, bool]] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.message_tls.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login.decode(), session.ssl is not None))
            return AuthResult(success=data.password == b"secret")
        return AuthResult(success=False, handled=False)


@pytest.mark.parametrize("tls", ["starttls", "opportunistic"])
async def test_starttls_with_a_verified_certificate(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, tls: str
) -> None:
    handler = TLSAwareHandler()
    with (
        aiosmtpd_server(
            handler=handler,
            starttls_context=server_context,
            auth=True,
            authenticator=handler.authenticate,
        ) as smtpd,
        anyio.fail_after(LIMIT),
    ):
        async with aiosmtp.SMTPPool(
            smtpd.host,
            smtpd.port,
            tls=tls,  # type: ignore[arg-type]
            context=client_context,
            username="alice",
            password="secret",
            timeout=TIMEOUT,
        ) as smtp_pool:
            assert (await send(smtp_pool)) == {}
            assert (await send(smtp_pool)) == {}
    assert handler.message_tls == [True, True]
    assert handler.logins == [("alice", True)]  # once per connection, over TLS


def _non_loopback_routes() -> list[tuple[str, str]]:
    """(name or address to dial, address to listen on) for hosts that are not
    loopback by name: this machine's own non-loopback address, and its host name
    when that resolves to a loopback address."""
    routes: list[tuple[str, str]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address: str = probe.getsockname()[0]
        except OSError:
            address = ""
    if address and not address.startswith("127."):
        routes.append((address, address))
    name = socket.gethostname()
    try:
        resolved = socket.gethostbyname(name)
    except OSError:
        resolved = ""
    if name != "localhost" and resolved.startswith("127."):
        routes.append((name, resolved))
    return routes


@pytest.fixture(params=["address", "name"])
def remote_route(request: pytest.FixtureRequest) -> tuple[str, str]:
    by_name = request.param == "name"
    routes = [route for route in _non_loopback_routes() if (route[0] != route[1]) is by_name]
    if not routes:
        pytest.skip(f"this machine has no non-loopback {request.param} to test with")
    return routes[0]


async def test_credentials_are_not_sent_in_plaintext_to_a_remote_host(
    remote_route: tuple[str, str],
) -> None:
    dial, listen = remote_route
    handler = TLSAwareHandler()
    with (
        aiosmtpd_server(
            handler=handler, auth=True, authenticator=handler.authenticate, hostname=listen
        ) as smtpd,
        anyio.fail_after(LIMIT),
    ):
        credentials: dict[str, Any] = {
            "username": "alice",
            "password": "secret",
            "timeout": TIMEOUT,
        }
        async with aiosmtp.SMTPPool(dial, smtpd.port, tls="none", **credentials) as smtp_pool:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="not encrypted"):
                await send(smtp_pool)
        async with aiosmtp.SMTPPool(
            dial, smtpd.port, tls="opportunistic", **credentials
        ) as smtp_pool:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="not encrypted"):
                await send(smtp_pool)
        assert handler.logins == []
        assert smtpd.messages == []
        async with aiosmtp.SMTPPool(
            dial, smtpd.port, tls="none", allow_insecure_auth=True, **credentials
        ) as smtp_pool:
            assert (await send(smtp_pool)) == {}
        assert handler.logins == [("alice", False)]
        assert len(smtpd.messages) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_credentials_may_go_in_plaintext_to_loopback(host: str) -> None:
    handler = TLSAwareHandler()
    with (
        aiosmtpd_server(handler=handler, auth=True, authenticator=handler.authenticate) as smtpd,
        anyio.fail_after(LIMIT),
    ):
        async with aiosmtp.SMTPPool(
            host, smtpd.port, tls="none", username="alice", password="secret", timeout=TIMEOUT
        ) as smtp_pool:
            assert (await send(smtp_pool)) == {}
    assert handler.logins == [("alice", False)]


def test_which_hosts_count_as_local() -> None:
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "/run/lmtp.sock"):
        assert _is_local(host), host
    for host in ("mail.example.com", "192.0.2.1", "10.0.0.1", "::2", "localhost.example.com"):
        assert not _is_local(host), host


# -- repr, QUIT on the way out, send() --------------------------------------------------


async def test_repr_shows_the_connections_and_their_states(server: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        async with pool(server, max_connections=2) as smtp_pool:
            assert f"{server.host}:{server.port}" in repr(smtp_pool)
            assert "0/2" in repr(smtp_pool)
            await send(smtp_pool)
            assert "1/2" in repr(smtp_pool)
            assert "#1 idle, 1 sent" in repr(smtp_pool)
            server.hold_final_replies()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send, smtp_pool)
                await eventually(lambda: len(server.messages) == 2)
                assert "#1 in use" in repr(smtp_pool)
                server.release_final_replies()
            assert "#1 idle, 2 sent" in repr(smtp_pool)


async def test_leaving_the_block_quits_every_connection(server: BDATServer) -> None:
    server.hold_final_replies()
    with anyio.fail_after(LIMIT):
        async with pool(server, max_connections=3) as smtp_pool:
            async with anyio.create_task_group() as tasks:
                for number in range(3):
                    tasks.start_soon(send, smtp_pool, f"r{number}@x.org")
                await eventually(lambda: len(server.messages) == 3)
                server.release_final_replies()
            assert server.opened == 3
        await eventually(lambda: server.open_now == 0)
        with pytest.raises(aiosmtp.SMTPServerDisconnected):
            await send(smtp_pool)
    assert [connection.quit for connection in server.connections] == [True, True, True]
    assert server.opened == 3


async def test_send_an_email_message(smtpd: RunningServer) -> None:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@x.org>"
    msg["To"] = "bob@x.org"
    msg["Cc"] = "carol@x.org"
    msg["Bcc"] = "dave@x.org"
    msg["Subject"] = "one shot"
    msg.set_content("hello\n")
    with anyio.fail_after(LIMIT):
        result = await aiosmtp.send(msg, smtpd.host, smtpd.port, tls="none", timeout=TIMEOUT)
    assert result == {}
    assert result.reply.code == 250
    [received] = smtpd.messages
    assert received.mail_from == "alice@x.org"
    assert received.rcpt_tos == ["bob@x.org", "dave@x.org", "carol@x.org"]  # smtplib's order
    assert b"Subject: one shot" in received.content
    assert b"dave@x.org" not in received.content
    assert "Bcc" in msg  # the caller's message is left as it was


async def test_send_bytes(server: BDATServer) -> None:
    with anyio.fail_after(LIMIT):
        result = await aiosmtp.send(
            BODY,
            server.host,
            server.port,
            tls="none",
            from_addr="a@x.org",
            to_addrs="b@x.org",
            timeout=TIMEOUT,
        )
        assert result == {}
        assert recipients_of(server) == [["b@x.org"]]
        assert server.messages[0].data == BODY
        # One message, one connection, closed with QUIT.
        await eventually(lambda: server.open_now == 0)
        assert server.connections[0].quit
        with pytest.raises(ValueError, match="from_addr and to_addrs"):
            await aiosmtp.send(BODY, server.host, server.port, tls="none")


def test_an_lmtp_pool_defaults_to_no_tls_on_a_unix_socket_only() -> None:
    assert aiosmtp.SMTPPool("/run/dovecot/lmtp", lmtp=True).tls == "none"
    assert aiosmtp.SMTPPool("mail.example", 24, lmtp=True).tls == "starttls"
    assert aiosmtp.SMTPPool("mail.example", 2003).tls == "starttls"


def test_an_lmtp_pool_refuses_implicit_tls() -> None:
    with pytest.raises(ValueError, match="LMTP has no implicit TLS"):
        aiosmtp.SMTPPool("mail.example", 465, lmtp=True)
