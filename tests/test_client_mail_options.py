"""DSN, REQUIRETLS, the SIZE precheck, BODY=8BITMIME/BINARYMIME with strict_8bit, and
enhanced status codes on exceptions: the client against scripted servers, exact
bytes on the wire, on both backends. Every refusal is checked to happen before
MAIL (the script has nothing for it) and to leave the session usable (a NOOP or
another message follows on the same connection, with no RSET in between)."""

from __future__ import annotations

import io
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import anyio
import pytest

import aiosmtp

from .scripted import (
    CLIENT_NAME,
    MiniSMTP,
    ScriptedServers,
    Step,
    call,
    client,
    ehlo_ok,
    expect,
    expect_together,
    greet,
    quit_ok,
    recv_until,
    send,
    start_tls,
)

pytestmark = pytest.mark.anyio

MSG = b"Subject: test\r\n\r\nHello\r\n"
MSG_8BIT = "Subject: 8 bit\r\n\r\nGrüße\r\n".encode()
NOOP = [expect(b"NOOP\r\n"), send(b"250 2.0.0 noop-ok\r\n")]


def transaction(
    mail: bytes,
    rcpts: list[bytes],
    body: bytes = MSG,
    queued: bytes = b"250 2.0.0 queued as 1\r\n",
) -> list[Step]:
    """A whole transaction, one command at a time (no PIPELINING)."""
    steps: list[Step] = [expect(mail), send(b"250 2.1.0 ok\r\n")]
    for rcpt in rcpts:
        steps += [expect(rcpt), send(b"250 2.1.5 ok\r\n")]
    steps += [
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        recv_until(b"\r\n.\r\n", body + b".\r\n"),
        send(queued),
    ]
    return steps


# -- DSN -------------------------------------------------------------------------------------


async def test_dsn_not_advertised_fails_before_mail(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("SIZE 1000000", "PIPELINING"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="DSN"):
                await smtp.sendmail("a@x.org", ["b@x.org"], MSG, dsn=aiosmtp.DSN(ret="HDRS"))
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


async def test_dsn_exact_bytes_on_the_wire(scripted: ScriptedServers) -> None:
    size = len(MSG)
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "DSN"),
        transaction(
            f"MAIL FROM:<a@x.org> SIZE={size} RET=HDRS ENVID=QQ+20314159+2B1\r\n".encode(),
            [
                b"RCPT TO:<b@x.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x.org\r\n",
                # The bare address, xtext-encoded, whatever form the caller gave.
                b"RCPT TO:<c+tag@x.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+2Btag@x.org\r\n",
            ],
        ),
        quit_ok(),
    )
    dsn = aiosmtp.DSN(notify={"FAILURE", "SUCCESS"}, ret="HDRS", envid="QQ 314159+1")
    with anyio.fail_after(5):
        async with client(server) as smtp:
            result = await smtp.sendmail(
                "a@x.org", ["b@x.org", "Carol <c+tag@x.org>"], MSG, dsn=dsn
            )
            assert result == {}
            assert result.reply == (250, b"2.0.0 queued as 1")


async def test_dsn_pipelined_with_raw_options_beside_it(scripted: ScriptedServers) -> None:
    """Raw options keep working as in smtplib, and combine with what dsn= leaves unset."""
    size = len(MSG)
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "DSN", "PIPELINING"),
        expect_together(
            f"MAIL FROM:<a@x.org> SIZE={size} RET=FULL\r\n".encode()
            + b"RCPT TO:<b@x.org> X-PRIO=1 NOTIFY=NEVER\r\n"
            + b"DATA\r\n"
        ),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        recv_until(b"\r\n.\r\n", MSG + b".\r\n"),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            result = await smtp.sendmail(
                "a@x.org",
                "b@x.org",
                MSG,
                ["RET=FULL"],
                ["X-PRIO=1"],
                dsn=aiosmtp.DSN(notify="NEVER", orcpt=False),
            )
            assert result == {}


async def test_dsn_with_raw_option_for_the_same_thing(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("DSN"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(ValueError, match="NOTIFY=SUCCESS"):
                await smtp.sendmail(
                    "a@x.org",
                    "b@x.org",
                    MSG,
                    rcpt_options=["NOTIFY=SUCCESS"],
                    dsn=aiosmtp.DSN(notify="NEVER"),
                )
            with pytest.raises(ValueError, match="RET=HDRS"):
                await smtp.sendmail(
                    "a@x.org", "b@x.org", MSG, ["RET=HDRS"], dsn=aiosmtp.DSN(ret="FULL")
                )
            with pytest.raises(TypeError, match="DSN"):
                await smtp.sendmail("a@x.org", "b@x.org", MSG, dsn={"ret": "FULL"})  # type: ignore[arg-type]
            assert (await smtp.noop()).code == 250


async def test_dsn_with_send_message_and_an_international_recipient(
    scripted: ScriptedServers,
) -> None:
    msg = EmailMessage()
    msg["From"] = "a@x.org"
    msg["To"] = "Zoë <zoë@exämple.org>"
    msg["Subject"] = "hi"
    msg.set_content("hello\n")
    bodies: list[bytes] = []
    server = scripted(
        greet(),
        ehlo_ok("DSN", "SMTPUTF8", "8BITMIME"),
        expect(b"MAIL FROM:<a@x.org> SMTPUTF8 BODY=8BITMIME ENVID=e\r\n"),
        send(b"250 ok\r\n"),
        # RFC 6533: the utf-8 address type, in its 7-bit xtext form.
        expect(
            "RCPT TO:<zoë@exämple.org> NOTIFY=DELAY "
            "ORCPT=utf-8;zo\\x{EB}@ex\\x{E4}mple.org\r\n".encode()
        ),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        recv_until(b"\r\n.\r\n", into=bodies),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            dsn = aiosmtp.DSN(notify="DELAY", envid="e")
            assert await smtp.send_message(msg, dsn=dsn) == {}
    assert b"Subject: hi" in bodies[0]


async def test_dsn_over_helo_is_not_supported(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(f"EHLO {CLIENT_NAME}\r\n".encode()),
        send(b"502 5.5.1 no EHLO here\r\n"),
        expect(f"HELO {CLIENT_NAME}\r\n".encode()),
        send(b"250 hello\r\n"),
        transaction(b"MAIL FROM:<a@x.org>\r\n", [b"RCPT TO:<b@x.org>\r\n"]),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="DSN"):
                await smtp.sendmail("a@x.org", "b@x.org", MSG, dsn=aiosmtp.DSN())
            # Without it, the same message goes as smtplib sends it after HELO.
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG) == {}


async def test_lmtp_with_dsn(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("DSN", "PIPELINING", verb="LHLO"),
        expect_together(
            b"MAIL FROM:<a@x.org> RET=HDRS\r\n"
            b"RCPT TO:<b@x.org> NOTIFY=FAILURE ORCPT=rfc822;b@x.org\r\n"
            b"DATA\r\n"
        ),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        recv_until(b"\r\n.\r\n", MSG + b".\r\n"),
        send(b"250 2.0.0 <b@x.org> delivered\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server, aiosmtp.LMTP) as lmtp:
            dsn = aiosmtp.DSN(notify="FAILURE", ret="HDRS")
            assert await lmtp.sendmail("a@x.org", "b@x.org", MSG, dsn=dsn) == {}


# -- REQUIRETLS --------------------------------------------------------------------------------


async def test_require_tls_over_cleartext(scripted: ScriptedServers) -> None:
    # Even a server that (wrongly) advertises REQUIRETLS in cleartext does not do.
    server = scripted(greet(), ehlo_ok("REQUIRETLS", "8BITMIME"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError) as caught:
                await smtp.sendmail("a@x.org", "b@x.org", MSG, require_tls=True)
            assert "not encrypted" in str(caught.value)
            assert "does not advertise" not in str(caught.value)
            assert (await smtp.noop()).code == 250


def starttls_steps(context: ssl.SSLContext, *features: str) -> list[Step]:
    return [
        greet(),
        *ehlo_ok("STARTTLS"),
        expect(b"STARTTLS\r\n"),
        send(b"220 2.0.0 ready\r\n"),
        start_tls(context),
        *ehlo_ok(*features),
    ]


async def test_require_tls_over_tls_with_the_extension(
    scripted: ScriptedServers, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = scripted(
        starttls_steps(server_context, "REQUIRETLS", "SIZE 1000"),
        transaction(
            f"MAIL FROM:<a@x.org> SIZE={len(MSG)} REQUIRETLS\r\n".encode(),
            [b"RCPT TO:<b@x.org>\r\n"],
        ),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server, context=client_context) as smtp:
            await smtp.starttls()
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG, require_tls=True) == {}


async def test_require_tls_over_tls_without_the_extension(
    scripted: ScriptedServers, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = scripted(starttls_steps(server_context, "8BITMIME"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server, context=client_context) as smtp:
            await smtp.starttls()
            with pytest.raises(aiosmtp.SMTPNotSupportedError) as caught:
                await smtp.sendmail("a@x.org", "b@x.org", MSG, require_tls=True)
            assert "does not advertise REQUIRETLS" in str(caught.value)
            assert "not encrypted" not in str(caught.value)
            assert (await smtp.noop()).code == 250


async def test_require_tls_over_implicit_tls(
    scripted: ScriptedServers, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = scripted(
        start_tls(server_context),
        greet(),
        ehlo_ok("REQUIRETLS"),
        transaction(b"MAIL FROM:<a@x.org> REQUIRETLS\r\n", [b"RCPT TO:<b@x.org>\r\n"]),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server, aiosmtp.SMTP_SSL, context=client_context) as smtp:
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG, require_tls=True) == {}


# -- SIZE precheck ---------------------------------------------------------------------------

BIG = b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n"


@pytest.mark.parametrize("features", [("SIZE 100",), ("SIZE 100", "PIPELINING", "CHUNKING")])
async def test_size_exceeded_sends_nothing(
    scripted: ScriptedServers, features: tuple[str, ...]
) -> None:
    small = b"Subject: s\r\n\r\nok\r\n"
    steps: list[Step] = [greet(), *ehlo_ok(*features), *NOOP]
    if "CHUNKING" in features:
        steps.append(
            expect_together(
                f"MAIL FROM:<a@x.org> SIZE={len(small)}\r\nRCPT TO:<b@x.org>\r\n".encode()
                + f"BDAT {len(small)} LAST\r\n".encode()
                + small
            )
        )
        steps.append(send(b"250 ok\r\n250 ok\r\n250 queued\r\n"))
    else:
        steps.extend(
            transaction(
                f"MAIL FROM:<a@x.org> SIZE={len(small)}\r\n".encode(),
                [b"RCPT TO:<b@x.org>\r\n"],
                small,
            )
        )
    server = scripted(steps, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
                await smtp.sendmail("a@x.org", "b@x.org", BIG)
            exc = caught.value
            assert exc.smtp_code == 552
            assert exc.sender == "a@x.org"
            assert exc.enhanced_status == "5.3.4"
            text = exc.smtp_error.decode() if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            assert f"message of {len(BIG)} bytes" in text
            assert "limit of 100 bytes (SIZE)" in text
            # Nothing went out for it; the session goes on, no RSET needed.
            assert (await smtp.noop()).code == 250
            assert await smtp.sendmail("a@x.org", "b@x.org", small) == {}
    assert b"MAIL" not in server.transcript.split(b"NOOP")[0]


async def test_size_precheck_for_a_seekable_file(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("SIZE 100"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused):
                await smtp.sendmail("a@x.org", "b@x.org", io.BytesIO(BIG))
            assert (await smtp.noop()).code == 250


async def test_size_zero_means_no_limit(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 0"),
        transaction(
            f"MAIL FROM:<a@x.org> SIZE={len(BIG)}\r\n".encode(), [b"RCPT TO:<b@x.org>\r\n"], BIG
        ),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.sendmail("a@x.org", "b@x.org", BIG) == {}


# -- 8BITMIME / BINARYMIME / strict_8bit ---------------------------------------------------------


async def test_8bit_body_is_declared_when_offered(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        transaction(
            b"MAIL FROM:<a@x.org> BODY=8BITMIME\r\n", [b"RCPT TO:<b@x.org>\r\n"], MSG_8BIT
        ),
        # A 7-bit body is not declared: the bytes smtplib sends.
        transaction(b"MAIL FROM:<a@x.org>\r\n", [b"RCPT TO:<b@x.org>\r\n"]),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG_8BIT, strict_8bit=True) == {}
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG) == {}


async def test_8bit_without_8bitmime_is_sent_anyway_by_default(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000"),
        transaction(
            f"MAIL FROM:<a@x.org> SIZE={len(MSG_8BIT)}\r\n".encode(),
            [b"RCPT TO:<b@x.org>\r\n"],
            MSG_8BIT,
        ),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG_8BIT) == {}


async def test_strict_8bit_refuses_before_mail(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000"),
        NOOP,
        transaction(
            f"MAIL FROM:<a@x.org> SIZE={len(MSG)}\r\n".encode(), [b"RCPT TO:<b@x.org>\r\n"]
        ),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="8BITMIME"):
                await smtp.sendmail("a@x.org", "b@x.org", MSG_8BIT, strict_8bit=True)
            assert (await smtp.noop()).code == 250
            # A 7-bit message passes the same check.
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG, strict_8bit=True) == {}


async def test_strict_8bit_with_send_message(scripted: ScriptedServers) -> None:
    msg = EmailMessage()
    msg["From"] = "a@x.org"
    msg["To"] = "b@x.org"
    msg["Subject"] = "8 bit"
    msg.set_content("Grüße\n", cte="8bit")
    server = scripted(greet(), ehlo_ok("PIPELINING"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="8BITMIME"):
                await smtp.send_message(msg, strict_8bit=True)
            assert (await smtp.noop()).code == 250


async def test_strict_8bit_scans_a_seekable_file(scripted: ScriptedServers) -> None:
    seven_bit = io.BytesIO(b"junk before the start\r\n" + MSG)
    seven_bit.seek(len(b"junk before the start\r\n"))
    server = scripted(
        greet(),
        ehlo_ok("PIPELINING"),
        NOOP,
        expect_together(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n"),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        # Read through for the check, then rewound to where the caller left it.
        recv_until(b"\r\n.\r\n", MSG + b".\r\n"),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="8BITMIME"):
                await smtp.sendmail("a@x.org", "b@x.org", io.BytesIO(MSG_8BIT), strict_8bit=True)
            assert (await smtp.noop()).code == 250
            assert await smtp.sendmail("a@x.org", "b@x.org", seven_bit, strict_8bit=True) == {}


async def test_strict_8bit_scans_a_file_on_disk(scripted: ScriptedServers, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(MSG_8BIT)
    server = scripted(greet(), ehlo_ok("SIZE 1000"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with path.open("rb") as file:
                with pytest.raises(aiosmtp.SMTPNotSupportedError, match="8BITMIME"):
                    await smtp.sendmail("a@x.org", "b@x.org", file, strict_8bit=True)
                assert file.tell() == 0  # rewound
            assert (await smtp.noop()).code == 250


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_streams_and_8bit(scripted: ScriptedServers) -> None:
    """A stream's bytes are unknown before sending: declared BODY=8BITMIME when the
    server offers it; under strict_8bit without it, the caller must vouch (BODY=7BIT)."""
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        transaction(b"MAIL FROM:<a@x.org> BODY=8BITMIME\r\n", [b"RCPT TO:<b@x.org>\r\n"]),
        quit_ok(),
    )
    other = scripted(
        greet(),
        ehlo_ok("PIPELINING"),
        NOOP,
        expect_together(b"MAIL FROM:<a@x.org> BODY=7BIT\r\nRCPT TO:<b@x.org>\r\nDATA\r\n"),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        recv_until(b"\r\n.\r\n", MSG + b".\r\n"),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.sendmail("a@x.org", "b@x.org", _stream(MSG)) == {}
        async with client(other) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="BODY=7BIT"):
                await smtp.sendmail("a@x.org", "b@x.org", _stream(MSG), strict_8bit=True)
            assert (await smtp.noop()).code == 250
            result = await smtp.sendmail(
                "a@x.org", "b@x.org", _stream(MSG), ["BODY=7BIT"], strict_8bit=True
            )
            assert result == {}


async def test_binarymime_with_bdat_when_8bitmime_is_missing(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("PIPELINING", "CHUNKING", "BINARYMIME"),
        expect_together(
            b"MAIL FROM:<a@x.org> BODY=BINARYMIME\r\nRCPT TO:<b@x.org>\r\n"
            + f"BDAT {len(MSG_8BIT)} LAST\r\n".encode()
            + MSG_8BIT
        ),
        send(b"250 ok\r\n250 ok\r\n250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.sendmail("a@x.org", "b@x.org", MSG_8BIT, strict_8bit=True) == {}


async def test_binarymime_without_bdat_does_not_count(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("CHUNKING", "BINARYMIME"), NOOP, quit_ok())
    with anyio.fail_after(5):
        async with client(server, chunking=False) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="BINARYMIME"):
                await smtp.sendmail("a@x.org", "b@x.org", MSG_8BIT, strict_8bit=True)
            assert (await smtp.noop()).code == 250


# -- enhanced status codes on what the client raises ------------------------------------------


async def test_enhanced_status_on_the_exceptions(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("ENHANCEDSTATUSCODES"),
        expect(b"MAIL FROM:<bad@x.org>\r\n"),
        send(b"553 5.1.8 Sender address rejected\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 ok\r\n"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 2.1.0 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"550 5.1.1 <b@x.org> unknown\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 ok\r\n"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 2.1.0 ok\r\n"),
        expect(b"RCPT TO:<c@x.org>\r\n"),
        send(b"250 2.1.5 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        recv_until(b"\r\n.\r\n", MSG + b".\r\n"),
        send(b"554 5.6.0 Content rejected\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 ok\r\n"),
        expect(b"MAIL FROM:<x@x.org>\r\n"),
        # Without a code, or with one of the wrong class, there is none.
        send(b"451 5.0.0 wrong class for a 4xx\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as sender:
                await smtp.sendmail("bad@x.org", "b@x.org", MSG)
            assert sender.value.enhanced_status == "5.1.8"
            assert sender.value.reply == (553, b"5.1.8 Sender address rejected")
            with pytest.raises(aiosmtp.SMTPRecipientsRefused) as recipients:
                await smtp.sendmail("a@x.org", "b@x.org", MSG)
            # smtplib's shape: (code, message) tuples.
            assert recipients.value.recipients == {"b@x.org": (550, b"5.1.1 <b@x.org> unknown")}
            value = recipients.value.recipients["b@x.org"]
            assert aiosmtp.Reply(*value).enhanced_status == "5.1.1"
            with pytest.raises(aiosmtp.SMTPDataError) as data:
                await smtp.sendmail("a@x.org", "c@x.org", MSG)
            assert data.value.enhanced_status == "5.6.0"
            assert data.value.reply is not None
            assert data.value.reply.is_permanent
            with pytest.raises(aiosmtp.SMTPSenderRefused) as mismatch:
                await smtp.sendmail("x@x.org", "b@x.org", MSG)
            assert mismatch.value.enhanced_status is None


async def test_enhanced_status_on_a_helo_error(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(f"EHLO {CLIENT_NAME}\r\n".encode()),
        send(b"554 5.7.1 go away\r\n"),
        expect(f"HELO {CLIENT_NAME}\r\n".encode()),
        send(b"554 5.7.1 really\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPHeloError) as caught:
                await smtp.sendmail("a@x.org", "b@x.org", MSG)
            assert caught.value.enhanced_status == "5.7.1"


# -- the pool and aiosmtp.send -------------------------------------------------------------------


async def test_pool_passes_dsn_and_refuses_oversize_without_retry(
    scripted: ScriptedServers,
) -> None:
    mini = MiniSMTP(features=("PIPELINING", "DSN", "SIZE 150", "8BITMIME"))
    server = scripted(greet(), call(mini))
    with anyio.fail_after(5):
        async with aiosmtp.SMTPPool(
            server.host, server.port, tls="none", local_hostname=CLIENT_NAME, timeout=2
        ) as pool:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
                await pool.sendmail("a@x.org", ["b@x.org"], BIG, dsn=aiosmtp.DSN(ret="HDRS"))
            assert caught.value.smtp_code == 552
            result = await pool.sendmail(
                "a@x.org",
                ["b@x.org"],
                MSG_8BIT,
                dsn=aiosmtp.DSN(notify={"SUCCESS"}, ret="HDRS", envid="x1"),
                strict_8bit=True,
            )
            assert result == {}
            with pytest.raises(aiosmtp.SMTPNotSupportedError, match="REQUIRETLS"):
                await pool.sendmail("a@x.org", ["b@x.org"], MSG, require_tls=True)
            msg = EmailMessage()
            msg["From"] = "a@x.org"
            msg["To"] = "c@x.org"
            msg.set_content("hi\n")
            assert await pool.send_message(msg, dsn=aiosmtp.DSN(notify="NEVER")) == {}
    await server.finished()
    # One connection all along (nothing retried), and no MAIL for the large message.
    verbs = [line.split(b" ", 1)[0].strip() for line in mini.commands]
    assert verbs.count(b"EHLO") == 1
    assert verbs.count(b"MAIL") == 2
    assert b"RSET" not in verbs
    first, second = mini.transactions
    assert (
        first[0]
        == f"MAIL FROM:<a@x.org> SIZE={len(MSG_8BIT)} BODY=8BITMIME RET=HDRS ENVID=x1\r\n".encode()
    )
    assert first[1] == b"RCPT TO:<b@x.org> NOTIFY=SUCCESS ORCPT=rfc822;b@x.org\r\n"
    assert second[1] == b"RCPT TO:<c@x.org> NOTIFY=NEVER ORCPT=rfc822;c@x.org\r\n"


async def test_send_with_dsn(scripted: ScriptedServers) -> None:
    mini = MiniSMTP(features=("PIPELINING", "DSN"))
    server = scripted(greet(), call(mini))
    with anyio.fail_after(5):
        result = await aiosmtp.send(
            MSG,
            server.host,
            server.port,
            from_addr="a@x.org",
            to_addrs=["b@x.org"],
            dsn=aiosmtp.DSN(notify={"FAILURE", "DELAY"}, orcpt=False),
            tls="none",
            local_hostname=CLIENT_NAME,
            timeout=2,
        )
        assert result == {}
    await server.finished()
    (transaction_lines,) = mini.transactions
    assert transaction_lines[:2] == [
        b"MAIL FROM:<a@x.org>\r\n",
        b"RCPT TO:<b@x.org> NOTIFY=FAILURE,DELAY\r\n",
    ]


async def test_send_refuses_dsn_the_server_lacks(scripted: ScriptedServers) -> None:
    mini = MiniSMTP(features=("PIPELINING",))
    server = scripted(greet(), call(mini))
    with anyio.fail_after(5):
        with pytest.raises(aiosmtp.SMTPNotSupportedError, match="DSN"):
            await aiosmtp.send(
                MSG,
                server.host,
                server.port,
                from_addr="a@x.org",
                to_addrs="b@x.org",
                dsn=aiosmtp.DSN(),
                tls="none",
                local_hostname=CLIENT_NAME,
                timeout=2,
            )
    await server.finished()
    assert not any(line.startswith(b"MAIL") for line in mini.commands)
