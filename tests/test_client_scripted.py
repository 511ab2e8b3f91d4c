"""The client against a scripted server: exact bytes on the wire, and smtplib's
semantics checked side by side with smtplib itself on the same script."""

from __future__ import annotations

import base64
import logging
import re
import smtplib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TypeVar

import anyio
import pytest

import aiosmtp

from .scripted import (
    CLIENT_NAME,
    MiniSMTP,
    ScriptedServer,
    ScriptedServers,
    ScriptError,
    Step,
    call,
    client,
    close,
    ehlo_ok,
    ehlo_reply,
    expect,
    expect_line,
    expect_together,
    greet,
    nocase,
    quit_ok,
    send,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")

MSG = b"Subject: test\r\n\r\nHello\r\n"
MSG_WIRE = MSG + b".\r\n"
NOOP_OK = b"250 2.0.0 noop-ok\r\n"


async def run_smtplib(server: ScriptedServer, action: Callable[[smtplib.SMTP], T]) -> T:
    """Run ``action`` with a connected stdlib smtplib client, in a thread."""

    def run() -> T:
        smtp = smtplib.SMTP(server.host, server.port, local_hostname=CLIENT_NAME, timeout=5)
        try:
            return action(smtp)
        finally:
            smtp.close()

    return await anyio.to_thread.run_sync(run)


# -- the scripted server itself ---------------------------------------------------------


async def test_scripted_server_reports_an_unexpected_line(scripted: ScriptedServers) -> None:
    server = scripted(greet(), expect(b"EHLO somebody.else\r\n"), send(b"250 ok\r\n"))
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.ehlo()
        with pytest.raises(ScriptError, match=r"EHLO somebody\.else"):
            await server.finished()


async def test_scripted_server_reports_bytes_after_the_script(scripted: ScriptedServers) -> None:
    server = scripted(greet())
    with anyio.fail_after(5):
        smtp = client(server)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPServerDisconnected):
            await smtp.noop()
        with pytest.raises(ScriptError, match=r"unexpected bytes.*NOOP"):
            await server.finished()


async def test_scripted_server_reports_a_client_that_never_came(
    scripted: ScriptedServers,
) -> None:
    server = scripted(greet(), io_timeout=0.1)
    with pytest.raises(ScriptError, match="never connected"):
        await server.finished()


# -- EHLO, HELO and the session state ------------------------------------------------------

FEATURES = (
    "SIZE 10240000",
    "8BITMIME",
    "AUTH PLAIN LOGIN",
    "AUTH=CRAM-MD5",
    "PIPELINING",
    "ENHANCEDSTATUSCODES",
    "X-EXPS=LOGIN GSSAPI",
)


async def test_ehlo_sends_the_local_hostname_and_parses_features_as_smtplib(
    scripted: ScriptedServers,
) -> None:
    reply_bytes = ehlo_reply(*FEATURES)
    ours = scripted(greet(), ehlo_ok(*FEATURES), quit_ok())
    theirs = scripted(
        greet(), expect(nocase(f"EHLO {CLIENT_NAME}")), send(reply_bytes), expect(nocase("QUIT"))
    )
    with anyio.fail_after(5):
        async with client(ours) as smtp:
            assert smtp.ehlo_resp is None
            assert not smtp.does_esmtp
            reply = await smtp.ehlo()
            assert isinstance(reply, aiosmtp.Reply)
            assert reply == (250, b"test.example\n" + "\n".join(FEATURES).encode())
            assert smtp.does_esmtp
            assert smtp.ehlo_resp == reply.message
            assert smtp.helo_resp is None
            assert smtp.has_extn("PIPELINING")
            assert smtp.has_extn("size")
            assert not smtp.has_extn("starttls")
            features = dict(smtp.esmtp_features)

        def stdlib(s: smtplib.SMTP) -> dict[str, str]:
            s.ehlo()
            s.sock.sendall(b"QUIT\r\n")  # quit() would wait for a reply we do not send
            return s.esmtp_features

        assert features == await run_smtplib(theirs, stdlib)
    assert features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
    assert features["size"] == "10240000"
    assert features["x-exps"] == "=LOGIN GSSAPI"  # as smtplib parses it


async def test_ehlo_and_helo_with_an_explicit_name(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"EHLO other.example\r\n"),
        send(b"250 test.example\r\n"),
        expect(b"HELO [192.0.2.1]\r\n"),
        send(b"250 test.example hello\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.ehlo("other.example") == (250, b"test.example")
            assert smtp.esmtp_features == {}
            assert await smtp.helo("[192.0.2.1]") == (250, b"test.example hello")
            assert smtp.helo_resp == b"test.example hello"


async def test_helo_fallback_when_ehlo_is_refused(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"EHLO client.example\r\n"),
        send(b"502 5.5.1 EHLO not implemented\r\n"),
        expect(b"HELO client.example\r\n"),
        send(b"250 test.example\r\n"),
        # No ESMTP: the options are dropped, as smtplib drops them.
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG_WIRE),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo_or_helo_if_needed()
            assert smtp.helo_resp == b"test.example"
            assert smtp.ehlo_resp == b"5.5.1 EHLO not implemented"
            assert not smtp.does_esmtp
            assert smtp.esmtp_features == {}
            await smtp.ehlo_or_helo_if_needed()  # done already: nothing is sent
            result = await smtp.sendmail(
                "a@x.org",
                "b@x.org",
                MSG,
                mail_options=["BODY=8BITMIME"],
                rcpt_options=["NOTIFY=NEVER"],
            )
            assert result == {}
            assert result.reply == (250, b"queued")


async def test_helo_error_when_ehlo_and_helo_are_refused(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"EHLO client.example\r\n"),
        send(b"500 5.5.1 what\r\n"),
        expect(b"HELO client.example\r\n"),
        send(b"501 5.5.4 go away\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPHeloError) as info:
                await smtp.sendmail("a@x.org", "b@x.org", MSG)
            assert isinstance(info.value, smtplib.SMTPHeloError)
            assert (info.value.smtp_code, info.value.smtp_error) == (501, b"5.5.4 go away")
            # No MAIL went out; the session is still in step.
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


async def test_ehlo_or_helo_if_needed_raises_helo_error(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"EHLO client.example\r\n"),
        send(b"502 5.5.1 no\r\n"),
        expect(b"HELO client.example\r\n"),
        send(b"554 5.7.1 not you\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPHeloError) as info:
                await smtp.ehlo_or_helo_if_needed()
            assert (info.value.smtp_code, info.value.smtp_error) == (554, b"5.7.1 not you")
            assert smtp.helo_resp == b"5.7.1 not you"  # kept, as smtplib keeps it


async def test_421_to_ehlo_closes_without_trying_helo(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"EHLO client.example\r\n"),
        send(b"421 4.3.0 busy\r\n"),
        # Then nothing: a closing server is not asked for HELO.
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.ehlo_or_helo_if_needed()
            assert smtp.is_closed


async def test_quit_forgets_the_ehlo_state(scripted: ScriptedServers) -> None:
    first = scripted(greet(), ehlo_ok("PIPELINING", "8BITMIME"), quit_ok())
    second = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG_WIRE),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        smtp = client(first)
        await smtp.connect(first.host, first.port)
        await smtp.ehlo()
        assert smtp.has_extn("pipelining")
        assert await smtp.quit() == (221, b"2.0.0 bye")
        assert smtp.ehlo_resp is None
        assert smtp.helo_resp is None
        assert smtp.esmtp_features == {}
        assert not smtp.does_esmtp
        assert smtp.is_closed
        with pytest.raises(aiosmtp.SMTPServerDisconnected):
            await smtp.noop()
        # A new session EHLOs again (the second script insists on it). "host:port"
        # works as in smtplib.
        await smtp.connect(f"{second.host}:{second.port}")
        assert await smtp.sendmail("a@x.org", ["b@x.org"], MSG) == {}
        assert not smtp.has_extn("pipelining")
        await smtp.quit()


async def test_docmd_and_the_simple_commands(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"XSTATUS verbose now\r\n"),
        send(b"250-line one\r\n250 line two\r\n"),
        expect(b"NOOP\r\n"),
        send(b"250 2.0.0 OK\r\n"),
        expect(b"VRFY alice@example.org\r\n"),
        send(b"252 2.1.5 Cannot VRFY user\r\n"),
        expect(b"VRFY bob@example.org\r\n"),
        send(b"550 5.1.1 unknown\r\n"),
        expect(b"EXPN staff@example.org\r\n"),
        send(b"250-Alice <a@example.org>\r\n250 Bob <b@example.org>\r\n"),
        expect(b"HELP\r\n"),
        send(b"214-Commands:\r\n214 HELO EHLO MAIL\r\n"),
        expect(b"HELP MAIL\r\n"),
        send(b"214 2.0.0 MAIL FROM:<address>\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 Reset\r\n"),
        expect(b"NOOP\r\n"),
        send(b"451 4.3.0 caf\xe9 closed\r\n"),
        expect(b"XUNKNOWN\r\n"),
        send(b"500 5.5.2 what?\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            reply = await smtp.docmd("XSTATUS", "verbose now")
            assert reply == (250, b"line one\nline two")
            assert await smtp.docmd("NOOP") == (250, b"2.0.0 OK")
            vrfy = await smtp.vrfy("Alice <alice@example.org>")
            assert vrfy == (252, b"2.1.5 Cannot VRFY user")
            assert vrfy.enhanced_status == "2.1.5"
            assert await smtp.verify("bob@example.org") == (550, b"5.1.1 unknown")
            assert await smtp.expn("staff@example.org") == (
                250,
                b"Alice <a@example.org>\nBob <b@example.org>",
            )
            help_text = await smtp.help()
            assert help_text == b"Commands:\nHELO EHLO MAIL"
            assert await smtp.help("MAIL") == b"2.0.0 MAIL FROM:<address>"
            assert await smtp.rset() == (250, b"2.0.0 Reset")
            noop = await smtp.noop()
            assert noop == (451, b"4.3.0 caf\xe9 closed")
            assert noop.is_transient
            assert not noop.is_permanent
            assert noop.text == "4.3.0 caf\ufffd closed"
            assert noop.enhanced_status == "4.3.0"
            unknown = await smtp.docmd("XUNKNOWN")
            assert unknown.is_permanent
            assert unknown.enhanced_status == "5.5.2"


# -- MAIL, RCPT and DATA: the exact bytes -------------------------------------------------


async def test_mail_and_rcpt_with_size_and_options(scripted: ScriptedServers) -> None:
    text = "Subject: x\n\nhi\n"  # a str: line endings are fixed as smtplib fixes them
    size = len(b"Subject: x\r\n\r\nhi\r\n")
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "8BITMIME", "DSN"),
        expect(f"MAIL FROM:<alice@example.org> SIZE={size} BODY=8BITMIME\r\n".encode()),
        send(b"250 2.1.0 ok\r\n"),
        expect(b"RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x\r\n"),
        send(b"250 2.1.5 ok\r\n"),
        expect(b"RCPT TO:<carol@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x\r\n"),
        send(b"250 2.1.5 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go ahead\r\n"),
        expect(b"Subject: x\r\n\r\nhi\r\n.\r\n"),
        send(b"250 2.0.0 Ok: queued as ABC123\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            result = await smtp.sendmail(
                "Alice <alice@example.org>",
                ["bob@example.org", "Carol <carol@example.org>"],
                text,
                mail_options=["BODY=8BITMIME"],
                rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@x"],
            )
    assert result == {}
    assert isinstance(result, aiosmtp.SendResult)
    assert result.reply == (250, b"2.0.0 Ok: queued as ABC123")


async def test_mail_and_rcpt_drop_options_before_ehlo(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        ehlo_ok("8BITMIME", "DSN"),
        expect(b"MAIL FROM:<a@x.org> BODY=8BITMIME\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org> NOTIFY=NEVER\r\n"),
        send(b"251 2.1.5 will forward\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG_WIRE),
        send(b"250 2.0.0 done\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            # smtplib sends options only to a server that spoke ESMTP.
            assert await smtp.mail("a@x.org", ["BODY=8BITMIME"]) == (250, b"ok")
            assert await smtp.rcpt("b@x.org", ["NOTIFY=NEVER"]) == (250, b"ok")
            await smtp.ehlo()
            assert await smtp.mail("a@x.org", ["BODY=8BITMIME"]) == (250, b"ok")
            assert await smtp.rcpt("b@x.org", ["NOTIFY=NEVER"]) == (251, b"2.1.5 will forward")
            assert await smtp.data(MSG) == (250, b"2.0.0 done")


ADDRESSES = [
    "alice@example.org",
    "Alice Example <alice@example.org>",
    '"Smith, John" <john@example.org>',
    "<bracketed@example.org>",
    "  <spaced@example.org>  ",
    "alice@example.org (comment)",
    "<>",
    "",
    "local-only",
    "a@x.org, b@x.org",
    "<",
    "< >",
    "broken@x.org>",
]


@pytest.mark.parametrize("address", ADDRESSES)
async def test_addresses_are_quoted_as_smtplib_quotes_them(
    scripted: ScriptedServers, address: str
) -> None:
    quoted = smtplib.quoteaddr(address)
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(f"MAIL FROM:{quoted}\r\n".encode()),
        send(b"250 ok\r\n"),
        expect(f"RCPT TO:{quoted}\r\n".encode()),
        send(b"250 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            await smtp.mail(address)
            await smtp.rcpt(address)


DATA_CASES = [
    (b"a\nb", b"a\r\nb\r\n.\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
    (b"a\r\n", b"a\r\n.\r\n"),
    (b"a\r\n\r\n", b"a\r\n\r\n.\r\n"),
    (b"x\r\r\ny\n\n", b"x\r\n\r\ny\r\n\r\n.\r\n"),
    (b".lead\n.\n..x\r\nmid.dot\n", b"..lead\r\n..\r\n...x\r\nmid.dot\r\n.\r\n"),
    (b"\n.\n", b"\r\n..\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    # SMTP smuggling: no end of data can hide in the payload.
    (b"a\n.\nMAIL FROM:<evil@x>\n", b"a\r\n..\r\nMAIL FROM:<evil@x>\r\n.\r\n"),
    (b"a\r.\rRSET\r", b"a\r\n..\r\nRSET\r\n.\r\n"),
    (b"a\r\n.\r\nRSET", b"a\r\n..\r\nRSET\r\n.\r\n"),
    (b"a\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"\x00\xff8bit\n", b"\x00\xff8bit\r\n.\r\n"),
]


@pytest.mark.parametrize(
    ("message", "wire", "as_str"),
    [(message, wire, False) for message, wire in DATA_CASES]
    + [(message, wire, True) for message, wire in DATA_CASES if message.isascii()],
)
async def test_data_payload_normalised_and_dot_stuffed(
    scripted: ScriptedServers, message: bytes, wire: bytes, as_str: bool
) -> None:
    # An 8-bit body is declared to a server offering 8BITMIME (issue 6).
    body_option = b"" if message.isascii() else b" BODY=8BITMIME"
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"MAIL FROM:<a@x.org>" + body_option + b"\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        # Exactly these bytes, then nothing but QUIT: one end of data, once.
        expect(wire),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            body: str | bytes = message.decode("ascii") if as_str else message
            assert await smtp.sendmail("a@x.org", ["b@x.org"], body) == {}
    assert server.transcript.count(b"\r\n.\r\n") == 1 + wire[:-3].count(b"\r\n.\r\n")


async def test_data_method_normalises_too(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(b"one\r\n..two\r\n.\r\n"),
        send(b"250 2.0.0 queued\r\n"),
        expect(b"DATA\r\n"),
        send(b"503 5.5.1 no recipients\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.mail("a@x.org")
            await smtp.rcpt("b@x.org")
            assert await smtp.data("one\n.two") == (250, b"2.0.0 queued")
            with pytest.raises(aiosmtp.SMTPDataError) as info:
                await smtp.data(b"x")
            assert (info.value.smtp_code, info.value.smtp_error) == (503, b"5.5.1 no recipients")


async def test_smtputf8_transaction_is_sent_as_utf8(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME", "SMTPUTF8"),
        # The body is 8-bit and the server offers 8BITMIME: declared (issue 6).
        expect("MAIL FROM:<jörg@exämple.org> SMTPUTF8 BODY=8BITMIME\r\n".encode()),
        send(b"250 ok\r\n"),
        expect("RCPT TO:<ünï@exämple.org>\r\n".encode()),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect("Subject: grüße\r\n\r\nhi\r\n.\r\n".encode()),
        send(b"250 queued\r\n"),
        # After the transaction, commands are ASCII again.
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            result = await smtp.sendmail(
                "jörg@exämple.org",
                ["ünï@exämple.org"],
                "Subject: grüße\r\n\r\nhi\r\n".encode(),
                mail_options=["SMTPUTF8"],
            )
            assert result == {}
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")
            with pytest.raises(UnicodeEncodeError):
                await smtp.vrfy("jörg@exämple.org")


async def test_send_message_with_international_addresses(scripted: ScriptedServers) -> None:
    bodies: list[bytes] = []
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME", "SMTPUTF8"),
        expect("MAIL FROM:<jörg@exämple.org> SMTPUTF8 BODY=8BITMIME\r\n".encode()),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<to@example.org>\r\n"),
        send(b"250 ok\r\n"),
        expect("RCPT TO:<blïnd@example.org>\r\n".encode()),
        send(b"250 ok\r\n"),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        call(lambda conn: bodies.append(conn.read_until(b"\r\n.\r\n"))),
        send(b"250 queued\r\n"),
        quit_ok(),
    )
    msg = EmailMessage()
    msg["From"] = "Jörg <jörg@exämple.org>"
    msg["To"] = "to@example.org"
    msg["Bcc"] = "blïnd@example.org"
    msg["Subject"] = "hello"
    msg.set_content("body\n")
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.send_message(msg) == {}
    [body] = bodies
    assert "jörg@exämple.org".encode() in body
    assert b"Bcc" not in body
    assert "blïnd".encode() not in body
    assert msg["Bcc"] == "blïnd@example.org"  # the caller's message is untouched


async def test_smtputf8_refused_when_the_server_lacks_it(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("8BITMIME"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    msg = EmailMessage()
    msg["From"] = "jörg@exämple.org"
    msg["To"] = "to@example.org"
    msg.set_content("body\n")
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await smtp.sendmail("a@x.org", ["b@x.org"], MSG, mail_options=["SMTPUTF8"])
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await smtp.send_message(msg)
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")
            # Without SMTPUTF8, a non-ASCII address cannot be encoded (as in smtplib).
            with pytest.raises(UnicodeEncodeError):
                await smtp.sendmail("jörg@exämple.org", ["b@x.org"], MSG)
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


async def test_non_ascii_str_message_is_refused_before_anything_is_sent(
    scripted: ScriptedServers,
) -> None:
    server = scripted(greet(), ehlo_ok("8BITMIME"), expect(b"NOOP\r\n"), send(NOOP_OK), quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            with pytest.raises(UnicodeEncodeError):
                await smtp.sendmail("a@x.org", ["b@x.org"], "Subject: grüße\r\n\r\n")
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


# -- sendmail's verdicts, side by side with smtplib --------------------------------------

BODY = "<body>"


@dataclass(frozen=True)
class Scenario:
    id: str
    #: (command line, matched without regard to case, or BODY; the server's reply)
    exchange: tuple[tuple[str, bytes], ...]
    #: what smtplib and aiosmtp both report: ("ok", refused) or the exception's
    #: (smtplib class name, smtp_code, smtp_error, sender, recipients)
    expected: tuple[object, ...]
    #: commands aiosmtp sends after ``exchange`` where smtplib sends none
    aiosmtp_extra: tuple[tuple[str, bytes], ...] = ()
    #: whether aiosmtp must have closed the connection afterwards
    closes: bool = False
    recipients: tuple[str, ...] = ("b@x.org", "c@x.org")


MAIL_OK = (f"mail FROM:<a@x.org> size={len(MSG)}", b"250 2.1.0 ok\r\n")
RCPT_B = ("rcpt TO:<b@x.org>", b"250 2.1.5 ok\r\n")
RCPT_C = ("rcpt TO:<c@x.org>", b"250 2.1.5 ok\r\n")
DATA_GO = ("data", b"354 go ahead\r\n")
RSET_OK = ("rset", b"250 2.0.0 flushed\r\n")

SCENARIOS = [
    Scenario(
        "one-recipient-refused",
        (
            MAIL_OK,
            RCPT_B,
            ("rcpt TO:<c@x.org>", b"550 5.1.1 no such user c\r\n"),
            DATA_GO,
            (BODY, b"250 2.0.0 queued\r\n"),
        ),
        ("ok", {"c@x.org": (550, b"5.1.1 no such user c")}),
    ),
    Scenario(
        "251-counts-as-accepted",
        (
            MAIL_OK,
            ("rcpt TO:<b@x.org>", b"251 2.1.5 forwarded\r\n"),
            RCPT_C,
            DATA_GO,
            (BODY, b"250 2.0.0 queued\r\n"),
        ),
        ("ok", {}),
    ),
    Scenario(
        "sender-refused",
        ((f"mail FROM:<a@x.org> size={len(MSG)}", b"553 5.1.8 bad sender\r\n"), RSET_OK),
        ("SMTPSenderRefused", 553, b"5.1.8 bad sender", "a@x.org", None),
    ),
    Scenario(
        "all-recipients-refused",
        (
            MAIL_OK,
            ("rcpt TO:<b@x.org>", b"550 5.1.1 no b\r\n"),
            ("rcpt TO:<c@x.org>", b"450 4.2.0 busy\r\n"),
            RSET_OK,
        ),
        (
            "SMTPRecipientsRefused",
            None,
            None,
            None,
            {"b@x.org": (550, b"5.1.1 no b"), "c@x.org": (450, b"4.2.0 busy")},
        ),
    ),
    Scenario(
        "data-command-refused",
        (MAIL_OK, RCPT_B, RCPT_C, ("data", b"554 5.5.1 no valid recipients\r\n")),
        ("SMTPDataError", 554, b"5.5.1 no valid recipients", None, None),
        # API.md: a refused DATA is followed by RSET too, where smtplib forgets it.
        aiosmtp_extra=(RSET_OK,),
    ),
    Scenario(
        "message-refused",
        (MAIL_OK, RCPT_B, RCPT_C, DATA_GO, (BODY, b"554 5.7.1 looks like spam\r\n"), RSET_OK),
        ("SMTPDataError", 554, b"5.7.1 looks like spam", None, None),
    ),
    Scenario(
        "421-at-mail",
        ((f"mail FROM:<a@x.org> size={len(MSG)}", b"421 4.3.2 shutting down\r\n"),),
        ("SMTPSenderRefused", 421, b"4.3.2 shutting down", "a@x.org", None),
        closes=True,
    ),
    Scenario(
        "421-at-rcpt",
        (
            MAIL_OK,
            ("rcpt TO:<b@x.org>", b"550 5.1.1 no b\r\n"),
            ("rcpt TO:<c@x.org>", b"421 4.3.2 shutting down\r\n"),
        ),
        (
            "SMTPRecipientsRefused",
            None,
            None,
            None,
            {"b@x.org": (550, b"5.1.1 no b"), "c@x.org": (421, b"4.3.2 shutting down")},
        ),
        closes=True,
        recipients=("b@x.org", "c@x.org", "d@x.org"),
    ),
    Scenario(
        "421-at-data",
        (MAIL_OK, RCPT_B, RCPT_C, ("data", b"421 4.3.2 shutting down\r\n")),
        ("SMTPDataError", 421, b"4.3.2 shutting down", None, None),
        closes=True,
    ),
    Scenario(
        "421-after-the-data",
        (MAIL_OK, RCPT_B, RCPT_C, DATA_GO, (BODY, b"421 4.4.2 timeout\r\n")),
        ("SMTPDataError", 421, b"4.4.2 timeout", None, None),
        closes=True,
    ),
]

_SMTPLIB_CLASSES = (
    smtplib.SMTPSenderRefused,
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPHeloError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPResponseException,
    smtplib.SMTPException,
)


def verdict(
    exc: BaseException | None, result: dict[str, tuple[int, bytes]] | None
) -> tuple[object, ...]:
    if exc is None:
        return ("ok", dict(result or {}))
    name = next(cls.__name__ for cls in _SMTPLIB_CLASSES if isinstance(exc, cls))
    return (
        name,
        getattr(exc, "smtp_code", None),
        getattr(exc, "smtp_error", None),
        getattr(exc, "sender", None),
        getattr(exc, "recipients", None),
    )


def scenario_script(scenario: Scenario, *, ours: bool) -> list[Step]:
    steps: list[Step] = [
        greet(),
        expect(nocase(f"ehlo {CLIENT_NAME}")),
        send(ehlo_reply("SIZE 1000000", "8BITMIME")),
    ]
    exchange = scenario.exchange + (scenario.aiosmtp_extra if ours else ())
    for command, reply in exchange:
        steps.append(expect(MSG_WIRE) if command == BODY else expect(nocase(command)))
        steps.append(send(reply))
    if not scenario.closes:
        # Both clients must still be in step: the next reply is the one to NOOP.
        steps += [expect(nocase("noop")), send(NOOP_OK)]
    return steps


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
async def test_sendmail_verdicts_match_smtplib(
    scripted: ScriptedServers, scenario: Scenario
) -> None:
    ours = scripted(scenario_script(scenario, ours=True))
    theirs = scripted(scenario_script(scenario, ours=False))
    recipients = list(scenario.recipients)

    def stdlib(s: smtplib.SMTP) -> tuple[object, ...]:
        try:
            refused = s.sendmail("a@x.org", recipients, MSG)
        except smtplib.SMTPException as exc:
            result = verdict(exc, None)
        else:
            result = verdict(None, refused)
        if not scenario.closes:
            assert s.noop() == (250, b"2.0.0 noop-ok")
        return result

    with anyio.fail_after(5):
        smtp = client(ours)
        await smtp.connect(ours.host, ours.port)
        try:
            refused = await smtp.sendmail("a@x.org", recipients, MSG)
        except aiosmtp.SMTPException as exc:
            ours_verdict = verdict(exc, None)
        else:
            ours_verdict = verdict(None, refused)
        if scenario.closes:
            assert smtp.is_closed
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.noop()
        else:
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")
        await smtp.close()
        theirs_verdict = await run_smtplib(theirs, stdlib)
        await ours.finished()
        await theirs.finished()
    assert ours_verdict == scenario.expected
    assert theirs_verdict == scenario.expected
    # The same bytes but for case, and the RSET smtplib forgets.
    extra = b"".join(command.upper().encode() + b"\r\n" for command, _ in scenario.aiosmtp_extra)
    expected = theirs.transcript.upper()
    if not scenario.closes:
        assert expected.endswith(b"NOOP\r\n")
        expected = expected[: -len(b"NOOP\r\n")] + extra + b"NOOP\r\n"
    assert ours.transcript.upper() == expected


async def test_sendmail_without_recipients_raises_recipients_refused(
    scripted: ScriptedServers,
) -> None:
    server = scripted(greet(), ehlo_ok("8BITMIME"), expect(b"NOOP\r\n"), send(NOOP_OK), quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPRecipientsRefused) as info:
                await smtp.sendmail("a@x.org", [], MSG)
            assert info.value.recipients == {}
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


# -- PIPELINING -------------------------------------------------------------------------


def envelope_group(*recipients: str, size: int = len(MSG)) -> bytes:
    lines = [f"MAIL FROM:<a@x.org> SIZE={size}"]
    lines += [f"RCPT TO:<{recipient}>" for recipient in recipients]
    lines.append("DATA")
    return "".join(line + "\r\n" for line in lines).encode()


async def test_pipelined_envelope_goes_out_in_one_write(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "PIPELINING", "8BITMIME"),
        expect_together(envelope_group("b@x.org", "c@x.org")),
        send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no c\r\n354 go\r\n"),
        expect(MSG_WIRE),
        send(b"250 2.0.0 queued as P1\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            result = await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], MSG)
    assert result == {"c@x.org": (550, b"5.1.1 no c")}
    assert result.reply == (250, b"2.0.0 queued as P1")
    # The server had said nothing between its EHLO reply and the whole group.
    log = server.log
    group_index = next(i for i, (d, data) in enumerate(log) if data.startswith(b"MAIL"))
    assert [d for d, _ in log[group_index - 1 : group_index + 2]] == ["S", "C", "S"]


async def test_pipelined_replies_arriving_one_by_one(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "PIPELINING"),
        expect_together(envelope_group("b@x.org")),
        send(b"250 2.1.0 ok\r\n"),
        send(b"250 2.1.5 ok\r\n"),
        send(b"354 go\r\n"),
        expect(MSG_WIRE),
        send(b"250 2.0.0 queued\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.sendmail("a@x.org", ["b@x.org"], MSG) == {}


@pytest.mark.parametrize("refusal", ["sender", "recipients"])
async def test_pipelined_354_after_a_refusal_is_ended_with_a_lone_dot(
    scripted: ScriptedServers, refusal: str
) -> None:
    if refusal == "sender":
        replies = b"553 5.1.8 bad sender\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n"
    else:
        replies = b"250 2.1.0 ok\r\n550 5.1.1 no b\r\n551 5.1.6 moved\r\n354 go\r\n"
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "PIPELINING"),
        expect_together(envelope_group("b@x.org", "c@x.org")),
        send(replies),
        expect(b".\r\n"),
        send(b"554 5.5.1 no valid recipients\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 flushed\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            if refusal == "sender":
                with pytest.raises(aiosmtp.SMTPSenderRefused) as sender_info:
                    await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], MSG)
                assert sender_info.value.smtp_code == 553
                assert sender_info.value.sender == "a@x.org"
            else:
                with pytest.raises(aiosmtp.SMTPRecipientsRefused) as rcpt_info:
                    await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], MSG)
                assert rcpt_info.value.recipients == {
                    "b@x.org": (550, b"5.1.1 no b"),
                    "c@x.org": (551, b"5.1.6 moved"),
                }
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


async def test_pipelined_refused_sender_and_refused_data(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "PIPELINING"),
        expect_together(envelope_group("b@x.org")),
        send(b"553 5.1.8 bad sender\r\n503 5.5.1 sender first\r\n503 5.5.1 no rcpt\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 flushed\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as info:
                await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
            assert (info.value.smtp_code, info.value.smtp_error) == (553, b"5.1.8 bad sender")
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


async def test_pipelined_data_refused(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "PIPELINING"),
        expect_together(envelope_group("b@x.org")),
        send(b"250 ok\r\n250 ok\r\n452 4.3.1 out of space\r\n"),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 flushed\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPDataError) as info:
                await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
            assert (info.value.smtp_code, info.value.smtp_error) == (452, b"4.3.1 out of space")
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
async def test_pipelined_421_closes(scripted: ScriptedServers, stage: str) -> None:
    replies = {
        "mail": b"421 4.3.2 bye\r\n",
        "rcpt": b"250 ok\r\n550 5.1.1 no b\r\n421 4.3.2 bye\r\n",
        "data": b"250 ok\r\n250 ok\r\n250 ok\r\n421 4.3.2 bye\r\n",
    }[stage]
    server = scripted(
        greet(),
        ehlo_ok("SIZE 1000000", "PIPELINING"),
        expect_together(envelope_group("b@x.org", "c@x.org")),
        # Then the client hangs up without another byte (no RSET, no QUIT).
        send(replies),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPException) as info:
                await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], MSG)
            assert smtp.is_closed
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.noop()
    exc = info.value
    if stage == "mail":
        assert isinstance(exc, aiosmtp.SMTPSenderRefused)
        assert (exc.smtp_code, exc.sender) == (421, "a@x.org")
    elif stage == "rcpt":
        assert isinstance(exc, aiosmtp.SMTPRecipientsRefused)
        assert exc.recipients == {
            "b@x.org": (550, b"5.1.1 no b"),
            "c@x.org": (421, b"4.3.2 bye"),
        }
    else:
        assert isinstance(exc, aiosmtp.SMTPDataError)
        assert exc.smtp_code == 421


async def test_many_pipelined_recipients_do_not_deadlock(scripted: ScriptedServers) -> None:
    server_logic = MiniSMTP(features=("PIPELINING",))
    server = scripted(greet(), call(server_logic))
    recipients = [f"user{i:04}-{'x' * 200}@example.org" for i in range(1500)]
    with anyio.fail_after(10):
        async with client(server, timeout=2.0) as smtp:
            assert await smtp.sendmail("a@x.org", recipients, MSG) == {}
    [transaction] = server_logic.transactions
    assert [line for line in transaction if line.startswith(b"RCPT")] == [
        f"RCPT TO:<{r}>\r\n".encode() for r in recipients
    ]


# -- CR, LF and NUL in arguments -------------------------------------------------------

Call = Callable[[aiosmtp.SMTP], Awaitable[object]]

BAD_CALLS: dict[str, Call] = {
    "sender": lambda s: s.sendmail("a@x.org\r\nRSET", ["b@x.org"], MSG),
    "sender-display-name": lambda s: s.sendmail("A\r\nRSET <a@x.org>", ["b@x.org"], MSG),
    "recipient": lambda s: s.sendmail("a@x.org", ["b@x.org", "c@x.org\nDATA"], MSG),
    "recipient-nul": lambda s: s.sendmail("a@x.org", ["b@x.org\0"], MSG),
    "mail-option": lambda s: s.sendmail(
        "a@x.org", ["b@x.org"], MSG, mail_options=["BODY=8BITMIME\r\nRSET"]
    ),
    "rcpt-option": lambda s: s.sendmail(
        "a@x.org", ["b@x.org"], MSG, rcpt_options=["NOTIFY=NEVER\0"]
    ),
    "mail": lambda s: s.mail("a@x.org\r"),
    "mail-option-only": lambda s: s.mail("a@x.org", ["X=\n"]),
    "rcpt": lambda s: s.rcpt("b@x.org", ["X\nY"]),
    "ehlo": lambda s: s.ehlo("bad\r\nname"),
    "helo": lambda s: s.helo("bad\0name"),
    "docmd-args": lambda s: s.docmd("NOOP", "x\r\nQUIT"),
    "docmd-verb": lambda s: s.docmd("NO\nOP"),
    "vrfy": lambda s: s.vrfy("a@x.org\r\nEXPN b"),
    "expn": lambda s: s.expn("list\n"),
    "help": lambda s: s.help("MAIL\r\nQUIT"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
async def test_line_breaks_and_nul_in_arguments_raise_before_sending(
    scripted: ScriptedServers, name: str
) -> None:
    server = scripted(
        greet(),
        ehlo_ok("PIPELINING", "SIZE 100000", "8BITMIME", "DSN"),
        # The very next bytes are the NOOP: nothing of the refused command went out.
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            with pytest.raises(ValueError, match=r"CR|LF|NUL|line|character"):
                await BAD_CALLS[name](smtp)
            assert await smtp.noop() == (250, b"2.0.0 noop-ok")


# -- tracing and logging ------------------------------------------------------------------

USER = "alice"
PASSWORD = "s3cret-Pässword"
PLAIN_BLOB = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
USER_B64 = base64.b64encode(USER.encode()).decode()
PASSWORD_B64 = base64.b64encode(PASSWORD.encode()).decode()


def auth_plain_script() -> list[Step]:
    return [
        greet(),
        *ehlo_ok("AUTH PLAIN", "8BITMIME"),
        expect(f"AUTH PLAIN {PLAIN_BLOB}\r\n".encode()),
        send(b"235 2.7.0 Authentication successful\r\n"),
        *quit_ok(),
    ]


def auth_login_script() -> list[Step]:
    return [
        greet(),
        *ehlo_ok("AUTH LOGIN"),
        expect(f"AUTH LOGIN {USER_B64}\r\n".encode()),
        send(b"334 UGFzc3dvcmQ6\r\n"),
        expect(f"{PASSWORD_B64}\r\n".encode()),
        send(b"235 2.7.0 Authentication successful\r\n"),
        *quit_ok(),
    ]


def assert_no_secrets(text: str) -> None:
    for secret in (PASSWORD, PASSWORD_B64, PLAIN_BLOB, PLAIN_BLOB.rstrip("=")):
        assert secret not in text


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_debuglevel_prints_a_trace_with_auth_redacted(
    scripted: ScriptedServers, capsys: pytest.CaptureFixture[str], mechanism: str
) -> None:
    server = scripted(auth_plain_script() if mechanism == "PLAIN" else auth_login_script())
    with anyio.fail_after(5):
        smtp = client(server)
        smtp.set_debuglevel(1)
        async with smtp:
            assert (await smtp.login(USER, PASSWORD)).code == 235
    err = capsys.readouterr().err
    assert "EHLO client.example" in err
    assert "reply: retcode (250)" in err
    assert f"AUTH {mechanism}" in err
    assert "235" in err
    assert "QUIT" in err
    assert_no_secrets(err)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_debug_log_never_holds_the_password(
    scripted: ScriptedServers, caplog: pytest.LogCaptureFixture, mechanism: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    server = scripted(auth_plain_script() if mechanism == "PLAIN" else auth_login_script())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login(USER, PASSWORD)).code == 235
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "EHLO client.example" in messages
    assert f"AUTH {mechanism}" in messages
    assert "235" in messages
    assert all(record.name.startswith("aiosmtp") for record in caplog.records)
    assert_no_secrets(messages)
    assert_no_secrets(caplog.text)


async def test_debug_trace_with_timestamps(
    scripted: ScriptedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    server = scripted(greet(), ehlo_ok("8BITMIME"), quit_ok())
    with anyio.fail_after(5):
        smtp = client(server)
        smtp.set_debuglevel(2)
        async with smtp:
            await smtp.ehlo()
    err = capsys.readouterr().err
    assert re.search(r"^\d\d:\d\d:\d\d(\.\d+)? send: 'EHLO client.example", err, re.MULTILINE)


async def test_docmd_sends_the_line_as_given(scripted: ScriptedServers) -> None:
    lines: list[bytes] = []
    server = scripted(
        greet(),
        expect_line(into=lines),
        send(b"250 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.docmd("XCLIENT", "NAME=spike.porcupine.org ADDR=168.100.189.2")
    assert lines == [b"XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2"]


async def test_server_hanging_up_after_the_reply_to_quit(scripted: ScriptedServers) -> None:
    server = scripted(greet(), expect(b"QUIT\r\n"), send(b"221 bye\r\n"), close())
    with anyio.fail_after(5):
        async with client(server):
            pass
