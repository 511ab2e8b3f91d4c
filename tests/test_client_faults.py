"""Faults, timeouts, TLS failures, cancellation and concurrency, against scripted servers.

After every fault the same client object must be able to ``connect()`` again and
send: nothing of the broken session may leak into the next one.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
import trustme

import aiosmtp

from .scripted import (
    GREETING,
    TIMEOUT,
    MiniSMTP,
    ScriptedServers,
    Step,
    call,
    client,
    close,
    ehlo_ok,
    ehlo_reply,
    expect,
    greet,
    quit_ok,
    recv_until,
    reset,
    send,
    shutdown_write,
    sleep,
    start_tls,
    stop_reading,
    trickle,
)

pytestmark = pytest.mark.anyio

MSG = b"Subject: test\r\n\r\nHello\r\n"
NOOP_OK = b"250 2.0.0 noop-ok\r\n"


def good_session() -> list[Step]:
    """A whole session: EHLO (required again), one message, QUIT."""
    return [
        greet(),
        *ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG + b".\r\n"),
        send(b"250 2.0.0 queued as FRESH\r\n"),
        *quit_ok(),
    ]


async def assert_recovers(smtp: aiosmtp.SMTP, scripted: ScriptedServers) -> None:
    """The client is closed, and a fresh connect() makes it work again."""
    assert smtp.is_closed
    with pytest.raises(aiosmtp.SMTPServerDisconnected):
        await smtp.noop()
    fresh = scripted(good_session())
    assert await smtp.connect(fresh.host, fresh.port) == (220, GREETING[4:-2])
    assert not smtp.is_tls
    result = await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
    assert result == {}
    assert result.reply == (250, b"2.0.0 queued as FRESH")
    await smtp.quit()
    await fresh.finished()


# -- the server goes away --------------------------------------------------------------


@pytest.mark.parametrize("hang_up", [close, reset], ids=["fin", "reset"])
async def test_disconnect_at_the_greeting(
    scripted: ScriptedServers, hang_up: Callable[[], Step]
) -> None:
    # A moment first, so that the client is connected and waiting for the greeting.
    server = scripted(sleep(0.05), hang_up())
    with anyio.fail_after(5):
        smtp = client(server)
        with pytest.raises(aiosmtp.SMTPServerDisconnected) as info:
            await smtp.connect(server.host, server.port)
        assert isinstance(info.value, smtplib.SMTPServerDisconnected)
        await assert_recovers(smtp, scripted)


async def test_disconnect_at_the_greeting_in_async_with(scripted: ScriptedServers) -> None:
    server = scripted(close())
    with anyio.fail_after(5), pytest.raises(aiosmtp.SMTPServerDisconnected):
        async with client(server):
            pytest.fail("the block must not run")


async def test_leaving_the_block_when_the_server_is_gone_is_no_error(
    scripted: ScriptedServers,
) -> None:
    server = scripted(greet(), ehlo_ok("8BITMIME"), close())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
        assert smtp.is_closed


async def test_disconnect_after_ehlo(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("8BITMIME"), close())
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        await smtp.ehlo()
        with pytest.raises(aiosmtp.SMTPServerDisconnected) as info:
            await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
        # The data never went out: this is no "delivery unknown".
        assert not isinstance(info.value, aiosmtp.SMTPDeliveryUnknownError)
        await assert_recovers(smtp, scripted)


async def test_disconnect_in_the_middle_of_a_reply(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"EHLO client.example\r\n"),
        send(b"250-test.example\r\n250-PIPEL"),
        close(),
    )
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPServerDisconnected):
            await smtp.ehlo()
        await assert_recovers(smtp, scripted)


async def test_disconnect_after_the_final_dot(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG + b".\r\n"),
        close(),
    )
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError) as info:
            await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
        assert isinstance(info.value, aiosmtp.SMTPServerDisconnected)
        await assert_recovers(smtp, scripted)


async def test_server_half_closes_after_421(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"421 4.3.2 going down\r\n"),
        shutdown_write(),
        # The server still listens: the client must send nothing more (no RSET).
    )
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPSenderRefused) as info:
            await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
        assert info.value.smtp_code == 421
        await server.finished()
        await assert_recovers(smtp, scripted)


# -- nonsense from the server --------------------------------------------------------------

GARBAGE = [
    b"hello there\r\n",
    b"2x0 nope\r\n",
    b"250x\r\n",
    b"600 no such class\r\n",
    b"\r\n",
    b"25\r\n",
    b"250-first\r\n354 changed code\r\n",
]


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_reply_raises_and_closes(scripted: ScriptedServers, garbage: bytes) -> None:
    server = scripted(greet(), expect(b"NOOP\r\n"), send(garbage))
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPResponseException) as info:
            await smtp.noop()
        assert isinstance(info.value, smtplib.SMTPResponseException)
        await assert_recovers(smtp, scripted)


async def test_garbage_greeting(scripted: ScriptedServers) -> None:
    server = scripted(send(b"SSH-2.0-OpenSSH_9.6\r\n"))
    with anyio.fail_after(5):
        smtp = client(server)
        with pytest.raises(aiosmtp.SMTPResponseException):
            await smtp.connect(server.host, server.port)
        await assert_recovers(smtp, scripted)


@pytest.mark.parametrize(
    ("line_length", "ok"),
    [(8192, True), (8193, False), (20000, False)],
)
async def test_reply_line_length_limit(
    scripted: ScriptedServers, line_length: int, ok: bool
) -> None:
    # smtplib's limit: 8192 bytes per line, CRLF included.
    line = b"250 " + b"x" * (line_length - 6) + b"\r\n"
    assert len(line) == line_length
    server = scripted(greet(), expect(b"NOOP\r\n"), send(line), *([quit_ok()] if ok else []))
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        if ok:
            assert await smtp.noop() == (250, line[4:-2])
            await smtp.quit()
            return
        with pytest.raises(aiosmtp.SMTPResponseException) as info:
            await smtp.noop()
        assert info.value.smtp_code == 500
        await assert_recovers(smtp, scripted)


async def test_endless_reply_line_fails_without_waiting(scripted: ScriptedServers) -> None:
    # No line end at all: the client must give up at the limit, not at the timeout.
    server = scripted(greet(), expect(b"NOOP\r\n"), send(b"250 " + b"y" * 9000))
    with anyio.fail_after(5):
        smtp = client(server, timeout=3.0)
        await smtp.connect(server.host, server.port)
        started = time.monotonic()
        with pytest.raises(aiosmtp.SMTPResponseException) as info:
            await smtp.noop()
        assert time.monotonic() - started < 1.0
        assert info.value.smtp_code == 500
        await assert_recovers(smtp, scripted)


@pytest.mark.parametrize(("lines", "ok"), [(1000, True), (1001, False)])
async def test_reply_line_count_limit(scripted: ScriptedServers, lines: int, ok: bool) -> None:
    reply = b"".join(b"250-line\r\n" for _ in range(lines - 1)) + b"250 last\r\n"
    server = scripted(greet(), expect(b"NOOP\r\n"), send(reply), *([quit_ok()] if ok else []))
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        if ok:
            assert (await smtp.noop()).message.count(b"\n") == lines - 1
            await smtp.quit()
            return
        with pytest.raises(aiosmtp.SMTPResponseException):
            await smtp.noop()
        await assert_recovers(smtp, scripted)


@pytest.mark.parametrize(
    "where", ["greeting", "after-noop", "partial-line", "after-ehlo"], ids=str
)
async def test_unsolicited_trailing_bytes_raise_and_close(
    scripted: ScriptedServers, where: str
) -> None:
    steps: list[Step]
    if where == "greeting":
        steps = [send(GREETING + b"250 2.0.0 noop-ok\r\n")]
    elif where == "after-noop":
        steps = [greet(), expect(b"NOOP\r\n"), send(NOOP_OK + b"250 2.0.0 stale\r\n")]
    elif where == "partial-line":
        steps = [greet(), expect(b"NOOP\r\n"), send(NOOP_OK + b"25")]
    else:
        steps = [
            greet(),
            expect(b"EHLO client.example\r\n"),
            send(ehlo_reply("8BITMIME") + b"250 ok\r\n"),
        ]
    server = scripted(steps)
    with anyio.fail_after(5):
        smtp = client(server)
        if where == "greeting":
            with pytest.raises(aiosmtp.SMTPResponseException):
                await smtp.connect(server.host, server.port)
        else:
            await smtp.connect(server.host, server.port)
            with pytest.raises(aiosmtp.SMTPResponseException):
                await (smtp.ehlo() if where == "after-ehlo" else smtp.noop())
        await assert_recovers(smtp, scripted)


# -- timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["greeting", "reply"])
async def test_silence_raises_timeout_error_and_closes(
    scripted: ScriptedServers, where: str
) -> None:
    if where == "greeting":
        steps = [call(lambda conn: None)]  # accepts, then says nothing
    else:
        steps = [greet(), expect(b"EHLO client.example\r\n")]
    server = scripted(steps)
    with anyio.fail_after(5):
        smtp = client(server)
        if where == "reply":
            await smtp.connect(server.host, server.port)
        started = time.monotonic()
        with pytest.raises(aiosmtp.SMTPTimeoutError) as info:
            await (smtp.connect(server.host, server.port) if where == "greeting" else smtp.ehlo())
        elapsed = time.monotonic() - started
        assert TIMEOUT * 0.8 < elapsed < TIMEOUT + 1.0
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, aiosmtp.SMTPException)
        assert isinstance(info.value, smtplib.SMTPException)
        await server.finished()  # the client hung up without another byte
        await assert_recovers(smtp, scripted)


async def test_silence_after_the_final_dot_leaves_the_outcome_unknown(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG + b".\r\n"),
    )
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError) as info:
            await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
        assert isinstance(info.value, aiosmtp.SMTPTimeoutError)
        assert isinstance(info.value, TimeoutError)
        await assert_recovers(smtp, scripted)


@pytest.mark.parametrize("code", [421, 554])
async def test_greeting_other_than_220(scripted: ScriptedServers, code: int) -> None:
    greeting = f"{code} 5.3.2 not accepting mail\r\n".encode()
    first = scripted(send(greeting))
    second = scripted(send(greeting), *([] if code == 421 else quit_ok()))
    with anyio.fail_after(5):
        # Entering the block raises (as smtplib's constructor does), sending nothing.
        with pytest.raises(aiosmtp.SMTPConnectError) as info:
            async with client(first):
                pytest.fail("the block must not run")
        assert (info.value.smtp_code, info.value.smtp_error) == (code, b"5.3.2 not accepting mail")
        # connect() returns the greeting, as smtplib's does.
        smtp = client(second)
        assert await smtp.connect(second.host, second.port) == (code, greeting[4:-2])
        if code == 421:
            assert smtp.is_closed
        else:
            assert (await smtp.quit()).code == 221


async def test_multiline_greeting(scripted: ScriptedServers) -> None:
    server = scripted(send(b"220-test.example ESMTP\r\n220 no UCE\r\n"), *quit_ok())
    with anyio.fail_after(5):
        smtp = client(server)
        assert await smtp.connect(server.host, server.port) == (
            220,
            b"test.example ESMTP\nno UCE",
        )
        await smtp.quit()


async def test_replies_with_bare_lf_line_endings(scripted: ScriptedServers) -> None:
    server = scripted(
        send(b"220 test.example\n"),
        expect(b"EHLO client.example\r\n"),
        send(b"250-test.example\n250-PIPELINING\n250 SIZE 1000\n"),
        expect(b"NOOP\r\n"),
        send(b"250\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            assert smtp.esmtp_features == {"pipelining": "", "size": "1000"}
            assert await smtp.noop() == (250, b"")


async def test_slow_server_one_byte_at_a_time(scripted: ScriptedServers) -> None:
    server = scripted(
        trickle(GREETING),
        expect(b"EHLO client.example\r\n"),
        trickle(ehlo_reply("PIPELINING", "8BITMIME")),
        expect(b"NOOP\r\n"),
        trickle(b"250-2.0.0 one\r\n250 2.0.0 two\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            assert smtp.has_extn("pipelining")
            assert await smtp.noop() == (250, b"2.0.0 one\n2.0.0 two")


async def test_server_that_stops_reading_times_out_the_write(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        stop_reading(),
        reset(),
    )
    # Far more than the socket buffers on both sides can hold.
    big = b"".join([b"x" * 998 + b"\r\n"] * 40_000)
    with anyio.fail_after(10):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        started = time.monotonic()
        with pytest.raises(aiosmtp.SMTPTimeoutError) as info:
            await smtp.sendmail("a@x.org", ["b@x.org"], big)
        assert time.monotonic() - started < 5
        # The end of the data never left: the message was certainly not delivered.
        assert not isinstance(info.value, aiosmtp.SMTPDeliveryUnknownError)
        await server.finished()
        await assert_recovers(smtp, scripted)


# -- STARTTLS ------------------------------------------------------------------------------


def starttls_steps() -> list[Step]:
    return [
        greet(),
        *ehlo_ok("STARTTLS", "PIPELINING"),
        expect(b"STARTTLS\r\n"),
    ]


async def test_starttls_then_a_transaction(
    scripted: ScriptedServers, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = scripted(
        starttls_steps(),
        send(b"220 2.0.0 ready\r\n"),
        start_tls(server_context),
        # RFC 3207: everything learnt before TLS is forgotten, so EHLO again.
        ehlo_ok("8BITMIME", "AUTH PLAIN"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        recv_until(b"\r\n.\r\n", MSG + b".\r\n"),
        send(b"250 2.0.0 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server, context=client_context) as smtp:
            assert await smtp.starttls() == (220, b"2.0.0 ready")
            assert smtp.is_tls
            assert smtp.esmtp_features == {}
            assert smtp.ehlo_resp is None
            assert not smtp.does_esmtp
            assert await smtp.sendmail("a@x.org", ["b@x.org"], MSG) == {}
            assert smtp.has_extn("auth")
            assert not smtp.has_extn("pipelining")
    directions = [direction for direction, _ in server.log]
    assert "TLS" in directions
    after_tls = b"".join(data for d, data in server.log[directions.index("TLS") :] if d == "C")
    assert after_tls.startswith(b"EHLO client.example\r\n")


async def test_tls_handshake_that_never_completes_times_out(
    scripted: ScriptedServers, client_context: ssl.SSLContext
) -> None:
    server = scripted(
        starttls_steps(),
        send(b"220 2.0.0 ready\r\n"),
        # The ClientHello is left unread and unanswered.
        stop_reading(),
        close(),
    )
    with anyio.fail_after(5):
        smtp = client(server, context=client_context)
        await smtp.connect(server.host, server.port)
        started = time.monotonic()
        with pytest.raises(aiosmtp.SMTPTimeoutError):
            await smtp.starttls()
        assert time.monotonic() - started < TIMEOUT + 1.0
        assert not smtp.is_tls
        await server.finished()
        await assert_recovers(smtp, scripted)


async def test_starttls_not_offered(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("8BITMIME"), expect(b"NOOP\r\n"), send(NOOP_OK), quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await smtp.starttls()
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


async def test_starttls_with_plaintext_injected_after_220(
    scripted: ScriptedServers, client_context: ssl.SSLContext
) -> None:
    server = scripted(
        starttls_steps(),
        # The 220 and an injected reply in one packet (CVE-2011-0411): the client
        # must not start TLS (the server then sees only the client hang up).
        send(b"220 2.0.0 ready\r\n250-injected\r\n250 AUTH PLAIN\r\n"),
    )
    with anyio.fail_after(5):
        smtp = client(server, context=client_context)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPException) as info:
            await smtp.starttls()
        assert not isinstance(info.value, ssl.SSLError)
        assert not smtp.is_tls
        await server.finished()
        await assert_recovers(smtp, scripted)


@pytest.fixture(scope="session")
def untrusted_server_context() -> ssl.SSLContext:
    """A certificate for 127.0.0.1 from a CA the client does not trust."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def wrong_name_server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A certificate from the trusted CA, but for another host."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.other.example").configure_cert(context)
    return context


@pytest.mark.parametrize("problem", ["untrusted-ca", "wrong-name", "wrong-sni"])
async def test_starttls_certificate_failures(
    scripted: ScriptedServers,
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    untrusted_server_context: ssl.SSLContext,
    wrong_name_server_context: ssl.SSLContext,
    problem: str,
) -> None:
    server_side = {
        "untrusted-ca": untrusted_server_context,
        "wrong-name": wrong_name_server_context,
        "wrong-sni": server_context,
    }[problem]
    server = scripted(
        starttls_steps(),
        send(b"220 2.0.0 ready\r\n"),
        start_tls(server_side, expect_failure=True),
    )
    hostname = "mail.example.net" if problem == "wrong-sni" else None
    with anyio.fail_after(5):
        smtp = client(server, context=client_context)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPCertificateError) as info:
            await smtp.starttls(server_hostname=hostname)
        assert isinstance(info.value, ssl.SSLCertVerificationError)
        assert isinstance(info.value, aiosmtp.SMTPException)
        assert isinstance(info.value, smtplib.SMTPException)
        assert not smtp.is_tls
        await server.finished()
        # The client did start the handshake (start_tls checks), then gave up.
        assert server.tls_error is not None
        await assert_recovers(smtp, scripted)


async def test_starttls_verifies_by_default(
    scripted: ScriptedServers, server_context: ssl.SSLContext
) -> None:
    # No context given: the default one must not trust the test CA.
    server = scripted(
        starttls_steps(),
        send(b"220 2.0.0 ready\r\n"),
        start_tls(server_context, expect_failure=True),
    )
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPCertificateError):
            await smtp.starttls()
        await assert_recovers(smtp, scripted)


async def test_implicit_tls(
    scripted: ScriptedServers, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = scripted(start_tls(server_context), greet(), ehlo_ok("AUTH PLAIN"), quit_ok())
    with anyio.fail_after(5):
        async with client(server, aiosmtp.SMTP_SSL, context=client_context) as smtp:
            assert smtp.is_tls
            await smtp.ehlo()
            assert smtp.has_extn("auth")


async def test_implicit_tls_with_an_untrusted_certificate(
    scripted: ScriptedServers,
    untrusted_server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = scripted(start_tls(untrusted_server_context, expect_failure=True))
    with anyio.fail_after(5):
        smtp = client(server, aiosmtp.SMTP_SSL, context=client_context)
        with pytest.raises(aiosmtp.SMTPCertificateError):
            await smtp.connect(server.host, server.port)
        assert smtp.is_closed


# -- cancellation ----------------------------------------------------------------------------

# The commands of one sendmail as MiniSMTP counts them: EHLO, MAIL, RCPT, RCPT, DATA,
# and the end of the data.
_COMMANDS = 6


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
@pytest.mark.parametrize("hold_at", range(_COMMANDS))
async def test_cancel_while_waiting_for_each_reply(
    scripted: ScriptedServers, hold_at: int, pipelining: bool
) -> None:
    logic = MiniSMTP(features=("PIPELINING",) if pipelining else (), hold_at=hold_at)
    server = scripted(greet(), call(logic))
    finished: list[object] = []
    with anyio.fail_after(5):
        smtp = client(server, timeout=5.0)
        await smtp.connect(server.host, server.port)
        scope = anyio.CancelScope()

        async def send_it() -> None:
            with scope:
                finished.append(await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], MSG))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_it)
            assert await anyio.to_thread.run_sync(logic.reached.wait, 5)
            scope.cancel()
        logic.release.set()
        assert finished == []
        # Cancelled in the middle of a command: the state is unknown, so closed.
        assert smtp.is_closed
        with pytest.raises(aiosmtp.SMTPServerDisconnected):
            await smtp.noop()
        await server.finished()
        assert logic.state == "hung up"


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
async def test_cancel_at_increasing_delays(scripted: ScriptedServers, pipelining: bool) -> None:
    outcomes: set[str] = set()
    # Ever later, until the whole sendmail fits in the time given.
    for step in range(60):
        if "sent" in outcomes:
            break
        logic = MiniSMTP(features=("PIPELINING",) if pipelining else (), delay=0.005)
        server = scripted(greet(), call(logic))
        with anyio.fail_after(5):
            smtp = client(server, timeout=5.0)
            await smtp.connect(server.host, server.port)
            with anyio.move_on_after(step * 0.003) as scope:
                await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], MSG)
            if smtp.is_closed:
                assert scope.cancelled_caught
                outcomes.add("closed")
                with pytest.raises(aiosmtp.SMTPServerDisconnected):
                    await smtp.noop()
            else:
                # In step: the next reply read is the NOOP's, not a stale one.
                outcomes.add("cancelled in step" if scope.cancelled_caught else "sent")
                assert await smtp.noop() == (250, b"2.0.0 noop-ok")
                await smtp.quit()
            await server.finished()
    assert "closed" in outcomes
    assert "sent" in outcomes


async def test_cancel_while_writing_a_large_message(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        stop_reading(),
        reset(),
    )
    big = b"".join([b"z" * 998 + b"\r\n"] * 40_000)
    with anyio.fail_after(10):
        smtp = client(server, timeout=5.0)
        await smtp.connect(server.host, server.port)
        with anyio.move_on_after(0.2) as scope:
            await smtp.sendmail("a@x.org", ["b@x.org"], big)
        assert scope.cancelled_caught
        await server.finished()
        await assert_recovers(smtp, scripted)


async def test_cancelling_a_task_that_waits_for_the_lock_leaves_the_session_alone(
    scripted: ScriptedServers,
) -> None:
    logic = MiniSMTP(features=("PIPELINING",), hold_at=1)
    server = scripted(greet(), call(logic))
    results: list[object] = []
    with anyio.fail_after(5):
        smtp = client(server, timeout=5.0)
        await smtp.connect(server.host, server.port)

        async def send_it() -> None:
            results.append(await smtp.sendmail("a@x.org", ["b@x.org"], MSG))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_it)
            assert await anyio.to_thread.run_sync(logic.reached.wait, 5)
            with anyio.move_on_after(0.05) as scope:
                await smtp.noop()  # waits for the transaction to finish
            assert scope.cancelled_caught
            logic.release.set()
        assert results == [{}]
        assert not smtp.is_closed
        assert await smtp.noop() == (250, b"2.0.0 noop-ok")
        await smtp.quit()
    assert b"NOOP\r\n" not in logic.commands[:-2]


# -- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
async def test_twenty_tasks_share_one_client_without_interleaving(
    scripted: ScriptedServers, pipelining: bool
) -> None:
    logic = MiniSMTP(features=("PIPELINING",) if pipelining else (), delay=0.0005)
    server = scripted(greet(), call(logic))
    results: dict[int, object] = {}
    with anyio.fail_after(10):
        async with client(server, timeout=5.0) as smtp:

            async def send_one(i: int) -> None:
                await anyio.lowlevel.checkpoint()
                message = f"Subject: message {i}\r\n\r\nbody {i}\r\n".encode()
                results[i] = await smtp.sendmail(
                    f"sender{i}@x.org", [f"rcpt{i}a@x.org", f"rcpt{i}b@x.org"], message
                )

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(send_one, i)
    assert results == {i: {} for i in range(20)}
    transcript = server.transcript
    assert transcript.count(b"EHLO ") == 1
    # Every transaction, cut at its MAIL, speaks of one task only, complete and in order.
    groups = transcript.split(b"MAIL FROM:")[1:]
    assert len(groups) == 20
    seen = set()
    for group in groups:
        numbers = set(re.findall(rb"(?:sender|rcpt|message |body )(\d+)", group))
        assert len(numbers) == 1, group
        i = int(numbers.pop())
        seen.add(i)
        expected = (
            f"<sender{i}@x.org>\r\nRCPT TO:<rcpt{i}a@x.org>\r\nRCPT TO:<rcpt{i}b@x.org>\r\n"
            f"DATA\r\nSubject: message {i}\r\n\r\nbody {i}\r\n.\r\n"
        ).encode()
        assert group.removesuffix(b"QUIT\r\n") == expected
    assert seen == set(range(20))
    assert len(logic.transactions) == 20


# -- the source address --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


async def test_source_port_is_used_when_free(scripted: ScriptedServers) -> None:
    server = scripted(greet(), quit_ok())
    port = _free_port()
    with anyio.fail_after(5):
        async with client(server, source_address=("127.0.0.1", port)):
            pass
    assert server.peer == ("127.0.0.1", port)


async def test_source_port_that_cannot_be_bound(scripted: ScriptedServers, busy_port: int) -> None:
    server = scripted(greet(), quit_ok())
    with anyio.fail_after(5):
        smtp = client(server, source_address=("127.0.0.1", busy_port))
        with pytest.raises(ValueError, match=str(busy_port)):
            await smtp.connect(server.host, server.port)
        assert smtp.is_closed
        # With the default source address, the same client connects.
        await smtp.connect(server.host, server.port, source_address=("127.0.0.1", 0))
        await smtp.quit()
