"""DSN, REQUIRETLS, the SIZE precheck, 8BITMIME and enhanced status codes against
real servers: a private Postfix 3.7 (DSN, SIZE, ENHANCEDSTATUSCODES, 8BITMIME,
SMTPUTF8; no REQUIRETLS) and Postfix's smtp-sink, which records the envelope
options it received, so the typed DSN can be checked as the server parsed it.

Each server runs once for this module, in its own work directory (the matrix's
instances are separate), on both anyio backends.
"""

from __future__ import annotations

import io
import logging
import ssl
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from email.generator import BytesGenerator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

import aiosmtp

from ._common import ObservedServer, Unavailable
from ._postfix import postfix_unavailable, run_postfix, run_smtp_sink, smtp_sink_unavailable

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 10.0
STORE_TIMEOUT = 15.0
CLIENT_NAME = "client.example"
OUTSIDE = "sender@outside.test"


def _start(
    request: pytest.FixtureRequest, interop_root: Path, ca: trustme.CA, name: str
) -> Iterator[ObservedServer]:
    unavailable = {"postfix": postfix_unavailable, "smtp-sink": smtp_sink_unavailable}[name]
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    run = {"postfix": run_postfix, "smtp-sink": run_smtp_sink}[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"mailopts-{name}-", dir=interop_root))
    workdir.chmod(0o755)
    try:
        with run(workdir, ca) as server:
            assert isinstance(server, ObservedServer)
            yield server
    except Unavailable as exc:  # installed but would not start: an error, not a skip
        pytest.fail(f"{name} did not start: {exc}")


@pytest.fixture(scope="module")
def postfix(
    request: pytest.FixtureRequest, interop_root: Path, ca: trustme.CA
) -> Iterator[ObservedServer]:
    yield from _start(request, interop_root, ca, "postfix")


@pytest.fixture(scope="module")
def sink(
    request: pytest.FixtureRequest, interop_root: Path, ca: trustme.CA
) -> Iterator[ObservedServer]:
    yield from _start(request, interop_root, ca, "smtp-sink")


def smtp_client(server: ObservedServer, context: ssl.SSLContext | None = None) -> aiosmtp.SMTP:
    return aiosmtp.SMTP(
        server.host, server.port, local_hostname=CLIENT_NAME, timeout=TIMEOUT, context=context
    )


def raw_message(subject: str, body: bytes = b"Hello.\r\n", *, extra: bytes = b"") -> bytes:
    mid = f"<{uuid.uuid4().hex}@client.example>"
    return (
        f"From: {OUTSIDE}\r\nTo: undisclosed-recipients:;\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def message_id(data: bytes) -> bytes:
    start = data.index(b"Message-ID: ")
    return data[start : data.index(b"\r\n", start)]


async def stored(server: ObservedServer, needle: bytes, count: int) -> list[bytes]:
    """The stored messages holding ``needle``, once there are ``count`` (or time is up)."""
    assert server.stored_messages is not None
    found: list[bytes] = []
    with anyio.move_on_after(STORE_TIMEOUT):
        while len(found) < count:
            found = [msg for msg in server.stored_messages(0, 0) if needle in msg]
            await anyio.sleep(0.05)
    return found


@contextmanager
def protocol_log() -> Iterator[list[str]]:
    """The client's trace: ">> MAIL ..." for commands, "<< 250 ..." for replies."""
    lines: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            lines.extend(
                arrow + " " + text.split(f" {arrow} ", 1)[1]
                for arrow in (">>", "<<")
                if f" {arrow} " in text
            )

    logger = logging.getLogger("aiosmtp.protocol")
    handler = Handler(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# -- DSN --------------------------------------------------------------------------------------


async def test_typed_dsn_success_notice(postfix: ObservedServer) -> None:
    """DSN(notify={SUCCESS}, ret=HDRS, envid=...) really asks for a notice, and the
    notice (RFC 3464) carries the envelope id and, from ORCPT, the original recipient."""
    sender = postfix.notices_to
    assert sender is not None
    recipient = postfix.recipients[0]
    envid = f"id+{uuid.uuid4().hex[:8]}=x"  # "+" and "=" must travel as xtext
    data = raw_message("typed dsn", b"The body, which RET=HDRS leaves out.\r\n")
    dsn = aiosmtp.DSN(notify={"SUCCESS"}, ret="HDRS", envid=envid)
    async with smtp_client(postfix) as smtp:
        with protocol_log() as log:
            assert await smtp.sendmail(sender, recipient, data, dsn=dsn) == {}
    mail = next(line for line in log if line.startswith(">> MAIL"))
    assert f"ENVID={aiosmtp.protocol.xtext_encode(envid)}" in mail.split()
    assert "RET=HDRS" in mail.split()
    copies = await stored(postfix, message_id(data), 2)
    notices = [copy for copy in copies if b"report-type=delivery-status" in copy]
    assert len(notices) == 1, copies
    notice = notices[0]
    assert f"Original-Envelope-Id: {envid}".encode() in notice
    assert f"Original-Recipient: rfc822;{recipient}".encode() in notice
    assert b"Action: delivered" in notice
    assert b"Content-Type: text/rfc822-headers" in notice
    assert b"RET=HDRS leaves out" not in notice
    assert [copy for copy in copies if copy is not notice] == [data]


async def test_notify_never_without_orcpt(sink: ObservedServer) -> None:
    assert sink.envelopes is not None
    data = raw_message("notify never")
    async with smtp_client(sink) as smtp:
        dsn = aiosmtp.DSN(notify="NEVER", orcpt=False)
        assert await smtp.sendmail(OUTSIDE, "carol@example.test", data, dsn=dsn) == {}
    assert len(await stored(sink, message_id(data), 1)) == 1
    envelope = next(env for env in reversed(sink.envelopes()) if env.sender == OUTSIDE)
    assert envelope.recipients == ("carol@example.test",)
    assert envelope.rcpt_options == ("NOTIFY=NEVER",)
    assert not any(option.startswith(("RET=", "ENVID=")) for option in envelope.mail_options)


async def test_dsn_for_an_international_recipient(postfix: ObservedServer) -> None:
    """ORCPT of the utf-8 address type (RFC 6533) for a non-ASCII recipient, under
    SMTPUTF8: Postfix accepts it and delivers."""
    assert postfix.utf8_recipient is not None
    msg = EmailMessage()
    msg["From"] = OUTSIDE
    msg["To"] = postfix.utf8_recipient
    msg["Subject"] = "utf-8 orcpt"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    msg.set_content("Grüße\n")
    async with smtp_client(postfix) as smtp:
        with protocol_log() as log:
            dsn = aiosmtp.DSN(notify={"FAILURE", "DELAY"})
            assert await smtp.send_message(msg, dsn=dsn) == {}
    rcpt = next(line for line in log if line.startswith(">> RCPT"))
    assert "ORCPT=utf-8;j\\x{F6}rg@example.test" in rcpt.split()
    assert len(await stored(postfix, msg["Message-ID"].encode(), 1)) == 1


async def test_dsn_options_as_the_server_parsed_them(sink: ObservedServer) -> None:
    assert sink.envelopes is not None
    data = raw_message("dsn to the sink")
    recipients = ["Alice <alice+tag@example.test>", "bob@example.test"]
    dsn = aiosmtp.DSN(notify={"DELAY", "FAILURE"}, ret="FULL", envid="E 1")
    async with smtp_client(sink) as smtp:
        assert await smtp.sendmail(OUTSIDE, recipients, data, dsn=dsn) == {}
    assert len(await stored(sink, message_id(data), 1)) == 1
    envelope = next(env for env in reversed(sink.envelopes()) if env.sender == OUTSIDE)
    assert envelope.recipients == ("alice+tag@example.test", "bob@example.test")
    assert {"RET=FULL", "ENVID=E+201"} <= set(envelope.mail_options)
    assert list(envelope.rcpt_options) == [
        "NOTIFY=FAILURE,DELAY",
        "ORCPT=rfc822;alice+2Btag@example.test",
        "NOTIFY=FAILURE,DELAY",
        "ORCPT=rfc822;bob@example.test",
    ]


async def test_dsn_through_the_pool_and_send(
    postfix: ObservedServer, client_context: ssl.SSLContext
) -> None:
    sender = postfix.notices_to
    assert sender is not None
    first, second = raw_message("pooled dsn"), raw_message("one-shot dsn")
    dsn = aiosmtp.DSN(notify={"SUCCESS"}, ret="HDRS")
    options: dict[str, Any] = {
        "tls": "starttls",
        "context": client_context,
        "server_hostname": postfix.tls_hostname,
        "timeout": TIMEOUT,
        "local_hostname": CLIENT_NAME,
    }
    async with aiosmtp.SMTPPool(postfix.host, postfix.port, **options) as pool:
        assert await pool.sendmail(sender, [postfix.recipients[0]], first, dsn=dsn) == {}
    result = await aiosmtp.send(
        second,
        postfix.host,
        postfix.port,
        from_addr=sender,
        to_addrs=[postfix.recipients[0]],
        dsn=dsn,
        **options,
    )
    assert result == {}
    for data in (first, second):
        copies = await stored(postfix, message_id(data), 2)
        assert sum(b"Action: delivered" in copy for copy in copies) == 1, copies


# -- REQUIRETLS ---------------------------------------------------------------------------------


async def test_require_tls_against_a_server_without_it(
    postfix: ObservedServer, client_context: ssl.SSLContext
) -> None:
    """Postfix 3.7 has no REQUIRETLS: refused before MAIL in cleartext (for the
    missing TLS and the missing extension) and over TLS (for the extension)."""
    data = raw_message("requiretls")
    async with smtp_client(postfix, client_context) as smtp:
        with protocol_log() as log:
            with pytest.raises(aiosmtp.SMTPNotSupportedError) as plain:
                await smtp.sendmail(OUTSIDE, postfix.recipients[0], data, require_tls=True)
            assert "not encrypted" in str(plain.value)
            await smtp.starttls()
            with pytest.raises(aiosmtp.SMTPNotSupportedError) as encrypted:
                await smtp.sendmail(OUTSIDE, postfix.recipients[0], data, require_tls=True)
            assert "does not advertise REQUIRETLS" in str(encrypted.value)
            assert "not encrypted" not in str(encrypted.value)
            # The session goes on.
            assert await smtp.sendmail(OUTSIDE, postfix.recipients[0], data) == {}
    assert sum(line.startswith(">> MAIL") for line in log) == 1
    assert len(await stored(postfix, message_id(data), 1)) == 1


# -- SIZE ---------------------------------------------------------------------------------------


async def test_size_precheck_sends_nothing(postfix: ObservedServer) -> None:
    assert postfix.size_limit is not None
    big = raw_message("too big", (b"y" * 998 + b"\r\n") * (postfix.size_limit // 1000 + 2))
    small = raw_message("small enough")
    async with smtp_client(postfix) as smtp:
        await smtp.ehlo()
        assert smtp.esmtp_features["size"] == str(postfix.size_limit)
        with protocol_log() as log:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
                await smtp.sendmail(OUTSIDE, postfix.recipients[0], big)
            assert caught.value.smtp_code == 552
            assert caught.value.enhanced_status == "5.3.4"
            assert f"limit of {postfix.size_limit} bytes" in str(caught.value.smtp_error)
            # A seekable file: its size is known too.
            with pytest.raises(aiosmtp.SMTPSenderRefused):
                await smtp.sendmail(OUTSIDE, postfix.recipients[0], io.BytesIO(big))
            assert log == []  # not one command for either
            assert await smtp.sendmail(OUTSIDE, postfix.recipients[0], small) == {}
    assert len(await stored(postfix, message_id(small), 1)) == 1
    assert await stored(postfix, message_id(big), 0) == []


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


async def test_size_unknown_for_a_stream_is_left_to_the_server(postfix: ObservedServer) -> None:
    """A stream's length is unknown: no precheck, and Postfix's own refusal arrives
    (at the end of the data), as an SMTPDataError with its enhanced status."""
    assert postfix.size_limit is not None
    big = raw_message(
        "too big, streamed", (b"z" * 998 + b"\r\n") * (postfix.size_limit // 1000 + 2)
    )
    async with smtp_client(postfix) as smtp:
        with pytest.raises(aiosmtp.SMTPDataError) as caught:
            await smtp.sendmail(OUTSIDE, postfix.recipients[0], _chunks(big))
        assert caught.value.smtp_code == 552
        assert caught.value.enhanced_status == "5.3.4"
        assert (await smtp.noop()).code == 250


# -- enhanced status codes ------------------------------------------------------------------------


async def test_enhanced_status_from_postfix(postfix: ObservedServer) -> None:
    assert postfix.refused_recipient is not None
    data = raw_message("refusals")
    async with smtp_client(postfix) as smtp:
        await smtp.ehlo()
        assert smtp.has_extn("enhancedstatuscodes")
        with pytest.raises(aiosmtp.SMTPRecipientsRefused) as refused:
            await smtp.sendmail(OUTSIDE, postfix.refused_recipient, data)
        ((code, text),) = refused.value.recipients.values()
        assert code == 550
        assert aiosmtp.Reply(code, text).enhanced_status == "5.1.1"
        with pytest.raises(aiosmtp.SMTPSenderRefused) as sender:
            await smtp.sendmail("<<bad@@address", postfix.recipients[0], data)
        assert sender.value.enhanced_status is not None
        assert sender.value.enhanced_status.startswith("5.")
        assert sender.value.reply is not None
        assert sender.value.reply.code == sender.value.smtp_code
        result = await smtp.sendmail(
            OUTSIDE, [postfix.recipients[0], postfix.refused_recipient], data
        )
        assert aiosmtp.Reply(*result[postfix.refused_recipient]).enhanced_status == "5.1.1"
        assert result.reply.enhanced_status == "2.0.0"


# -- 8BITMIME -------------------------------------------------------------------------------------


async def test_8bit_body_declared_and_stored(postfix: ObservedServer) -> None:
    data = raw_message(
        "8bit body",
        "Grüße, ça va? ✓\r\n".encode(),
        extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n",
    )
    async with smtp_client(postfix) as smtp:
        with protocol_log() as log:
            result = await smtp.sendmail(OUTSIDE, postfix.recipients[0], data, strict_8bit=True)
            assert result == {}
    mail = next(line for line in log if line.startswith(">> MAIL"))
    assert "BODY=8BITMIME" in mail.split()
    (copy,) = await stored(postfix, message_id(data), 1)
    assert copy == data


async def test_8bit_message_object(postfix: ObservedServer) -> None:
    msg = EmailMessage()
    msg["From"] = OUTSIDE
    msg["To"] = postfix.recipients[1]
    msg["Subject"] = "8bit message object"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    msg.set_content("Grüße\n", cte="8bit")
    out = io.BytesIO()
    BytesGenerator(out).flatten(msg, linesep="\r\n")
    async with smtp_client(postfix) as smtp:
        with protocol_log() as log:
            assert await smtp.send_message(msg, strict_8bit=True) == {}
    assert "BODY=8BITMIME" in next(line for line in log if line.startswith(">> MAIL")).split()
    (copy,) = await stored(postfix, msg["Message-ID"].encode(), 1)
    assert copy == out.getvalue()
