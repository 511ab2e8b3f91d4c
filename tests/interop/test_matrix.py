"""The interop matrix: one scenario list, run against every real server of the
registry (conftest.SERVERS) on both anyio backends.

A scenario that needs a feature the server does not offer is skipped with a reason
naming both, unless the right behaviour without it is itself worth checking (no
SMTPUTF8: ``SMTPNotSupportedError``; no CHUNKING: DATA). Every message sent is
looked up afterwards in what the server stored (maildir, dump file, handler) by
its Message-ID and compared byte for byte with the bytes the client put on the
wire, once the trace headers the server prepended are removed.
"""

from __future__ import annotations

import io
import logging
import random
import ssl
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Literal, cast

import anyio
import pytest
import trustme

import aiosmtp

from ._base import MailServer
from ._common import ObservedServer
from ._registry import SERVERS, unavailable_servers

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

#: The client timeout: these servers are real and well behaved, so it is never hit
#: unless something is wrong.
TIMEOUT = 10.0
#: How long a delivered message may take to appear in the store (Postfix queues).
STORE_TIMEOUT = 10.0
CLIENT_NAME = "client.example"
SENDER = "sender@outside.test"
DATE = "Mon, 23 Nov 2026 10:00:00 +0000"

# -- helpers --------------------------------------------------------------------------


def require(server: MailServer, feature: str, what: str | None = None) -> None:
    if feature not in server.features:
        pytest.skip(f"{server.name} does not offer {what or feature}")


def client(
    server: MailServer, *, context: ssl.SSLContext | None = None, chunking: bool = True
) -> aiosmtp.SMTP:
    """An unconnected client of the right kind for ``server``."""
    if "lmtp" in server.features:
        lmtp = aiosmtp.LMTP(
            server.unix_path or server.host,
            server.port,
            local_hostname=CLIENT_NAME,
            timeout=TIMEOUT,
            context=context,
        )
        lmtp.chunking = chunking
        if server.unix_path:
            lmtp.server_hostname = server.tls_hostname
        return lmtp
    return aiosmtp.SMTP(
        server.host,
        server.port,
        local_hostname=CLIENT_NAME,
        timeout=TIMEOUT,
        context=context,
        chunking=chunking,
    )


def implicit_tls_client(server: MailServer, context: ssl.SSLContext) -> aiosmtp.SMTP_SSL:
    require(server, "implicit_tls", "implicit TLS")
    assert server.implicit_tls_port is not None
    return aiosmtp.SMTP_SSL(
        server.host,
        server.implicit_tls_port,
        local_hostname=CLIENT_NAME,
        timeout=TIMEOUT,
        context=context,
    )


async def hello(smtp: aiosmtp.SMTP) -> aiosmtp.Reply:
    reply = await smtp.ehlo()
    assert reply.code == 250, reply
    return reply


def message_id() -> str:
    return f"<{uuid.uuid4().hex}@client.example>"


def make_message(
    server: MailServer,
    subject: str,
    *,
    recipients: Sequence[str] | None = None,
    sender: str = SENDER,
    body: str = "Hello from the interop matrix.\n",
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients if recipients is not None else server.recipients[:1])
    msg["Subject"] = subject
    msg["Date"] = DATE
    msg["Message-ID"] = message_id()
    msg.set_content(body)
    return msg


def fix_boundaries(msg: EmailMessage) -> None:
    """Give every multipart a boundary now, so flattening twice gives the same bytes."""
    for number, part in enumerate(msg.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_interop_boundary_{number}_=")


def wire_bytes(msg: EmailMessage, *, utf8: bool = False) -> bytes:
    """The bytes a client sends for ``msg``, as smtplib's send_message makes them."""
    out = io.BytesIO()
    policy = cast(EmailPolicy, msg.policy).clone(utf8=True) if utf8 else None
    BytesGenerator(out, policy=policy).flatten(msg, linesep="\r\n")
    data = out.getvalue()
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def raw_message(mid: str, subject: str, body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"From: " + SENDER.encode() + b"\r\nTo: undisclosed-recipients:;\r\n"
        b"Subject: " + subject.encode() + b"\r\nDate: " + DATE.encode() + b"\r\n"
        b"Message-ID: " + mid.encode() + b"\r\n" + extra + b"\r\n" + body
    )


def expected_copies(server: MailServer, accepted: int) -> tuple[int, int]:
    """How many stored copies a message to ``accepted`` recipients leaves: one per
    recipient in maildirs, one per message in dumps; between the two for a server
    that does not say (a plain ``MailServer``)."""
    if not isinstance(server, ObservedServer):
        return 1, accepted
    count = accepted if server.copy_per_recipient else 1
    return count, count


async def stored_copies(server: MailServer, mid: str, count: int) -> list[bytes]:
    """The stored messages holding Message-ID ``mid``, once there are ``count``."""
    assert server.stored_messages is not None
    needle = f"Message-ID: {mid}".encode()
    with anyio.move_on_after(STORE_TIMEOUT):
        while True:
            found = [msg for msg in server.stored_messages(0, 0) if needle in msg]
            if len(found) >= count:
                break
            await anyio.sleep(0.02)
    return found


async def assert_stored(
    server: MailServer, mid: str, expected: bytes, *, accepted: int = 1
) -> None:
    """What the server stored for ``mid`` is ``expected``, byte for byte, once per
    accepted recipient (maildirs) or once (dumps)."""
    if "stores" not in server.features:
        return
    least, most = expected_copies(server, accepted)
    copies = await stored_copies(server, mid, least)
    assert least <= len(copies) <= most, f"{server.name}: {len(copies)} stored copies"
    for copy in copies:
        assert copy == expected


@contextmanager
def protocol_log() -> Iterator[list[str]]:
    """The client's protocol trace (logger ``aiosmtp.protocol``), ">> CMD" for a
    command sent and "<< 250 ..." for a reply, in the order they happened."""
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


async def secure(smtp: aiosmtp.SMTP, server: MailServer, context: ssl.SSLContext) -> None:
    """STARTTLS when the server offers it (a submission server offers AUTH only then)."""
    await hello(smtp)
    if smtp.has_extn("starttls"):
        await smtp.starttls(context=context)
        await hello(smtp)


@pytest.fixture(scope="session")
def other_ca_context() -> ssl.SSLContext:
    """A verifying context that trusts a CA the servers' certificates do not come from."""
    context = ssl.create_default_context()
    trustme.CA().configure_trust(context)
    return context


# -- connect, EHLO/HELO, QUIT ------------------------------------------------------------


def test_every_server_can_run() -> None:
    """The servers left out of the matrix on this machine, and why (one line)."""
    missing = unavailable_servers()
    assert set(missing) <= set(SERVERS)
    if missing:
        reasons = sorted(set(missing.values()))
        pytest.skip(f"{'; '.join(reasons)} (not run: {', '.join(missing)})")


async def test_connect_greeting_and_quit(mail_server: MailServer) -> None:
    smtp = client(mail_server)
    greeting = await smtp.connect(mail_server.unix_path or mail_server.host, mail_server.port)
    assert greeting.code == 220, greeting
    reply = await smtp.quit()
    assert reply.code == 221, reply
    assert smtp.is_closed
    with pytest.raises(aiosmtp.SMTPServerDisconnected):
        await smtp.noop()


EXTENSIONS = {
    "starttls": "starttls",
    "smtputf8": "smtputf8",
    "8bitmime": "8bitmime",
    "size": "size",
    "dsn": "dsn",
    "pipelining": "pipelining",
    "chunking": "chunking",
}
MECHANISMS = {"auth_plain": "PLAIN", "auth_login": "LOGIN", "auth_cram_md5": "CRAM-MD5"}


async def test_ehlo_offers_what_the_matrix_says(
    mail_server: MailServer, client_context: ssl.SSLContext
) -> None:
    """The ``features`` of each server are measured: EHLO/LHLO agrees with them."""
    async with client(mail_server) as smtp:
        reply = await hello(smtp)
        assert smtp.does_esmtp
        assert reply.message.split(b"\n")[0]
        for feature, keyword in EXTENSIONS.items():
            assert smtp.has_extn(keyword) == (feature in mail_server.features), keyword
        if "size" in mail_server.features:
            assert smtp.esmtp_features["size"] == str(mail_server.size_limit)
        if "starttls" in mail_server.features:
            await smtp.starttls(context=client_context)
            await hello(smtp)
        offered = set(smtp.esmtp_features.get("auth", "").upper().split())
        wanted = {MECHANISMS[name] for name in MECHANISMS if name in mail_server.features}
        assert offered & set(MECHANISMS.values()) == wanted


async def test_helo_then_send(mail_server: MailServer) -> None:
    """HELO (RFC 821 style): no ESMTP, plain DATA, and still delivered."""
    if "lmtp" in mail_server.features:
        pytest.skip(f"{mail_server.name} speaks LMTP, which has no HELO")
    async with client(mail_server) as smtp:
        reply = await smtp.helo()
        assert reply.code == 250, reply
        assert not smtp.does_esmtp
        mid = message_id()
        data = raw_message(mid, "helo", b"Sent after HELO.\r\n")
        with protocol_log() as log:
            refused = await smtp.sendmail(SENDER, [mail_server.recipients[0]], data)
        assert refused == {}
        assert not any(line.startswith((">> BDAT", ">> EHLO")) for line in log), log
        assert f">> MAIL FROM:<{SENDER}>" in log
    await assert_stored(mail_server, mid, data)


# -- TLS ---------------------------------------------------------------------------------


async def test_starttls(mail_server: MailServer, client_context: ssl.SSLContext) -> None:
    require(mail_server, "starttls", "STARTTLS")
    async with client(mail_server) as smtp:
        await hello(smtp)
        reply = await smtp.starttls(context=client_context)
        assert reply.code == 220, reply
        assert smtp.is_tls
        assert not smtp.esmtp_features  # RFC 3207: forgotten, asked again
        await hello(smtp)
        assert not smtp.has_extn("starttls")
        msg = make_message(mail_server, "over STARTTLS")
        assert await smtp.send_message(msg) == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg))


@pytest.mark.parametrize("failure", ["wrong CA", "wrong host name"])
async def test_starttls_certificate_refused(
    mail_server: MailServer,
    client_context: ssl.SSLContext,
    other_ca_context: ssl.SSLContext,
    failure: str,
) -> None:
    require(mail_server, "starttls", "STARTTLS")
    smtp = client(mail_server)
    async with smtp:
        await hello(smtp)
        if failure == "wrong CA":
            context, name = other_ca_context, None
        else:
            context, name = client_context, "wrong.example"
        with pytest.raises(aiosmtp.SMTPCertificateError):
            await smtp.starttls(context=context, server_hostname=name)
        assert smtp.is_closed
    with pytest.raises(aiosmtp.SMTPServerDisconnected):
        await smtp.noop()


async def test_implicit_tls(mail_server: MailServer, client_context: ssl.SSLContext) -> None:
    """SMTP_SSL, with AUTH where offered (at once: no STARTTLS to wait for)."""
    credentials: dict[str, str] = {}
    async with implicit_tls_client(mail_server, client_context) as smtp:
        assert smtp.is_tls
        await hello(smtp)
        assert not smtp.has_extn("starttls")
        if smtp.has_extn("auth"):
            user, password = next(iter(mail_server.users.items()))
            assert (await smtp.login(user, password)).code == 235
            credentials.update(username=user, password=password)
        msg = make_message(mail_server, "over implicit TLS")
        assert await smtp.send_message(msg) == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg))
    # The same through the one-shot API, whose "implicit" policy is not tied to 465.
    again = make_message(mail_server, "over implicit TLS, one shot")
    assert mail_server.implicit_tls_port is not None
    result = await aiosmtp.send(
        again,
        mail_server.host,
        mail_server.implicit_tls_port,
        tls="implicit",
        context=client_context,
        timeout=TIMEOUT,
        local_hostname=CLIENT_NAME,
        **credentials,
    )
    assert result == {}
    await assert_stored(mail_server, again["Message-ID"], wire_bytes(again))


@pytest.mark.parametrize("failure", ["wrong CA", "wrong host name"])
async def test_implicit_tls_certificate_refused(
    mail_server: MailServer,
    client_context: ssl.SSLContext,
    other_ca_context: ssl.SSLContext,
    failure: str,
) -> None:
    if failure == "wrong CA":
        smtp = implicit_tls_client(mail_server, other_ca_context)
    else:
        smtp = implicit_tls_client(mail_server, client_context)
        smtp.server_hostname = "wrong.example"
    with pytest.raises(aiosmtp.SMTPCertificateError):
        await smtp.connect(mail_server.host, mail_server.implicit_tls_port or 0)
    assert smtp.is_closed


# -- AUTH --------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [True, False], ids=["right password", "wrong password"])
@pytest.mark.parametrize("feature", list(MECHANISMS))
async def test_auth(
    mail_server: MailServer, client_context: ssl.SSLContext, feature: str, good: bool
) -> None:
    mechanism = MECHANISMS[feature]
    require(mail_server, feature, f"AUTH {mechanism}")
    user, password = next(iter(mail_server.users.items()))
    async with client(mail_server) as smtp:
        await secure(smtp, mail_server, client_context)
        smtp.user, smtp.password = user, password if good else password + "-wrong"
        authobject = {
            "PLAIN": smtp.auth_plain,
            "LOGIN": smtp.auth_login,
            "CRAM-MD5": smtp.auth_cram_md5,
        }[mechanism]
        if not good:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.auth(mechanism, authobject)
            assert caught.value.smtp_code == 535
            # A failed AUTH keeps the session: the right password works next.
            smtp.password = password
        reply = await smtp.auth(mechanism, authobject)
        assert reply.code == 235, reply
        msg = make_message(mail_server, f"after AUTH {mechanism}")
        assert await smtp.send_message(msg) == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg))


async def test_login_with_a_non_ascii_user(
    mail_server: MailServer, client_context: ssl.SSLContext
) -> None:
    """login() picks the strongest mechanism offered; names and passwords go as UTF-8."""
    if not any(name in mail_server.features for name in MECHANISMS):
        pytest.skip(f"{mail_server.name} does not offer AUTH")
    users = [name for name in mail_server.users if not name.isascii()]
    if not users:
        pytest.skip(f"{mail_server.name} has no non-ASCII user")
    async with client(mail_server) as smtp:
        await secure(smtp, mail_server, client_context)
        with protocol_log() as log:
            reply = await smtp.login(users[0], mail_server.users[users[0]])
        assert reply.code == 235, reply
        strongest = next(
            MECHANISMS[name]
            for name in ("auth_cram_md5", "auth_plain", "auth_login")
            if name in mail_server.features
        )
        assert log[0].startswith(f">> AUTH {strongest}"), log


# -- messages ----------------------------------------------------------------------------


def message_with_attachments(server: MailServer) -> EmailMessage:
    msg = make_message(
        server,
        "attachments",
        recipients=server.recipients[:2],
        body="A text part.\n.A line that starts with a dot.\n..and two.\n.\nThe end.\n",
    )
    msg.add_alternative("<p>An <b>HTML</b> part.</p>\n", subtype="html")
    generator = random.Random(5)
    msg.add_attachment(
        generator.randbytes(40_000),
        maintype="application",
        subtype="octet-stream",
        filename="noise.bin",
    )
    msg.add_attachment("col1,col2\n1,2\n.\n3,4\n" * 50, subtype="csv", filename="table.csv")
    fix_boundaries(msg)
    return msg


async def test_send_message_with_attachments(mail_server: MailServer) -> None:
    msg = message_with_attachments(mail_server)
    async with client(mail_server) as smtp:
        result = await smtp.send_message(msg)
        assert result == {}
        assert result.reply.code == 250, result.reply
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg), accepted=2)


async def test_smtputf8(mail_server: MailServer) -> None:
    """Non-ASCII addresses: SMTPUTF8 where offered, SMTPNotSupportedError where not."""
    msg = make_message(mail_server, "Grüße aus Köln ☃", sender="Jörg <jörg@exämple.test>")
    async with client(mail_server) as smtp:
        await hello(smtp)
        if "smtputf8" not in mail_server.features:
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await smtp.send_message(msg)
            assert (await smtp.noop()).code == 250  # nothing was sent
            return
        with protocol_log() as log:
            assert await smtp.send_message(msg) == {}
        mail = next(line for line in log if line.startswith(">> MAIL"))
        assert "SMTPUTF8" in mail.split()
        assert "BODY=8BITMIME" in mail.split()
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg, utf8=True))
    envelopes = getattr(mail_server, "envelopes", None)
    if envelopes is not None:
        assert any(env.sender == "jörg@exämple.test" for env in envelopes())


async def test_smtputf8_recipient(mail_server: MailServer) -> None:
    """A mailbox whose local part is not ASCII, delivered under SMTPUTF8."""
    recipient = getattr(mail_server, "utf8_recipient", None)
    if recipient is None:
        pytest.skip(f"{mail_server.name} has no non-ASCII mailbox")
    msg = make_message(mail_server, "für Jörg", recipients=[recipient])
    async with client(mail_server) as smtp:
        assert await smtp.send_message(msg) == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg, utf8=True))
    envelopes = getattr(mail_server, "envelopes", None)
    if envelopes is not None:
        assert any(recipient in env.recipients for env in envelopes())


async def test_8bitmime(mail_server: MailServer) -> None:
    require(mail_server, "8bitmime", "8BITMIME")
    mid = message_id()
    body = "Ein Text in UTF-8: äöü ß € ✓\r\n".encode() * 3
    data = raw_message(
        mid,
        "8bit body",
        body,
        extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n",
    )
    async with client(mail_server) as smtp:
        assert (
            await smtp.sendmail(SENDER, mail_server.recipients[0], data, ["BODY=8BITMIME"]) == {}
        )
    await assert_stored(mail_server, mid, data)


async def test_size_refusal(mail_server: MailServer) -> None:
    require(mail_server, "size", "a SIZE limit")
    assert mail_server.size_limit is not None
    mid = message_id()
    big = raw_message(mid, "too big", b"x" * 998 + b"\r\n")
    big += (b"y" * 998 + b"\r\n") * (mail_server.size_limit // 1000 + 1)
    async with client(mail_server) as smtp:
        with protocol_log() as log, pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
            await smtp.sendmail(SENDER, mail_server.recipients[0], big)
        assert caught.value.smtp_code == 552
        assert caught.value.enhanced_status == "5.3.4"
        # The server advertised its limit (SIZE n), so the client refused the
        # message before MAIL: not one command for it, no RSET needed.
        assert any(line.startswith((">> EHLO", ">> LHLO")) for line in log), log
        assert not any(line.startswith((">> MAIL", ">> RSET")) for line in log), log
        small = make_message(mail_server, "small enough")
        assert await smtp.send_message(small) == {}
    await assert_stored(mail_server, small["Message-ID"], wire_bytes(small))
    assert await stored_copies(mail_server, mid, 0) == []


@pytest.mark.parametrize(
    ("mail_options", "rcpt_options"),
    [
        (["RET=HDRS"], ["NOTIFY=SUCCESS,FAILURE"]),
        (["RET=FULL", "ENVID=QQ314159"], ["NOTIFY=NEVER", "ORCPT=rfc822;alice@example.test"]),
    ],
    ids=["RET=HDRS NOTIFY=SUCCESS,FAILURE", "RET=FULL ENVID NOTIFY=NEVER ORCPT"],
)
async def test_dsn_options(
    mail_server: MailServer, mail_options: list[str], rcpt_options: list[str]
) -> None:
    require(mail_server, "dsn", "DSN")
    mid = message_id()
    data = raw_message(mid, "dsn", b"With DSN options.\r\n")
    async with client(mail_server) as smtp:
        refused = await smtp.sendmail(
            SENDER, mail_server.recipients[0], data, mail_options, rcpt_options
        )
        assert refused == {}
    await assert_stored(mail_server, mid, data)
    envelopes = getattr(mail_server, "envelopes", None)
    if envelopes is not None:
        envelope = next(env for env in reversed(envelopes()) if env.sender == SENDER)
        assert set(mail_options) <= set(envelope.mail_options)
        assert set(rcpt_options) <= set(envelope.rcpt_options)


async def test_dsn_success_notice(mail_server: MailServer) -> None:
    """NOTIFY=SUCCESS with RET=HDRS and ENVID really asks for a notice: the server's
    report (RFC 3464) comes back to the sender with the envelope id and only the
    headers of the message."""
    require(mail_server, "dsn", "DSN")
    sender = getattr(mail_server, "notices_to", None)
    if sender is None:
        pytest.skip(f"{mail_server.name} sends no delivery notices that the tests can read")
    mid = message_id()
    envid = uuid.uuid4().hex
    data = raw_message(mid, "notify me", b"The body, which RET=HDRS leaves out.\r\n")
    async with client(mail_server) as smtp:
        refused = await smtp.sendmail(
            sender,
            mail_server.recipients[0],
            data,
            ["RET=HDRS", f"ENVID={envid}"],
            ["NOTIFY=SUCCESS"],
        )
        assert refused == {}
    copies = await stored_copies(mail_server, mid, 2)
    assert len(copies) == 2, copies
    notices = [copy for copy in copies if b"report-type=delivery-status" in copy]
    assert len(notices) == 1, copies
    notice = notices[0]
    assert f"Original-Envelope-Id: {envid}".encode() in notice
    assert f"Final-Recipient: rfc822; {mail_server.recipients[0]}".encode() in notice
    assert b"Action: delivered" in notice
    assert b"Content-Type: text/rfc822-headers" in notice
    assert b"Subject: notify me" in notice
    assert b"RET=HDRS leaves out" not in notice
    assert [copy for copy in copies if copy is not notice] == [data]


async def test_pipelining(mail_server: MailServer) -> None:
    """Under PIPELINING the envelope leaves as one group (RFC 2920): every command
    before the first reply; without it, one reply per command."""
    recipients = mail_server.recipients[:2]
    msg = make_message(mail_server, "pipelined", recipients=recipients)
    async with client(mail_server) as smtp:
        await hello(smtp)
        with protocol_log() as log:
            assert await smtp.send_message(msg) == {}
    commands_before_reply = next(i for i, line in enumerate(log) if line.startswith("<<"))
    if "pipelining" in mail_server.features:
        assert commands_before_reply == 2 + len(recipients), log
    else:
        assert commands_before_reply == 1, log
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg), accepted=2)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("chunking", [True, False], ids=["chunking on", "chunking off"])
async def test_chunking(mail_server: MailServer, chunking: bool, size: str) -> None:
    """BDAT when the server offers CHUNKING (and the client has not turned it off),
    DATA otherwise; the same bytes stored either way."""
    mid = message_id()
    lines = 20 if size == "small" else 60_000  # 1.4 MB: three BDAT chunks
    body = b"".join(b"line %06d .\r\n.dotted\r\n" % n for n in range(lines))
    data = raw_message(mid, f"chunking {chunking} {size}", body)
    if mail_server.size_limit is not None and len(data) > mail_server.size_limit:
        pytest.skip(f"{mail_server.name}'s SIZE limit is below the large message")
    async with client(mail_server, chunking=chunking) as smtp:
        with protocol_log() as log:
            assert await smtp.sendmail(SENDER, mail_server.recipients[0], data) == {}
    bdat = [line for line in log if line.startswith(">> BDAT")]
    if chunking and "chunking" in mail_server.features:
        assert ">> DATA" not in log
        assert bdat
        assert bdat[-1].endswith(" LAST")
        if size == "large":
            assert len(bdat) > 1
    else:
        assert not bdat
        assert ">> DATA" in log
    await assert_stored(mail_server, mid, data)


# -- recipients, RSET, VRFY --------------------------------------------------------------


async def test_one_recipient_refused(mail_server: MailServer) -> None:
    if mail_server.refused_recipient is None:
        pytest.skip(f"{mail_server.name} accepts every recipient")
    refused_address = mail_server.refused_recipient
    msg = make_message(
        mail_server, "one refused", recipients=[*mail_server.recipients[:2], refused_address]
    )
    async with client(mail_server) as smtp:
        refused = await smtp.send_message(msg)
    assert list(refused) == [refused_address]
    code, text = refused[refused_address]
    assert code == 550, text
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg), accepted=2)


async def test_every_recipient_refused(mail_server: MailServer) -> None:
    if mail_server.refused_recipient is None:
        pytest.skip(f"{mail_server.name} accepts every recipient")
    mid = message_id()
    data = raw_message(mid, "nobody", b"For nobody.\r\n")
    async with client(mail_server) as smtp:
        with pytest.raises(aiosmtp.SMTPRecipientsRefused) as caught:
            await smtp.sendmail(SENDER, [mail_server.refused_recipient], data)
        assert list(caught.value.recipients) == [mail_server.refused_recipient]
        # The transaction was reset: the next one works on the same connection.
        msg = make_message(mail_server, "after a refusal")
        assert await smtp.send_message(msg) == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg))


@pytest.mark.parametrize("chunking", [True, False], ids=["chunking on", "chunking off"])
async def test_lmtp_recipient_refused_after_the_data(
    mail_server: MailServer, chunking: bool
) -> None:
    """LMTP answers once per recipient after the data: one mailbox over quota
    refuses while the other takes the message (RFC 2033 section 4.2)."""
    if mail_server.refused_after_data is None:
        pytest.skip(f"{mail_server.name} refuses nobody after the data")
    over_quota = mail_server.refused_after_data
    body = "A message larger than the full mailbox's quota.\n" * 60
    msg = make_message(
        mail_server, "per recipient", recipients=[mail_server.recipients[0], over_quota], body=body
    )
    async with client(mail_server, chunking=chunking) as smtp:
        refused = await smtp.send_message(msg)
        assert list(refused) == [over_quota]
        assert refused[over_quota][0] == 552, refused
        assert refused.reply.code == 552
        # Only the full mailbox: every recipient refused, the session still usable.
        alone = make_message(mail_server, "only over quota", recipients=[over_quota], body=body)
        with pytest.raises(aiosmtp.SMTPRecipientsRefused) as caught:
            await smtp.send_message(alone)
        assert list(caught.value.recipients) == [over_quota]
        assert (await smtp.noop()).code == 250
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg), accepted=1)
    assert await stored_copies(mail_server, alone["Message-ID"], 0) == []


async def test_rset(mail_server: MailServer) -> None:
    mid = message_id()
    async with client(mail_server) as smtp:
        await hello(smtp)
        assert (await smtp.mail(SENDER)).code == 250
        assert (await smtp.rcpt(mail_server.recipients[0])).code in (250, 251)
        reply = await smtp.rset()
        assert reply.code == 250, reply
        # A new transaction after the reset, with a different envelope.
        data = raw_message(mid, "after RSET", b"After RSET.\r\n")
        assert await smtp.sendmail(SENDER, mail_server.recipients[1], data) == {}
    await assert_stored(mail_server, mid, data)


async def test_vrfy(mail_server: MailServer) -> None:
    async with client(mail_server) as smtp:
        await hello(smtp)
        reply = await smtp.verify(mail_server.recipients[0])
        if "vrfy" in mail_server.features:
            assert reply.code in (250, 251, 252), reply
        else:
            assert reply.code >= 500, reply
        # Either way the session goes on.
        assert (await smtp.noop()).code == 250


async def test_quit_reply(mail_server: MailServer) -> None:
    smtp = client(mail_server)
    async with smtp:
        await hello(smtp)
        reply = await smtp.quit()
        assert reply.code == 221, reply
        assert smtp.is_closed
    # Leaving the block after QUIT sends nothing more and raises nothing.
    assert smtp.is_closed


# -- line endings: what SMTP smuggling relies on never reaches a real server --------------


def normalised(data: bytes) -> bytes:
    """``data`` with every bare CR and bare LF made a CRLF, as the client sends it."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    "end",
    [b"\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"],
    ids=repr,
)
@pytest.mark.parametrize("chunking", [True, False], ids=["chunking on", "chunking off"])
async def test_smuggled_end_of_data_stays_in_the_message(
    mail_server: MailServer, end: bytes, chunking: bool
) -> None:
    """A payload holding one of the published fake end-of-data sequences followed by
    a second transaction: the server stores one message, with the would-be second
    one as text inside it, line endings normalised, and no second message."""
    mid, smuggled_mid = message_id(), message_id()
    smuggled = (
        b"MAIL FROM:<evil@outside.test>\r\nRCPT TO:<"
        + mail_server.recipients[-1].encode()
        + b">\r\nDATA\r\n"
        + raw_message(smuggled_mid, "smuggled", b"Smuggled.\r\n")
        + b".\r\n"
    )
    data = raw_message(mid, "carrier", b"Before the fake end." + end + smuggled)
    async with client(mail_server, chunking=chunking) as smtp:
        assert await smtp.sendmail(SENDER, mail_server.recipients[0], data) == {}
        assert (await smtp.noop()).code == 250  # in step: no reply left over
    await assert_stored(mail_server, mid, normalised(data))
    if "stores" in mail_server.features:
        assert mail_server.stored_messages is not None
        assert not any(
            f"Message-ID: {smuggled_mid}".encode() in stored.split(b"\r\n\r\n", 1)[0]
            for stored in mail_server.stored_messages(0, 0)
        )


# -- the high-level API ----------------------------------------------------------------


async def test_one_shot_send(mail_server: MailServer, client_context: ssl.SSLContext) -> None:
    """aiosmtp.send(): one message, one connection, STARTTLS and AUTH where offered."""
    msg = message_with_attachments(mail_server)
    options: dict[str, str] = {}
    if any(name in mail_server.features for name in MECHANISMS):
        user, password = next(iter(mail_server.users.items()))
        options.update(username=user, password=password)
    tls: Literal["starttls", "none"] = "starttls" if "starttls" in mail_server.features else "none"
    result = await aiosmtp.send(
        msg,
        mail_server.unix_path or mail_server.host,
        mail_server.port,
        tls=tls,
        context=client_context,
        server_hostname=mail_server.tls_hostname,
        timeout=TIMEOUT,
        local_hostname=CLIENT_NAME,
        lmtp="lmtp" in mail_server.features,
        **options,
    )
    assert result == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg), accepted=2)


async def test_pool_smtputf8(mail_server: MailServer, client_context: ssl.SSLContext) -> None:
    """The pool, like SMTP, sends a non-ASCII address only where SMTPUTF8 is offered."""
    msg = make_message(mail_server, "Grüße über den Pool", sender="jörg@exämple.test")
    tls: Literal["starttls", "none"] = "starttls" if "starttls" in mail_server.features else "none"
    async with aiosmtp.SMTPPool(
        mail_server.unix_path or mail_server.host,
        mail_server.port,
        tls=tls,
        context=client_context,
        server_hostname=mail_server.tls_hostname,
        timeout=TIMEOUT,
        local_hostname=CLIENT_NAME,
        lmtp="lmtp" in mail_server.features,
    ) as pool:
        if "smtputf8" not in mail_server.features:
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await pool.send_message(msg)
            assert await stored_copies(mail_server, msg["Message-ID"], 0) == []
            return
        assert await pool.send_message(msg) == {}
    await assert_stored(mail_server, msg["Message-ID"], wire_bytes(msg, utf8=True))


# -- volume ------------------------------------------------------------------------------


async def test_volume_through_a_pool(
    mail_server: MailServer, client_context: ssl.SSLContext
) -> None:
    """Many messages through SMTPPool's connections: every one stored, none twice
    (a few hundred against smtp-sink, a few dozen elsewhere)."""
    count = 300 if mail_server.name == "smtp-sink" else 30
    tls: Literal["starttls", "none"] = "starttls" if "starttls" in mail_server.features else "none"
    credentials: dict[str, str] = {}
    if any(name in mail_server.features for name in MECHANISMS):
        user, password = next(iter(mail_server.users.items()))
        credentials.update(username=user, password=password)
    host = mail_server.unix_path or mail_server.host
    run = uuid.uuid4().hex
    ids = [f"<{run}.{n}@client.example>" for n in range(count)]
    async with (
        aiosmtp.SMTPPool(
            host,
            mail_server.port,
            max_connections=4,
            max_messages_per_connection=50,
            tls=tls,
            context=client_context,
            server_hostname=mail_server.tls_hostname,
            timeout=TIMEOUT,
            local_hostname=CLIENT_NAME,
            lmtp="lmtp" in mail_server.features,
        ) as pool,
        anyio.create_task_group() as group,
    ):
        for mid in ids:
            data = raw_message(mid, "volume", b"One of many.\r\n")
            group.start_soon(pool.sendmail, SENDER, [mail_server.recipients[0]], data)
    if "stores" not in mail_server.features:
        return
    assert mail_server.stored_messages is not None
    needle = f"<{run}.".encode()
    with anyio.move_on_after(STORE_TIMEOUT):
        while True:
            stored = [m for m in mail_server.stored_messages(0, 0) if needle in m]
            if len(stored) >= count:
                break
            await anyio.sleep(0.05)
    found = sorted(m.split(needle, 1)[1].split(b"@", 1)[0] for m in stored)
    assert found == sorted(str(n).encode() for n in range(count))
