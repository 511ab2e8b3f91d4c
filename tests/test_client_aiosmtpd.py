"""The client's life cycle, concurrency and timeouts, end to end against aiosmtpd
(and, where aiosmtpd cannot misbehave as needed, a scripted server or a silent port)."""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage

import anyio
import pytest

import aiosmtp

from .scripted import ScriptedServers, close, expect, greet, quit_ok, send
from .servers import (
    EventRecordingHandler,
    Received,
    RunningServer,
    aiosmtpd_server,
    free_port,
    silent_listener,
)

pytestmark = pytest.mark.anyio

CLIENT_NAME = "client.example"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """aiosmtpd (PIPELINING advertised) recording EHLOs and QUITs."""
    with aiosmtpd_server(handler=EventRecordingHandler()) as running:
        yield running


def events(server: RunningServer) -> EventRecordingHandler:
    handler = server.handler
    assert isinstance(handler, EventRecordingHandler)
    return handler


# -- async with, connect, QUIT -------------------------------------------------------


async def test_async_with_connects_reads_the_greeting_and_quits_on_leaving(
    server: RunningServer,
) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
            assert not smtp.is_closed
            # Were the greeting still unread, this would return the 220.
            assert await smtp.noop() == (250, b"2.0.0 OK")
            assert events(server).quits == 0
        assert smtp.is_closed
    assert events(server).quits == 1


async def test_async_with_returns_the_client_itself(server: RunningServer) -> None:
    smtp = aiosmtp.SMTP(server.host, server.port, CLIENT_NAME)
    with anyio.fail_after(10):
        async with smtp as entered:
            assert entered is smtp
            ehlo = await smtp.ehlo()
            assert ehlo.code == 250
            assert smtp.has_extn("pipelining")
    assert events(server).ehlos == [(CLIENT_NAME, False)]


async def test_leaving_by_an_exception_still_quits_and_lets_it_through(
    server: RunningServer,
) -> None:
    smtp = aiosmtp.SMTP(server.host, server.port, CLIENT_NAME)

    async def use_and_fail() -> None:
        async with smtp:
            await smtp.noop()
            raise LookupError("from the block")

    with anyio.fail_after(10), pytest.raises(LookupError, match="from the block"):
        await use_and_fail()
    assert events(server).quits == 1
    assert smtp.is_closed


async def test_quit_inside_the_block_is_not_repeated_on_leaving(server: RunningServer) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
            assert await smtp.quit() == (221, b"2.0.0 Bye")
            assert smtp.is_closed
            assert smtp.esmtp_features == {}
    assert events(server).quits == 1


async def test_a_server_already_gone_on_leaving_is_not_an_error(
    scripted: ScriptedServers,
) -> None:
    fake = scripted(greet(), expect(b"NOOP\r\n"), send(b"250 ok\r\n"), close())
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(fake.host, fake.port, CLIENT_NAME, timeout=5) as smtp:
            assert await smtp.noop() == (250, b"ok")
            await fake.finished()
    assert smtp.is_closed


async def test_smtp_without_a_host_connects_when_asked(server: RunningServer) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(local_hostname=CLIENT_NAME) as smtp:
            assert smtp.is_closed
            greeting = await smtp.connect(server.host, server.port)
            assert greeting.code == 220
            assert isinstance(greeting, aiosmtp.Reply)
            assert not smtp.is_closed
        assert smtp.is_closed
    assert events(server).quits == 1


async def test_the_local_hostname_is_computed_at_the_first_connect(
    server: RunningServer,
) -> None:
    smtp = aiosmtp.SMTP(server.host, server.port)
    assert smtp.local_hostname is None
    with anyio.fail_after(10):
        async with smtp:
            assert smtp.local_hostname
            await smtp.ehlo()
    assert events(server).ehlos == [(smtp.local_hostname, False)]


async def test_host_and_port_in_one_string_like_smtplib(server: RunningServer) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(f"{server.host}:{server.port}", 0, CLIENT_NAME) as smtp:
            assert (await smtp.noop()).code == 250
        with pytest.raises(OSError, match="nonnumeric port"):
            await aiosmtp.SMTP(local_hostname=CLIENT_NAME).connect(f"{server.host}:smtp")
        with pytest.raises(OSError, match="nonnumeric port"):
            smtplib.SMTP().connect(f"{server.host}:smtp")
    assert events(server).quits == 1


async def test_source_address_is_bound(server: RunningServer) -> None:
    source_port = free_port()
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(
            server.host, server.port, CLIENT_NAME, source_address=("127.0.0.1", source_port)
        ) as smtp:
            await smtp.ehlo()
    assert events(server).peers == [("127.0.0.1", source_port)]


async def test_a_source_port_that_cannot_be_bound_raises_value_error(
    server: RunningServer,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        smtp = aiosmtp.SMTP("", 0, CLIENT_NAME, 5, ("127.0.0.1", busy))
        with anyio.fail_after(10), pytest.raises(ValueError, match="source"):
            await smtp.connect(server.host, server.port)
    assert smtp.is_closed
    assert events(server).ehlos == []


async def test_construction_does_no_io() -> None:
    # A listener never accept()ed: any connection made would wait in its queue.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        host, port = listener.getsockname()[:2]
        smtp = aiosmtp.SMTP(host, port, timeout=0.3)
        implicit = aiosmtp.SMTP_SSL(host, port, timeout=0.3)
        assert smtp.is_closed
        assert implicit.is_closed
        assert smtp.local_hostname is None  # getfqdn() waits for the first connect
        with anyio.fail_after(10):
            await anyio.sleep(0.05)
            with pytest.raises(BlockingIOError):
                listener.accept()
            # What the check above would have seen had construction connected:
            with pytest.raises(aiosmtp.SMTPTimeoutError):
                await smtp.connect(host, port)
        accepted, _ = listener.accept()
        accepted.close()


async def test_an_unreachable_host_raises_only_when_awaited() -> None:
    smtp = aiosmtp.SMTP("no-such-host.invalid", 25, timeout=3)
    assert smtp.is_closed
    assert smtp.timeout == 3
    with anyio.fail_after(10), pytest.raises(aiosmtp.SMTPException) as info:
        async with smtp:
            pytest.fail("the block must not run")
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, aiosmtp.SMTPConnectError | aiosmtp.SMTPTimeoutError)
    assert smtp.is_closed


async def test_a_closed_port_raises_smtp_connect_error_that_is_an_os_error() -> None:
    port = free_port()
    with anyio.fail_after(10):
        with pytest.raises(aiosmtp.SMTPConnectError) as info:
            async with aiosmtp.SMTP("127.0.0.1", port, CLIENT_NAME, timeout=5):
                pytest.fail("the block must not run")
        assert isinstance(info.value, OSError)
        assert isinstance(info.value, smtplib.SMTPConnectError)
        assert isinstance(info.value, aiosmtp.SMTPException)

        smtp = aiosmtp.SMTP(local_hostname=CLIENT_NAME, timeout=5)
        with pytest.raises(aiosmtp.SMTPConnectError):
            await smtp.connect("127.0.0.1", port)
        assert smtp.is_closed


async def test_a_non_220_greeting_raises_in_async_with_like_smtplib(
    scripted: ScriptedServers,
) -> None:
    greeting = b"554 5.3.2 No service for you\r\n"
    # smtplib and aiosmtp alike: no QUIT, just close.
    std_server = scripted(greet(greeting))
    ours_server = scripted(greet(greeting))

    def with_smtplib() -> BaseException | None:
        try:
            smtplib.SMTP(std_server.host, std_server.port, CLIENT_NAME, timeout=5)
        except smtplib.SMTPException as exc:
            return exc
        return None

    with anyio.fail_after(10):
        std_error = await anyio.to_thread.run_sync(with_smtplib)
        with pytest.raises(aiosmtp.SMTPConnectError) as info:
            async with aiosmtp.SMTP(ours_server.host, ours_server.port, CLIENT_NAME, timeout=5):
                pytest.fail("the block must not run")
        await std_server.finished()
        await ours_server.finished()
    assert isinstance(std_error, smtplib.SMTPConnectError)
    assert isinstance(info.value, smtplib.SMTPConnectError)
    assert (info.value.smtp_code, info.value.smtp_error) == (554, b"5.3.2 No service for you")
    assert (info.value.smtp_code, info.value.smtp_error) == (
        std_error.smtp_code,
        std_error.smtp_error,
    )


async def test_a_non_220_greeting_is_returned_by_connect(scripted: ScriptedServers) -> None:
    fake = scripted(greet(b"554 5.3.2 Busy\r\n"), quit_ok())
    smtp = aiosmtp.SMTP(local_hostname=CLIENT_NAME, timeout=5)
    with anyio.fail_after(10):
        reply = await smtp.connect(fake.host, fake.port)
        assert reply == (554, b"5.3.2 Busy")
        assert isinstance(reply, aiosmtp.Reply)
        assert reply.is_permanent
        assert reply.enhanced_status == "5.3.2"
        assert await smtp.quit() == (221, b"2.0.0 bye")
        await fake.finished()


# -- one client, many tasks -------------------------------------------------------------


def numbered(number: int) -> bytes:
    lines = [f"Subject: message {number}", f"X-Number: {number}", ""]
    lines += [f"line {line} of message {number}" for line in range(number % 7 + 1)]
    lines.append(f".dot line {number}")
    return ("\r\n".join(lines) + "\r\n").encode()


def numbered_message(number: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"sender{number}@example.com"
    msg["To"] = f"rcpt{number}@example.com, copy{number}@example.com"
    msg["Subject"] = f"message {number}"
    msg["X-Number"] = str(number)
    msg.set_content(f"body of message {number}\n.dot line\n")
    return msg


async def send_concurrently(smtp: aiosmtp.SMTP, tasks: int, per_task: int) -> dict[int, bytes]:
    """Messages 0 .. tasks*per_task-1, from ``tasks`` tasks sharing ``smtp``: odd ones
    with sendmail, even ones with send_message. Returns what each should store."""
    sent: dict[int, bytes] = {}

    async def worker(task: int) -> None:
        for index in range(per_task):
            number = task * per_task + index
            if number % 2:
                result = await smtp.sendmail(
                    f"sender{number}@example.com",
                    [f"rcpt{number}@example.com", f"copy{number}@example.com"],
                    numbered(number),
                )
                sent[number] = numbered(number)
            else:
                msg = numbered_message(number)
                result = await smtp.send_message(msg)
                sent[number] = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
            assert result == {}
            assert result.reply.code == 250

    async with anyio.create_task_group() as group:
        for task in range(tasks):
            group.start_soon(worker, task)
    return sent


def by_number(messages: list[Received]) -> dict[int, Received]:
    """The stored messages by their X-Number, failing on any duplicate."""
    found: dict[int, Received] = {}
    for stored in messages:
        parsed = email.message_from_bytes(stored.content, policy=email.policy.default)
        number = int(str(parsed["X-Number"]))
        assert number not in found, f"message {number} arrived twice"
        found[number] = stored
    return found


def assert_all_arrived_once(messages: list[Received], sent: dict[int, bytes]) -> None:
    assert len(messages) == len(sent)
    stored_by_number = by_number(messages)
    assert sorted(stored_by_number) == sorted(sent)
    for number, stored in stored_by_number.items():
        assert stored.mail_from == f"sender{number}@example.com"
        assert stored.rcpt_tos == [f"rcpt{number}@example.com", f"copy{number}@example.com"]
        assert stored.content == sent[number]


async def test_200_messages_from_50_tasks_through_one_pipelined_connection(
    server: RunningServer,
) -> None:
    with anyio.fail_after(30):
        async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME, timeout=10) as smtp:
            sent = await send_concurrently(smtp, tasks=50, per_task=4)
            assert smtp.has_extn("pipelining")
    assert sorted(sent) == list(range(200))
    assert_all_arrived_once(server.messages, sent)
    # One session: one EHLO for all of them, one QUIT.
    assert events(server).ehlos == [(CLIENT_NAME, False)]
    assert events(server).quits == 1


async def test_200_messages_from_50_tasks_over_implicit_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    handler = EventRecordingHandler()
    with aiosmtpd_server(handler=handler, implicit_tls_context=server_context) as running:
        with anyio.fail_after(30):
            async with aiosmtp.SMTP_SSL(
                running.host, running.port, CLIENT_NAME, timeout=10, context=client_context
            ) as smtp:
                sent = await send_concurrently(smtp, tasks=50, per_task=4)
        assert_all_arrived_once(running.messages, sent)
    # (aiosmtpd marks only STARTTLS sessions as TLS, so the flag says False.)
    assert [name for name, _ in handler.ehlos] == [CLIENT_NAME]


async def test_concurrent_transactions_with_refusals_stay_in_step() -> None:
    """Refused transactions (RSET in the middle of a pipelined stream) interleaved with
    good ones from many tasks: each task sees its own outcome, nothing leaks."""
    handler = EventRecordingHandler(refuse_rcpt={"nobody@example.com"})
    outcomes: dict[int, object] = {}
    with aiosmtpd_server(handler=handler) as running, anyio.fail_after(30):
        async with aiosmtp.SMTP(running.host, running.port, CLIENT_NAME, timeout=10) as smtp:

            async def worker(number: int) -> None:
                kind = number % 3
                recipients = {
                    0: [f"rcpt{number}@example.com"],
                    1: [f"rcpt{number}@example.com", "nobody@example.com"],
                    2: ["nobody@example.com"],
                }[kind]
                try:
                    result = await smtp.sendmail(
                        f"sender{number}@example.com", recipients, numbered(number)
                    )
                except aiosmtp.SMTPRecipientsRefused as exc:
                    outcomes[number] = exc.recipients
                else:
                    outcomes[number] = dict(result)

            async with anyio.create_task_group() as group:
                for number in range(120):
                    group.start_soon(worker, number)
            assert await smtp.noop() == (250, b"2.0.0 OK")
    refusal = {"nobody@example.com": (550, b"5.1.1 No such user")}
    for number in range(120):
        assert outcomes[number] == ({} if number % 3 == 0 else refusal), number
    stored_by_number = by_number(running.messages)
    assert sorted(stored_by_number) == [number for number in range(120) if number % 3 != 2]
    for number, stored in stored_by_number.items():
        assert stored.mail_from == f"sender{number}@example.com"
        assert stored.rcpt_tos == [f"rcpt{number}@example.com"]
        assert stored.content == numbered(number)


# -- what goes on the wire ----------------------------------------------------------------


async def test_bare_line_endings_in_bytes_are_sent_as_crlf_and_cannot_end_the_data(
    server: RunningServer,
) -> None:
    # A deliberate difference from smtplib (SMTP smuggling): bare LF and bare CR
    # become CRLF before dot-stuffing, so "\n.\n" cannot end the data early.
    data = (
        b"Subject: smuggling\n\nfirst\n.\nMAIL FROM:<evil@example.com>\r\n"
        b"RCPT TO:<victim@example.com>\r\nDATA\r\nbare CR\rend\n"
    )
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
            assert await smtp.sendmail("alice@example.com", ["bob@example.com"], data) == {}
            assert await smtp.noop() == (250, b"2.0.0 OK")
    [stored] = server.messages
    assert stored.rcpt_tos == ["bob@example.com"]
    assert stored.content == (
        b"Subject: smuggling\r\n\r\nfirst\r\n.\r\nMAIL FROM:<evil@example.com>\r\n"
        b"RCPT TO:<victim@example.com>\r\nDATA\r\nbare CR\r\nend\r\n"
    )


async def test_a_second_connect_starts_a_fresh_session(server: RunningServer) -> None:
    other_handler = EventRecordingHandler()
    with aiosmtpd_server(handler=other_handler, enable_SMTPUTF8=False) as other:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
                await smtp.ehlo()
                assert smtp.has_extn("smtputf8")
                assert (await smtp.connect(other.host, other.port)).code == 220
                # Nothing learnt from the first server survives.
                assert smtp.esmtp_features == {}
                assert smtp.ehlo_resp is None
                msg = EmailMessage()
                msg["From"] = "alice@example.com"
                msg["To"] = "zoë@example.com"
                msg.set_content("x\n")
                with pytest.raises(aiosmtp.SMTPNotSupportedError):
                    await smtp.send_message(msg)
                assert not smtp.has_extn("smtputf8")
    # The first session was dropped, not quit; the second one was quit.
    assert events(server).quits == 0
    assert other_handler.ehlos == [(CLIENT_NAME, False)]
    assert other_handler.quits == 1


# -- timeouts ---------------------------------------------------------------------------


def test_timeout_is_stored() -> None:
    assert aiosmtp.SMTP().timeout == 60.0
    assert aiosmtp.SMTP(timeout=2.5).timeout == 2.5
    assert aiosmtp.SMTP("localhost", 25, None, 7.0).timeout == 7.0
    assert aiosmtp.SMTP(timeout=None).timeout is None
    assert aiosmtp.SMTP_SSL(timeout=1.0).timeout == 1.0


@pytest.mark.parametrize("limit", [0.3, 0.8])
async def test_a_server_that_never_greets_times_out(limit: float) -> None:
    with silent_listener() as (host, port):
        smtp = aiosmtp.SMTP(host, port, CLIENT_NAME, timeout=limit)
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(aiosmtp.SMTPTimeoutError) as info:
            async with smtp:
                pytest.fail("the block must not run")
        elapsed = time.monotonic() - started
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, aiosmtp.SMTPException)
    assert isinstance(info.value, smtplib.SMTPException)
    assert limit * 0.9 <= elapsed < limit + 2
    assert smtp.is_closed


async def test_a_tls_handshake_that_never_answers_times_out(
    client_context: ssl.SSLContext,
) -> None:
    with silent_listener() as (host, port):
        smtp = aiosmtp.SMTP_SSL(host, port, CLIENT_NAME, timeout=0.4, context=client_context)
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(aiosmtp.SMTPTimeoutError):
            await smtp.connect(host, port)
        elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3
    assert smtp.is_closed


async def test_a_reply_that_never_comes_times_out_and_closes() -> None:
    handler = EventRecordingHandler(hang_noop=True)
    with aiosmtpd_server(handler=handler) as running:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(running.host, running.port, CLIENT_NAME, timeout=0.5) as smtp:
                await smtp.ehlo()
                started = time.monotonic()
                with pytest.raises(aiosmtp.SMTPTimeoutError) as info:
                    await smtp.noop()
                elapsed = time.monotonic() - started
                assert isinstance(info.value, TimeoutError)
                assert 0.45 <= elapsed < 3
                # The session's state is unknown: it is closed, and stays closed.
                assert smtp.is_closed
                with pytest.raises(aiosmtp.SMTPServerDisconnected) as later:
                    await smtp.noop()
                assert not isinstance(later.value, TimeoutError)
                # A fresh connection works again.
                handler.hang_noop = False
                assert (await smtp.connect(running.host, running.port)).code == 220
                assert await smtp.noop() == (250, b"2.0.0 OK")
    assert handler.quits == 1


async def test_cancelling_a_command_closes_the_connection() -> None:
    handler = EventRecordingHandler(hang_noop=True)
    with aiosmtpd_server(handler=handler) as running:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(running.host, running.port, CLIENT_NAME, timeout=30) as smtp:
                with anyio.move_on_after(0.2) as scope:
                    await smtp.noop()
                assert scope.cancelled_caught
                assert smtp.is_closed
                with pytest.raises(aiosmtp.SMTPServerDisconnected):
                    await smtp.ehlo()
    assert handler.quits == 0
