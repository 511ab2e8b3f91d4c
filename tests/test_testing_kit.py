"""aiosmtp.testing: the recording server users start in their own tests.

Driven by aiosmtp's own client (on asyncio and trio), by a raw socket where the
exact replies matter, and by the standard library's smtplib against the
thread-backed variant. The pytest plugin is run through ``pytester`` in a
subprocess that finds it by its entry point, as a user's pytest would.
"""

from __future__ import annotations

import email.message
import smtplib
import ssl
import tempfile
import textwrap
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSStream

import aiosmtp
from aiosmtp.testing import (
    DEFAULT_EXTENSIONS,
    RecordingServer,
    Step,
    ThreadedRecordingServer,
)

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
MSG = b"Subject: kit\r\n\r\nHello from the kit.\r\n"
TIMEOUT = 2.0
NO_CHUNKING = tuple(e for e in DEFAULT_EXTENSIONS if e != "CHUNKING")
USERS = {"alice": "correct horse", "jörg": "pässwörd"}


class Raw:
    """A bare client on a socket, for byte-exact dialogues."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def line(self) -> bytes:
        with anyio.fail_after(TIMEOUT):
            while b"\r\n" not in self.buffer:
                self.buffer += await self.stream.receive()
        line, _, rest = bytes(self.buffer).partition(b"\r\n")
        self.buffer[:] = rest
        return line

    async def reply(self) -> tuple[int, str]:
        lines = [await self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(await self.line())
        return int(lines[-1][:3]), "\n".join(line[4:].decode() for line in lines)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def command(self, line: str | bytes) -> int:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return (await self.reply())[0]

    async def reply_to(self, line: str) -> tuple[int, str]:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def bdat(self, chunk: bytes, *, last: bool = False) -> int:
        await self.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
        return (await self.reply())[0]

    async def eof(self) -> bool:
        """True when the server has closed the connection."""
        try:
            with anyio.fail_after(TIMEOUT):
                data = await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
        self.buffer += data
        return False


@asynccontextmanager
async def raw(
    server: RecordingServer, ehlo: str | None = "EHLO raw.example"
) -> AsyncIterator[Raw]:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        client = Raw(stream)
        assert (await client.reply())[0] == 220
        if ehlo is not None:
            assert await client.command(ehlo) == 250
        yield client


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "kit.sock"
    if len(str(path)) < 100:
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="kit") as directory:
        yield str(Path(directory) / "s")


# -- recording ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_records_envelope_payload_and_session(chunking: bool) -> None:
    extensions = DEFAULT_EXTENSIONS if chunking else NO_CHUNKING
    payload = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
    async with (
        RecordingServer(extensions=extensions) as server,
        aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp,
    ):
        result = await smtp.sendmail(
            "from@example.com", ["to@example.com", "cc@example.com"], payload
        )
        [message] = server.messages
    assert result == {}
    assert result.reply.text == f"2.0.0 Ok: queued as {message.queue_id}"
    assert message.mail_from == "from@example.com"
    assert message.rcpt_tos == ["to@example.com", "cc@example.com"]
    assert message.rcpt_options == [[], []]
    assert message.mail_options == [f"SIZE={len(payload)}"]
    assert message.data == payload
    assert message.via == ("BDAT" if chunking else "DATA")
    assert message.message["Subject"] == "dots"
    assert isinstance(message.message, email.message.EmailMessage)
    assert (message.tls, message.auth_user, message.lmtp) == (False, None, False)
    [session] = server.sessions
    assert session.number == message.session
    assert message.peer.startswith("127.0.0.1:")
    assert session.commands[0].startswith("EHLO ")
    assert session.commands[-1] == "QUIT"
    assert session.closed


@pytest.mark.anyio
async def test_send_message_with_options_smtputf8_and_dsn() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "jörg@exämple.com"
    msg["To"] = "zoë@example.com"
    msg["Bcc"] = "hidden@example.com"
    msg["Subject"] = "ünïcode"
    msg.set_content("Grüße\n")
    async with (
        RecordingServer() as server,
        aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp,
    ):
        await smtp.send_message(msg, rcpt_options=["NOTIFY=FAILURE"], mail_options=["RET=HDRS"])
    [message] = server.messages
    assert message.mail_from == "jörg@exämple.com"
    assert message.rcpt_tos == ["zoë@example.com", "hidden@example.com"]
    assert message.rcpt_options == [["NOTIFY=FAILURE"], ["NOTIFY=FAILURE"]]
    assert {"SMTPUTF8", "BODY=8BITMIME", "RET=HDRS"} <= set(message.mail_options)
    assert message.message["Subject"] == "ünïcode"
    assert "Bcc" not in message.message


@pytest.mark.anyio
async def test_many_messages_over_one_connection_and_wait_for() -> None:
    async with RecordingServer() as server:
        with pytest.raises(TimeoutError):
            await server.wait_for(1, timeout=0.05)

        async def send_all() -> None:
            async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
                for number in range(5):
                    await smtp.sendmail("a@example.com", [f"r{number}@example.com"], MSG)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send_all)
            messages = await server.wait_for(5)
        assert [m.rcpt_tos for m in messages] == [[f"r{n}@example.com"] for n in range(5)]
        assert len({m.queue_id for m in messages}) == 5
        assert len(server.sessions) == 1
        server.clear()
        assert server.messages == []
        assert server.sessions == []


@pytest.mark.anyio
async def test_starttls_and_auth_are_recorded(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with RecordingServer(tls_context=server_context, auth=USERS) as server:
        async with aiosmtp.SMTP(
            server.host, server.port, timeout=TIMEOUT, context=client_context
        ) as smtp:
            await smtp.ehlo()
            assert smtp.has_extn("starttls")
            assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            await smtp.starttls()
            await smtp.ehlo()
            assert not smtp.has_extn("starttls")
            with pytest.raises(aiosmtp.SMTPAuthenticationError):
                await smtp.login("alice", "wrong")
            assert (await smtp.login("jörg", "pässwörd")).code == 235
            await smtp.sendmail("a@example.com", ["b@example.com"], MSG)
        # LOGIN, with and without an initial response.
        for initial in (True, False):
            async with aiosmtp.SMTP(
                server.host, server.port, timeout=TIMEOUT, context=client_context
            ) as smtp:
                await smtp.starttls()
                await smtp.ehlo()
                smtp.user, smtp.password = "alice", "correct horse"
                reply = await smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=initial)
                assert reply.code == 235
        [message] = server.messages
        assert (message.tls, message.auth_user) == (True, "jörg")
        assert [s.auth_user for s in server.sessions] == ["jörg", "alice", "alice"]
        # Credentials never reach the command log.
        assert "AUTH PLAIN" in server.sessions[0].commands
        assert not any("cGFzc" in c or "correct" in c for c in server.sessions[0].commands)


@pytest.mark.anyio
async def test_plaintext_after_starttls_is_thrown_away(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with RecordingServer(tls_context=server_context) as server:
        async with raw(server) as client:
            # RFC 3207 4.2: bytes sent before the handshake may be an injection.
            await client.send(b"STARTTLS\r\nRSET\r\n")
            assert (await client.reply())[0] == 220
            client.stream = await TLSStream.wrap(
                client.stream,
                hostname="localhost",
                ssl_context=client_context,
                standard_compatible=False,
            )
            assert await client.command("MAIL FROM:<a@example.com>") == 503  # no EHLO yet
            code, text = await client.reply_to("EHLO raw.example")
            assert code == 250
            assert "STARTTLS" not in text
        [session] = server.sessions
        assert session.tls
        assert "RSET" not in session.commands


@pytest.mark.anyio
async def test_implicit_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with (
        RecordingServer(tls_context=server_context, implicit_tls=True) as server,
        aiosmtp.SMTP_SSL(
            server.host, server.port, timeout=TIMEOUT, context=client_context
        ) as smtp,
    ):
        await smtp.ehlo()
        assert not smtp.has_extn("starttls")
        await smtp.sendmail("a@example.com", ["b@example.com"], MSG)
    [message] = server.messages
    assert message.tls


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_lmtp_over_a_unix_socket_refuses_one_recipient_after_the_data(
    socket_path: str, chunking: bool
) -> None:
    extensions = DEFAULT_EXTENSIONS if chunking else NO_CHUNKING
    async with RecordingServer(lmtp=True, unix_path=socket_path, extensions=extensions) as server:
        server.refuse("DOT", 452, "4.2.2 Mailbox full", match="Full@example.com")
        async with aiosmtp.LMTP(socket_path, timeout=TIMEOUT) as lmtp:
            refused = await lmtp.sendmail(
                "a@example.com", ["ok@example.com", "full@example.com"], MSG
            )
            assert refused == {"full@example.com": (452, b"4.2.2 Mailbox full")}
            with pytest.raises(aiosmtp.SMTPRecipientsRefused):
                await lmtp.sendmail("a@example.com", ["full@example.com"], MSG)
        [message] = server.messages
        assert message.rcpt_tos == ["ok@example.com"]
        assert message.lmtp
        assert message.peer == socket_path
        assert server.sessions[0].commands[0].startswith("LHLO ")


@pytest.mark.anyio
async def test_an_smtp_server_will_not_speak_lmtp_and_back() -> None:
    async with RecordingServer() as server, raw(server, ehlo=None) as client:
        assert await client.command("LHLO x.example") == 500
    async with RecordingServer(lmtp=True) as server, raw(server, ehlo=None) as client:
        assert await client.command("EHLO x.example") == 500
        assert await client.command("HELO x.example") == 500
        assert await client.command("LHLO x.example") == 250


# -- SMTP as the RFCs have it -------------------------------------------------------------


@pytest.mark.anyio
async def test_bad_sequences_get_503_and_the_small_commands_work() -> None:
    async with RecordingServer() as server, raw(server, ehlo=None) as client:
        assert await client.command("MAIL FROM:<a@example.com>") == 503
        assert await client.command("RCPT TO:<b@example.com>") == 503
        assert await client.command("DATA") == 503
        assert await client.command("AUTH PLAIN") == 502
        assert await client.command("STARTTLS") == 502
        assert await client.command("EHLO") == 501
        assert await client.command("EHLO raw.example") == 250
        assert await client.command("RCPT TO:<b@example.com>") == 503
        assert await client.command("DATA") == 503
        assert await client.command("MAIL FROM:<a@example.com>") == 250
        assert await client.command("MAIL FROM:<a@example.com>") == 503
        assert await client.command("DATA") == 554  # no valid recipients
        assert await client.command("RCPT TO:<>") == 501
        assert await client.command("RCPT TO:b@example.com") == 501
        assert await client.command("RSET") == 250
        assert await client.command("RCPT TO:<b@example.com>") == 503
        assert await client.command("NOOP") == 250
        assert await client.command("VRFY someone") == 252
        assert await client.command("VRFY") == 501
        assert await client.command("EXPN list") == 502
        assert await client.command("HELP") == 214
        assert await client.command("FROB") == 500
        assert await client.command(b"NOOP \xff") == 500
        assert await client.command("QUIT") == 221
        assert await client.eof()
    assert server.messages == []


@pytest.mark.anyio
async def test_parameters_are_checked_against_what_was_advertised() -> None:
    async with RecordingServer(extensions=["SIZE", "PIPELINING"]) as server:
        async with raw(server) as client:
            assert await client.command("MAIL FROM:<a@example.com> BODY=8BITMIME") == 555
            assert await client.command("MAIL FROM:<a@example.com> SMTPUTF8") == 555
            assert await client.command("MAIL FROM:<a@example.com> RET=HDRS") == 555
            assert await client.command("MAIL FROM:<a@example.com> FOO=BAR") == 555
            assert await client.command("MAIL FROM:<jörg@example.com>") == 553
            assert await client.command("MAIL FROM:<a@example.com> BODY=7BIT") == 250
            assert await client.command("RCPT TO:<b@example.com> NOTIFY=NEVER") == 555
            assert await client.command("RCPT TO:<zoë@example.com>") == 553
            # HELO sessions take no parameters at all.
            assert await client.command("HELO raw.example") == 250
            assert await client.command("MAIL FROM:<a@example.com> BODY=7BIT") == 555
        async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
            msg = email.message.EmailMessage()
            msg["From"], msg["To"] = "jörg@example.com", "b@example.com"
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await smtp.send_message(msg)
    async with RecordingServer() as server, raw(server) as client:
        assert await client.command("MAIL FROM:<@relay.example:a@example.com> SMTPUTF8") == 250
        assert await client.command('RCPT TO:<"odd>name"@example.com> ORCPT=rfc822;x@y') == 250
        assert await client.command("RCPT TO:<zoë@example.com> NOTIFY=SUCCESS") == 250


@pytest.mark.anyio
async def test_a_pipelined_group_is_answered_in_order() -> None:
    async with RecordingServer() as server, raw(server) as client:
        await client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"RCPT TO:<c@example.com>\r\nDATA\r\n"
        )
        assert [(await client.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
        await client.send(b"Subject: p\r\n\r\n.\r\nRSET\r\nNOOP\r\n")
        assert [(await client.reply())[0] for _ in range(3)] == [250, 250, 250]
    [message] = server.messages
    assert message.data == b"Subject: p\r\n\r\n"
    assert message.rcpt_tos == ["b@example.com", "c@example.com"]


@pytest.mark.anyio
async def test_data_ends_only_at_crlf_dot_crlf() -> None:
    payload = b"Subject: smuggle\r\n\r\nbare\n.\nstill data\n.\r\ncr\r.\r\nmore\r\n..stuffed\r\n"
    async with RecordingServer() as server, raw(server) as client:
        assert await client.command("MAIL FROM:<a@example.com>") == 250
        assert await client.command("RCPT TO:<b@example.com>") == 250
        assert await client.command("DATA") == 354
        # Byte by byte: nothing may depend on how the payload is split.
        for byte in payload:
            await client.send(bytes([byte]))
        assert await client.command(".") == 250
    [message] = server.messages
    assert message.data == payload.replace(b"..stuffed", b".stuffed")


@pytest.mark.anyio
async def test_line_limit() -> None:
    long = "x" * 9000
    async with RecordingServer() as server, raw(server) as client:
        assert await client.command(f"NOOP {long}") == 500
        assert await client.command("NOOP") == 250
        assert await client.command("MAIL FROM:<a@example.com>") == 250
        assert await client.command("RCPT TO:<b@example.com>") == 250
        assert await client.command("DATA") == 354
        await client.send(f"Subject: long\r\n\r\n{long}\r\nafter\r\n".encode())
        assert await client.command(".") == 500
        # The transaction is over; a fresh one is accepted.
        assert await client.command("MAIL FROM:<a@example.com>") == 250
        assert await client.command("RCPT TO:<b@example.com>") == 250
        assert await client.command("DATA") == 354
        assert await client.command(f"{'y' * 8000}\r\n.") == 250
    [message] = server.messages
    assert message.data == b"y" * 8000 + b"\r\n"


@pytest.mark.anyio
async def test_size_limit() -> None:
    async with RecordingServer(size_limit=100) as server:
        async with raw(server) as client:
            assert await client.command("MAIL FROM:<a@example.com> SIZE=101") == 552
            assert await client.command("MAIL FROM:<a@example.com> SIZE=100") == 250
            assert await client.command("RCPT TO:<b@example.com>") == 250
            assert await client.bdat(b"x" * 60) == 250
            assert await client.bdat(b"x" * 60, last=True) == 552
            assert await client.command("MAIL FROM:<a@example.com>") == 250
            assert await client.command("RCPT TO:<b@example.com>") == 250
            assert await client.command("DATA") == 354
            assert await client.command(b"y" * 150 + b"\r\n.") == 552
        async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as refused:
                await smtp.sendmail("a@example.com", ["b@example.com"], b"z" * 200)
            assert refused.value.smtp_code == 552
            await smtp.sendmail("a@example.com", ["b@example.com"], b"z" * 90)
    [message] = server.messages
    assert message.data == b"z" * 90 + b"\r\n"


@pytest.mark.anyio
async def test_bdat_reads_its_chunk_whatever_the_answer() -> None:
    async with RecordingServer() as server:
        async with raw(server) as client:
            # Out of sequence: the chunk is still read, so "NOOP" is not in it.
            assert await client.bdat(b"RSET") == 503
            assert await client.command("NOOP") == 250
            assert await client.command("BDAT x") == 501
            assert await client.command("BDAT 1 NOTLAST") == 501
            assert await client.command("MAIL FROM:<a@example.com>") == 250
            assert await client.command("RCPT TO:<b@example.com>") == 250
            assert await client.bdat(b"ab\r\nc") == 250
            assert await client.bdat(b"") == 250
            assert await client.command(b"DATA") == 503
            assert await client.bdat(b".\r\n", last=True) == 250
        async with RecordingServer(extensions=NO_CHUNKING) as plain, raw(plain) as client:
            assert await client.bdat(b"RSET") == 502
            assert await client.command("NOOP") == 250
    [message] = server.messages
    assert (message.data, message.via) == (b"ab\r\nc.\r\n", "BDAT")


# -- faults ---------------------------------------------------------------------------------

# What the client raises when each step is refused, and the code used.
REFUSALS: dict[Step, tuple[int, type[Exception]]] = {
    Step.GREETING: (554, aiosmtp.SMTPConnectError),
    Step.EHLO: (550, aiosmtp.SMTPHeloError),
    Step.MAIL: (550, aiosmtp.SMTPSenderRefused),
    Step.RCPT: (550, aiosmtp.SMTPRecipientsRefused),
    Step.DATA: (554, aiosmtp.SMTPDataError),
    Step.DOT: (554, aiosmtp.SMTPDataError),
    Step.BDAT: (554, aiosmtp.SMTPDataError),
    Step.QUIT: (500, aiosmtp.SMTPResponseException),
    Step.AUTH: (535, aiosmtp.SMTPAuthenticationError),
    Step.STARTTLS: (454, aiosmtp.SMTPResponseException),
}


async def session(server: RecordingServer, client_context: ssl.SSLContext) -> aiosmtp.SendResult:
    """Connect, STARTTLS, log in, send MSG, QUIT: every step the kit knows."""
    async with aiosmtp.SMTP(
        server.host, server.port, timeout=TIMEOUT, context=client_context
    ) as smtp:
        await smtp.starttls()
        await smtp.login("alice", "correct horse")
        return await smtp.sendmail("a@example.com", ["b@example.com", "c@example.com"], MSG)


def faulty_server(server_context: ssl.SSLContext, step: Step) -> RecordingServer:
    extensions = DEFAULT_EXTENSIONS if step is Step.BDAT else NO_CHUNKING
    return RecordingServer(tls_context=server_context, auth=USERS, extensions=extensions)


@pytest.mark.anyio
@pytest.mark.parametrize("step", list(Step), ids=str)
async def test_refuse_at_every_step(
    step: Step, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    code, error = REFUSALS[step]
    async with faulty_server(server_context, step) as server:
        # EHLO is tried again as HELO, AUTH PLAIN as LOGIN, and there are two RCPTs.
        times = 2 if step in {Step.EHLO, Step.AUTH, Step.RCPT} else 1
        server.refuse(step, code, f"refused at {step}", times=times)
        with pytest.raises(error) as raised:
            await session(server, client_context)
        if not isinstance(raised.value, aiosmtp.SMTPRecipientsRefused):
            assert getattr(raised.value, "smtp_code", code) == code
        # Only a refused QUIT leaves the message delivered.
        assert len(server.messages) == (1 if step is Step.QUIT else 0)
        # The refusal was used up: the next session goes through.
        await session(server, client_context)
        assert len(server.messages) == (2 if step is Step.QUIT else 1)


# What the client raises when the server hangs up at each step (None: nothing).
DROPS: dict[Step, type[Exception] | None] = {
    Step.GREETING: aiosmtp.SMTPServerDisconnected,
    Step.EHLO: aiosmtp.SMTPServerDisconnected,
    Step.MAIL: aiosmtp.SMTPServerDisconnected,
    Step.RCPT: aiosmtp.SMTPServerDisconnected,
    Step.DATA: aiosmtp.SMTPServerDisconnected,
    Step.DOT: aiosmtp.SMTPDeliveryUnknownError,
    Step.BDAT: aiosmtp.SMTPDeliveryUnknownError,
    Step.QUIT: None,
    Step.AUTH: aiosmtp.SMTPServerDisconnected,
    Step.STARTTLS: aiosmtp.SMTPServerDisconnected,
}


@pytest.mark.anyio
@pytest.mark.parametrize("step", list(Step), ids=str)
async def test_drop_at_every_step(
    step: Step, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    error = DROPS[step]
    async with faulty_server(server_context, step) as server:
        server.drop(step, times=1)
        if error is None:
            await session(server, client_context)
        else:
            with pytest.raises((error, aiosmtp.SMTPConnectError)):
                await session(server, client_context)
        assert len(server.messages) == (1 if step is Step.QUIT else 0)
        assert server.sessions[0].closed
        await session(server, client_context)
        assert len(server.messages) == (2 if step is Step.QUIT else 1)


@pytest.mark.anyio
@pytest.mark.parametrize("step", list(Step), ids=str)
async def test_a_short_delay_at_every_step_is_only_a_delay(
    step: Step, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with faulty_server(server_context, step) as server:
        server.delay(step, 0.01)
        await session(server, client_context)
        assert len(server.messages) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("step", [Step.GREETING, Step.RCPT, Step.DOT])
async def test_a_delay_past_the_client_timeout(step: Step) -> None:
    async with RecordingServer() as server:
        server.delay(step, 1.0, times=1)
        with pytest.raises(aiosmtp.SMTPTimeoutError):
            async with aiosmtp.SMTP(server.host, server.port, timeout=0.2) as smtp:
                await smtp.sendmail("a@example.com", ["b@example.com"], MSG)


@pytest.mark.anyio
async def test_drop_at_dot_can_keep_the_message() -> None:
    async with RecordingServer(extensions=NO_CHUNKING) as server:
        server.drop("dot", record=True, times=1)
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
            async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
                await smtp.sendmail("a@example.com", ["b@example.com"], MSG)
        [message] = server.messages
        assert message.data == MSG


@pytest.mark.anyio
async def test_match_and_times() -> None:
    async with RecordingServer() as server:
        server.refuse("RCPT", 550, "5.1.1 No such user", match="Nobody@Example.com")
        server.refuse("MAIL", 451, match="spammer@example.com", times=1)
        server.refuse("DOT", 554, "5.7.1 Not for them", match="blocked@example.com")
        async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
            refused = await smtp.sendmail(
                "a@example.com", ["nobody@example.com", "b@example.com"], MSG
            )
            assert refused == {"nobody@example.com": (550, b"5.1.1 No such user")}
            with pytest.raises(aiosmtp.SMTPSenderRefused) as sender:
                await smtp.sendmail("spammer@example.com", ["b@example.com"], MSG)
            assert sender.value.smtp_error.startswith(b"4.0.0 Refused by the recording server")
            await smtp.sendmail("spammer@example.com", ["b@example.com"], MSG)
            with pytest.raises(aiosmtp.SMTPDataError):
                await smtp.sendmail("a@example.com", ["b@example.com", "blocked@example.com"], MSG)
            server.clear_faults()
            await smtp.sendmail("a@example.com", ["nobody@example.com"], MSG)
        assert [m.rcpt_tos for m in server.messages] == [
            ["b@example.com"],
            ["b@example.com"],
            ["nobody@example.com"],
        ]


@pytest.mark.anyio
async def test_421_closes_and_a_refused_greeting_waits_for_quit() -> None:
    async with RecordingServer() as server:
        server.refuse("MAIL", 421, "4.3.2 Going down", times=1)
        async with raw(server) as client:
            assert await client.command("MAIL FROM:<a@example.com>") == 421
            assert await client.eof()
        server.refuse("GREETING", 554, "5.3.2 Not today", times=1)
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            client = Raw(stream)
            assert await client.reply() == (554, "5.3.2 Not today")
            assert await client.command("EHLO raw.example") == 503
            assert await client.command("QUIT") == 221
            assert await client.eof()
        # Without ENHANCEDSTATUSCODES, the default text has no enhanced code.
    async with RecordingServer(extensions=["PIPELINING"]) as server:
        server.refuse("RCPT")
        async with raw(server) as client:
            assert await client.command("MAIL FROM:<a@example.com>") == 250
            await client.send(b"RCPT TO:<b@example.com>\r\n")
            assert await client.reply() == (550, "Refused by the recording server at RCPT")
            await client.send(b"NOOP\r\n")
            assert await client.reply() == (250, "Ok")


def test_bad_arguments_are_refused_at_once() -> None:
    server = RecordingServer()
    with pytest.raises(ValueError, match="unknown step"):
        server.refuse("HELLO")
    with pytest.raises(ValueError, match="match does not apply"):
        server.drop("QUIT", match="a@example.com")
    with pytest.raises(ValueError, match="4xx or 5xx"):
        server.refuse("RCPT", 250)
    with pytest.raises(ValueError, match="record"):
        server.drop("RCPT", record=True)
    with pytest.raises(ValueError, match="seconds"):
        server.delay("RCPT", -1)
    with pytest.raises(ValueError, match="configuration"):
        RecordingServer(extensions=["STARTTLS"])
    with pytest.raises(ValueError, match="unknown extension"):
        RecordingServer(extensions=["XYZZY"])
    with pytest.raises(ValueError, match="tls_context"):
        RecordingServer(implicit_tls=True)


# -- the thread-backed variant ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_in_thread_with_smtplib(backend: str) -> None:
    with RecordingServer.in_thread(backend=backend) as server:
        assert isinstance(server, ThreadedRecordingServer)
        assert "running" in repr(server)
        server.refuse("RCPT", 550, "5.1.1 Unknown", match="gone@example.com")
        with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
            assert client.has_extn("pipelining") is False  # smtplib has not said EHLO yet
            refused = client.sendmail("a@example.com", ["gone@example.com", "b@example.com"], MSG)
            assert refused == {"gone@example.com": (550, b"5.1.1 Unknown")}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("a@example.com", ["gone@example.com"], MSG)
            assert client.verify("someone")[0] == 252
        [message] = server.wait_for(1)
        assert message.rcpt_tos == ["b@example.com"]
        assert message.data == MSG
        server.clear()
        with pytest.raises(TimeoutError):
            server.wait_for(1, timeout=0.05)
    assert "stopped" in repr(server)


def test_in_thread_with_smtplib_starttls_and_login(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with (
        RecordingServer.in_thread(tls_context=server_context, auth=USERS) as server,
        smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client,
    ):
        client.starttls(context=client_context)
        client.login("alice", "correct horse")
        client.send_message(
            email.message_from_bytes(b"From: a@example.com\r\nTo: b@example.com\r\n\r\nhi\r\n")
        )
        [message] = server.messages
    assert (message.tls, message.auth_user, message.rcpt_tos) == (True, "alice", ["b@example.com"])


def test_in_thread_start_and_stop() -> None:
    server = RecordingServer.in_thread(backend="trio")
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
            client.sendmail("a@example.com", ["b@example.com"], MSG)
    finally:
        server.stop()
    server.stop()  # twice is harmless
    with (
        pytest.raises(ConnectionRefusedError),
        smtplib.SMTP(server.host, server.port, timeout=TIMEOUT),
    ):
        pass
    assert len(server.messages) == 1


@pytest.mark.anyio
async def test_in_thread_from_async_code_on_either_loop() -> None:
    with RecordingServer.in_thread() as server:
        server.drop("RCPT", match="drop@example.com", times=1)
        server.delay("MAIL", 0.01)
        async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
            await smtp.sendmail("a@example.com", ["b@example.com"], MSG)
        with pytest.raises(aiosmtp.SMTPServerDisconnected):
            async with aiosmtp.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
                await smtp.sendmail("a@example.com", ["drop@example.com"], MSG)
        [message] = await server.wait_for_async(1)
        assert message.rcpt_tos == ["b@example.com"]
        server.clear_faults()
        with pytest.raises(TimeoutError):
            await server.wait_for_async(2, timeout=0.05)


# -- the pytest plugin --------------------------------------------------------------------

USER_TESTS = """
import smtplib

import aiosmtp
import pytest


def test_sync(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: s\\r\\n\\r\\nsync\\r\\n")
    [message] = smtp_server.messages
    assert message.message["Subject"] == "s"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_async(smtp_server, anyio_backend):
    smtp_server.refuse("RCPT", 550, match="no@example.com")
    async with aiosmtp.SMTP(smtp_server.host, smtp_server.port, timeout=5) as smtp:
        refused = await smtp.sendmail(
            "a@example.com", ["no@example.com", "b@example.com"], b"x\\r\\n"
        )
    assert list(refused) == ["no@example.com"]
    assert smtp_server.messages[0].rcpt_tos == ["b@example.com"]


def test_factory(recording_server_factory):
    first = recording_server_factory(lmtp=True)
    second = recording_server_factory(extensions=["PIPELINING"])
    assert first.port != second.port
    with smtplib.LMTP(first.host, first.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"x\\r\\n")
    assert first.messages[0].lmtp
    assert second.messages == []
"""


def fake_distribution(root: Path, entry_point: str) -> Path:
    """A directory holding an installed-looking distribution that declares
    ``entry_point`` in the pytest11 group, as ``pip install aiosmtp`` would."""
    info = root / "site" / "aiosmtp_plugin_probe-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: aiosmtp-plugin-probe\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[pytest11]\n{entry_point}\n")
    return root / "site"


def declared_entry_point() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [(name, value)] = project["project"]["entry-points"]["pytest11"].items()
    return f"{name} = {value}"


def test_pyproject_declares_the_plugin() -> None:
    assert declared_entry_point() == "aiosmtp = aiosmtp.testing.pytest_plugin"


def test_the_plugin_works_for_users_through_its_entry_point(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = fake_distribution(pytester.path, declared_entry_point())
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{site}")
    pytester.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    # Plugins of the environment other than anyio's and ours stay out.
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    # Without the entry point the fixtures are unknown: the test above proved it.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess(
        "-p", "no:asyncio", "-p", "no:aiosmtp", "-k", "test_sync"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'smtp_server' not found*"])
