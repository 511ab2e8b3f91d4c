"""aiosmtp against a real Exim 4 (unpacked by scripts/install-exim, run by _exim.py):
EHLO, STARTTLS, implicit TLS, AUTH, DATA and BDAT deliveries checked byte for byte in
Exim's maildir, SMTPUTF8, 8BITMIME, DSN, SIZE, VRFY and refused recipients."""

from __future__ import annotations

import email.generator
import email.policy
import io
import os
import re
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

import aiosmtp

from ._base import MailServer
from ._exim import UTF8_RECIPIENT, delivered_files, exim_unavailable, run_exim

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 10.0
SENDER = "sender@example.org"


@pytest.fixture
def exim(tmp_path: Path, ca: trustme.CA) -> Iterator[MailServer]:
    reason = exim_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with run_exim(tmp_path, ca) as server:
        yield server


def stored(server: MailServer, count: int) -> list[bytes]:
    assert server.stored_messages is not None
    messages = server.stored_messages(count, TIMEOUT)
    assert len(messages) == count
    return messages


def mainlog(workdir: Path) -> str:
    return (workdir / "exim" / "log" / "mainlog").read_text(errors="replace")


def raw_deliveries(workdir: Path) -> list[bytes]:
    """The stored files as Exim wrote them, trace fields included."""
    return [p.read_bytes() for p in delivered_files(workdir / "exim" / "maildir")]


def envelope_to(raw: bytes) -> list[str]:
    match = re.search(rb"^Envelope-to: (.*(?:\n[ \t].*)*)", raw, re.MULTILINE)
    assert match is not None
    return [a.strip() for a in match.group(1).decode().split(",")]


def wire_bytes(msg: EmailMessage, *, utf8: bool = False) -> bytes:
    """The message as smtplib's send_message flattens it (Bcc aside)."""
    buffer = io.BytesIO()
    # The messages here use the default policy; SMTP is that with CRLF line endings.
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    email.generator.BytesGenerator(buffer, policy=policy).flatten(msg)
    return buffer.getvalue()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def with_attachment(recipients: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "interop: an attachment for Exim"
    msg["Message-ID"] = "<exim-attachment@example.org>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    # Lines that start with a dot (stuffed under DATA, untouched under BDAT), a
    # lone dot, trailing spaces and a long line.
    msg.set_content(".leading dot\n.\n..two dots\ntrailing spaces   \n" + "x" * 900 + "\n")
    payload = bytes(range(256)) * 128 + os.urandom(4096)
    msg.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    return msg


# -- connection, EHLO, VRFY -----------------------------------------------------------


async def test_ehlo_advertises_the_configured_extensions(exim: MailServer) -> None:
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        code, _ = await smtp.ehlo("client.example")
        assert code == 250
        assert smtp.does_esmtp
        for name in ("starttls", "8bitmime", "dsn", "vrfy", "pipelining", "chunking"):
            assert smtp.has_extn(name), name
        assert smtp.has_extn("smtputf8")
        assert smtp.esmtp_features["size"] == str(exim.size_limit)
        assert set(smtp.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN", "CRAM-MD5"}
        assert (await smtp.noop())[0] == 250
        assert (await smtp.rset())[0] == 250
    # HELO still works and says nothing about extensions.
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        assert (await smtp.helo("client.example"))[0] == 250
        assert not smtp.does_esmtp


async def test_vrfy(exim: MailServer) -> None:
    assert exim.refused_recipient is not None
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        reply = await smtp.verify(exim.recipients[0])
        assert reply.code == 250
        assert exim.recipients[0].encode() in reply.message
        assert (await smtp.verify(exim.refused_recipient)).code == 550


# -- TLS --------------------------------------------------------------------------------


async def test_starttls_with_the_trustme_ca(
    exim: MailServer, tmp_path: Path, ca: trustme.CA
) -> None:
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        await smtp.ehlo()
        code, _ = await smtp.starttls(context=trusting(ca), server_hostname=exim.tls_hostname)
        assert code == 220
        await smtp.ehlo()
        # RFC 3207 4.2: the new EHLO no longer offers STARTTLS.
        assert not smtp.has_extn("starttls")
        assert smtp.has_extn("auth")
        refused = await smtp.sendmail(SENDER, [exim.recipients[0]], b"Subject: tls\r\n\r\nhi\r\n")
        assert refused == {}
    assert stored(exim, 1) == [b"Subject: tls\r\n\r\nhi\r\n"]
    assert " X=TLS1." in mainlog(tmp_path)


async def test_starttls_refuses_a_certificate_from_another_ca(exim: MailServer) -> None:
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        with pytest.raises(aiosmtp.SMTPCertificateError):
            await smtp.starttls(context=trusting(trustme.CA()), server_hostname=exim.tls_hostname)


async def test_implicit_tls(exim: MailServer, ca: trustme.CA) -> None:
    assert exim.implicit_tls_port is not None
    async with aiosmtp.SMTP_SSL(
        exim.host, exim.implicit_tls_port, timeout=TIMEOUT, context=trusting(ca)
    ) as smtp:
        await smtp.ehlo()
        assert not smtp.has_extn("starttls")
        refused = await smtp.sendmail(SENDER, exim.recipients[:1], b"Subject: 465\r\n\r\nhi\r\n")
        assert refused == {}
    assert stored(exim, 1) == [b"Subject: 465\r\n\r\nhi\r\n"]


# -- AUTH -----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_auth(exim: MailServer, tmp_path: Path, ca: trustme.CA, mechanism: str) -> None:
    user, password = next(iter(exim.users.items()))
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        await smtp.starttls(context=trusting(ca), server_hostname=exim.tls_hostname)
        await smtp.ehlo()
        smtp.user, smtp.password = user, password
        authobject = {
            "PLAIN": smtp.auth_plain,
            "LOGIN": smtp.auth_login,
            "CRAM-MD5": smtp.auth_cram_md5,
        }[mechanism]
        code, _ = await smtp.auth(mechanism, authobject)
        assert code == 235
        assert await smtp.sendmail(SENDER, exim.recipients[:1], b"Subject: auth\r\n\r\n") == {}
    stored(exim, 1)
    # Exim names the authenticator and the user on the message's reception line.
    assert f"A={mechanism.lower().replace('-', '_')}:{user}" in mainlog(tmp_path)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_auth_with_a_bad_password(exim: MailServer, mechanism: str) -> None:
    user = next(iter(exim.users))
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        await smtp.ehlo()
        smtp.user, smtp.password = user, "not the password"
        authobject = {
            "PLAIN": smtp.auth_plain,
            "LOGIN": smtp.auth_login,
            "CRAM-MD5": smtp.auth_cram_md5,
        }[mechanism]
        with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
            await smtp.auth(mechanism, authobject)
        assert caught.value.smtp_code == 535
        # The session goes on: Exim counts the failure and keeps talking.
        assert (await smtp.noop())[0] == 250


async def test_login_picks_a_mechanism_and_succeeds(exim: MailServer, ca: trustme.CA) -> None:
    for user, password in exim.users.items():
        async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
            await smtp.starttls(context=trusting(ca), server_hostname=exim.tls_hostname)
            assert (await smtp.login(user, password))[0] == 235


# -- messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
async def test_send_message_with_an_attachment_is_stored_byte_for_byte(
    exim: MailServer, tmp_path: Path, chunking: bool
) -> None:
    msg = with_attachment(list(exim.recipients))
    expected = wire_bytes(msg)
    assert len(expected) < (exim.size_limit or 0)
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT, chunking=chunking) as smtp:
        result = await smtp.send_message(msg)
        assert result == {}
        assert result.reply.code == 250
    [message] = stored(exim, 1)
    assert message == expected
    [raw] = raw_deliveries(tmp_path)
    assert envelope_to(raw) == list(exim.recipients)
    # Exim's reception line (log_selector +pipelining) says L when the client pipelined
    # its commands (L- when it did not; the . is about PIPECONNECT, unused), and K
    # when the body came in BDAT chunks.
    reception = next(line for line in mainlog(tmp_path).splitlines() if " <= " in line)
    fields = reception.split()
    assert {"L", "L.", "L*"} & set(fields), reception
    assert ("K" in fields) is chunking, reception


async def test_smtputf8_addresses(exim: MailServer, tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "Jörg <jörg@localhost>"
    msg["To"] = UTF8_RECIPIENT
    msg["Subject"] = "Grüße"
    msg.set_content("Grüße aus Köln\n", cte="8bit")
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        assert await smtp.send_message(msg) == {}
    [message] = stored(exim, 1)
    assert message == wire_bytes(msg, utf8=True)
    [raw] = raw_deliveries(tmp_path)
    assert envelope_to(raw) == [UTF8_RECIPIENT]
    assert "P=utf8esmtp" in mainlog(tmp_path)


async def test_8bitmime_body(exim: MailServer) -> None:
    body = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
    body += "Content-Transfer-Encoding: 8bit\r\n\r\nÆøå, ça va?\r\n"
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT, chunking=False) as smtp:
        refused = await smtp.sendmail(
            SENDER, exim.recipients[:1], body.encode(), mail_options=["BODY=8BITMIME"]
        )
        assert refused == {}
    assert stored(exim, 1) == [body.encode()]


async def test_dsn_options_and_a_success_notice(exim: MailServer) -> None:
    sender, recipient = exim.recipients[1], exim.recipients[0]
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        refused = await smtp.sendmail(
            sender,
            [recipient],
            b"Subject: dsn\r\n\r\nnotify me\r\n",
            mail_options=["RET=HDRS", "ENVID=interop-exim-1"],
            rcpt_options=["NOTIFY=SUCCESS", f"ORCPT=rfc822;{recipient}"],
        )
        assert refused == {}
    # The message, then Exim's success notice (RFC 3464) back to the sender.
    message, notice = stored(exim, 2)
    assert message == b"Subject: dsn\r\n\r\nnotify me\r\n"
    assert b"multipart/report" in notice
    assert b"Original-Envelope-ID: interop-exim-1" in notice
    assert f"Original-Recipient: rfc822;{recipient}".encode() in notice


async def test_size_limit_refuses_the_sender(exim: MailServer) -> None:
    assert exim.size_limit is not None
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * (exim.size_limit // 1000 + 1)
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        with pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
            await smtp.sendmail(SENDER, exim.recipients[:1], big)
        assert caught.value.smtp_code == 552
        # The session survives the refusal.
        assert await smtp.sendmail(SENDER, exim.recipients[:1], b"Subject: small\r\n\r\n") == {}
    assert stored(exim, 1) == [b"Subject: small\r\n\r\n"]


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
async def test_one_refused_recipient_among_two(
    exim: MailServer, tmp_path: Path, chunking: bool
) -> None:
    assert exim.refused_recipient is not None
    recipients = [exim.recipients[0], exim.refused_recipient]
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT, chunking=chunking) as smtp:
        refused = await smtp.sendmail(SENDER, recipients, b"Subject: two\r\n\r\nhello\r\n")
        assert set(refused) == {exim.refused_recipient}
        code, text = refused[exim.refused_recipient]
        assert code == 550
        assert text.startswith(b"5.1.1")
    assert stored(exim, 1) == [b"Subject: two\r\n\r\nhello\r\n"]
    [raw] = raw_deliveries(tmp_path)
    assert envelope_to(raw) == [exim.recipients[0]]


async def test_every_recipient_refused(exim: MailServer) -> None:
    assert exim.refused_recipient is not None
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        with pytest.raises(aiosmtp.SMTPRecipientsRefused) as caught:
            await smtp.sendmail(SENDER, [exim.refused_recipient], b"Subject: none\r\n\r\n")
        assert set(caught.value.recipients) == {exim.refused_recipient}
        # RSET followed the failure; the next transaction works.
        assert await smtp.sendmail(SENDER, exim.recipients[:1], b"Subject: next\r\n\r\n") == {}
    assert stored(exim, 1) == [b"Subject: next\r\n\r\n"]


async def test_many_messages_on_one_connection(exim: MailServer) -> None:
    """Past Exim's default of queueing after ten per connection, all are delivered."""
    async with aiosmtp.SMTP(exim.host, exim.port, timeout=TIMEOUT) as smtp:
        for n in range(12):
            body = f"Subject: {n}\r\n\r\nnumber {n}\r\n".encode()
            assert await smtp.sendmail(SENDER, list(exim.recipients), body) == {}
    assert stored(exim, 12) == [f"Subject: {n}\r\n\r\nnumber {n}\r\n".encode() for n in range(12)]
