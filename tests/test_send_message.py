"""send_message and sendmail against aiosmtpd, side by side with smtplib.

Each test runs the same calls through smtplib (in a thread) and through aiosmtp,
each against its own aiosmtpd configured alike, and ``parity`` asserts equal return
values (a Reply equals smtplib's tuple, a SendResult smtplib's dict), exceptions of
the same name (aiosmtp's subclassing smtplib's, with equal attributes) and equal
stored envelopes and bytes. Each test then also checks the expected outcome
itself, so that both clients being wrong the same way would still fail.
"""

from __future__ import annotations

import copy
import email
import email.generator
import email.policy
import io
from email.message import EmailMessage

import anyio
import pytest

import aiosmtp

from .servers import (
    EventRecordingHandler,
    Outcome,
    Received,
    RunningServer,
    aiosmtpd_server,
    call,
    parity,
)

pytestmark = pytest.mark.anyio


def message(*headers: tuple[str, str], body: str = "Hello,\nthis is a test.\n") -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers:
        msg[name] = value
    msg.set_content(body)
    return msg


def flattened(msg: EmailMessage, *, utf8: bool = False) -> bytes:
    """The bytes smtplib's rules put on the wire: CRLF, no Bcc, no Resent-Bcc (for a
    message made with the default policy)."""
    outgoing = copy.copy(msg)
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]
    buffer = io.BytesIO()
    policy = email.policy.SMTPUTF8 if utf8 else msg.policy
    email.generator.BytesGenerator(buffer, policy=policy).flatten(outgoing, linesep="\r\n")
    return buffer.getvalue()


def only(outcome: Outcome) -> Received:
    assert len(outcome.messages) == 1, outcome.messages
    return outcome.messages[0]


async def test_to_cc_bcc_are_recipients_and_bcc_is_never_transmitted() -> None:
    msg = message(
        ("From", "Alice <alice@example.com>"),
        ("To", "Bob <bob@example.com>, carol@example.com"),
        ("Cc", "dave@example.com"),
        ("Bcc", "eve@example.com, Frank <frank@example.com>"),
        ("Subject", "recipients"),
    )
    before = msg.as_bytes()
    _, ours = await parity([call("send_message", msg)])
    assert msg.as_bytes() == before, "the caller's message was changed"
    assert msg["Bcc"] == "eve@example.com, Frank <frank@example.com>"
    assert ours.values == [{}]
    assert ours.values[0].reply == (250, b"2.0.0 Ok: queued as TEST")
    stored = only(ours)
    assert stored.mail_from == "alice@example.com"
    # smtplib's order: To, then Bcc, then Cc.
    assert stored.rcpt_tos == [
        "bob@example.com",
        "carol@example.com",
        "eve@example.com",
        "frank@example.com",
        "dave@example.com",
    ]
    assert b"eve@" not in stored.content
    assert b"frank@" not in stored.content
    assert b"\r\nBcc:" not in stored.content
    assert stored.content == flattened(msg)


async def test_sender_is_preferred_over_from() -> None:
    msg = message(
        ("From", "Alice <alice@example.com>"),
        ("Sender", "Secretary <secretary@example.com>"),
        ("To", "bob@example.com"),
    )
    _, ours = await parity([call("send_message", msg)])
    stored = only(ours)
    assert stored.mail_from == "secretary@example.com"
    assert stored.rcpt_tos == ["bob@example.com"]


async def test_from_with_a_display_name_gives_the_bare_address() -> None:
    msg = message(("From", '"Smith, Alice" <alice@example.com>'), ("To", "bob@example.com"))
    _, ours = await parity([call("send_message", msg)])
    assert only(ours).mail_from == "alice@example.com"


async def test_one_resent_block_gives_the_envelope() -> None:
    msg = message(
        ("From", "alice@example.com"),
        ("To", "bob@example.com"),
        ("Bcc", "hidden-original@example.com"),
        ("Resent-Date", "Mon, 01 Jan 2024 10:00:00 +0000"),
        ("Resent-From", "Forwarder <forwarder@example.com>"),
        ("Resent-To", "carol@example.com"),
        ("Resent-Cc", "dave@example.com"),
        ("Resent-Bcc", "eve@example.com"),
    )
    before = msg.as_bytes()
    _, ours = await parity([call("send_message", msg)])
    assert msg.as_bytes() == before
    stored = only(ours)
    assert stored.mail_from == "forwarder@example.com"
    assert stored.rcpt_tos == ["carol@example.com", "eve@example.com", "dave@example.com"]
    assert b"Resent-Bcc" not in stored.content
    assert b"eve@" not in stored.content
    assert b"hidden-original@" not in stored.content
    assert b"Resent-To: carol@example.com\r\n" in stored.content


async def test_resent_sender_is_preferred_over_resent_from() -> None:
    msg = message(
        ("From", "alice@example.com"),
        ("To", "bob@example.com"),
        ("Resent-Date", "Mon, 01 Jan 2024 10:00:00 +0000"),
        ("Resent-From", "forwarder@example.com"),
        ("Resent-Sender", "assistant@example.com"),
        ("Resent-To", "carol@example.com"),
    )
    _, ours = await parity([call("send_message", msg)])
    stored = only(ours)
    assert (stored.mail_from, stored.rcpt_tos) == ("assistant@example.com", ["carol@example.com"])


async def test_two_resent_blocks_raise_value_error() -> None:
    msg = message(
        ("From", "alice@example.com"),
        ("To", "bob@example.com"),
        ("Resent-Date", "Mon, 01 Jan 2024 10:00:00 +0000"),
        ("Resent-To", "carol@example.com"),
        ("Resent-Date", "Tue, 02 Jan 2024 10:00:00 +0000"),
        ("Resent-To", "dave@example.com"),
    )
    _, ours = await parity([call("send_message", msg), call("noop")])
    assert isinstance(ours.results[0], ValueError)
    assert ours.results[1] == (250, b"2.0.0 OK")
    assert ours.messages == []


async def test_explicit_from_addr_and_to_addrs_win_over_the_headers() -> None:
    msg = message(
        ("From", "alice@example.com"),
        ("To", "bob@example.com"),
        ("Bcc", "eve@example.com"),
    )
    _, ours = await parity(
        [
            call(
                "send_message",
                msg,
                from_addr="bounces@example.com",
                to_addrs=["x@example.com", "y@example.com"],
            ),
            call("send_message", msg, to_addrs="z@example.com"),
        ]
    )
    first, second = ours.messages
    assert (first.mail_from, first.rcpt_tos) == (
        "bounces@example.com",
        ["x@example.com", "y@example.com"],
    )
    assert (second.mail_from, second.rcpt_tos) == ("alice@example.com", ["z@example.com"])
    # Bcc is stripped even when it is not where the recipients came from.
    assert b"eve@" not in first.content
    assert first.content == second.content == flattened(msg)


async def test_multipart_with_attachment_is_stored_byte_for_byte() -> None:
    msg = message(
        ("From", "alice@example.com"),
        ("To", "bob@example.com"),
        ("Subject", "attachment"),
        # Lines that need dot-stuffing, and one that looks like the end of the data.
        body=".leading dot\n..two dots\n.\nlast line\n",
    )
    attachment = bytes(range(256)) * 40 + b"\r\n.\r\n\n.\n\r"
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream")
    msg.add_attachment(
        "text with\n.a dot line\nand no final newline",
        filename="notes.txt",
    )
    msg.set_boundary("==test-boundary==")
    before = msg.as_bytes()
    _, ours = await parity([call("send_message", msg)])
    assert msg.as_bytes() == before
    stored = only(ours)
    assert stored.content == flattened(msg)
    received = email.message_from_bytes(stored.content, policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    parts = list(received.iter_parts())
    assert len(parts) == 3
    text = parts[0].get_content()
    assert text.replace("\r\n", "\n") == ".leading dot\n..two dots\n.\nlast line\n"
    assert parts[1].get_content() == attachment
    assert parts[2].get_filename() == "notes.txt"


async def test_non_ascii_address_uses_smtputf8_and_8bitmime() -> None:
    msg = message(
        ("From", "jörg@exämple.org"),
        ("To", "bob@example.com, zoë@example.com"),
        ("Subject", "Grüße"),
        body="Schöne Grüße\n",
    )
    before = msg.as_bytes()
    _, ours = await parity([call("send_message", msg)], enable_SMTPUTF8=True)
    assert msg.as_bytes() == before
    stored = only(ours)
    assert stored.mail_from == "jörg@exämple.org"
    assert stored.rcpt_tos == ["bob@example.com", "zoë@example.com"]
    assert "SMTPUTF8" in stored.mail_options
    assert "BODY=8BITMIME" in stored.mail_options
    assert "From: jörg@exämple.org\r\n".encode() in stored.content
    assert stored.content == flattened(msg, utf8=True)


async def test_ascii_addresses_do_not_ask_for_smtputf8() -> None:
    msg = message(("From", "alice@example.com"), ("To", "bob@example.com"), body="Grüße\n")
    # Not a parity test: the 8-bit body is declared BODY=8BITMIME to a server that
    # offers it (issue 6), where smtplib sends it undeclared.
    with aiosmtpd_server(enable_SMTPUTF8=True) as server:
        async with aiosmtp.SMTP(server.host, server.port, timeout=5) as smtp:
            assert await smtp.send_message(msg) == {}
        (stored,) = server.messages
    options = [option.upper() for option in stored.mail_options]
    assert "SMTPUTF8" not in options
    assert [option for option in options if option.startswith("BODY=")] == ["BODY=8BITMIME"]


async def test_non_ascii_address_without_server_smtputf8_is_not_supported() -> None:
    msg = message(("From", "alice@example.com"), ("To", "zoë@example.com"))
    _, ours = await parity([call("send_message", msg), call("noop")], enable_SMTPUTF8=False)
    assert isinstance(ours.results[0], aiosmtp.SMTPNotSupportedError)
    assert ours.results[1] == (250, b"2.0.0 OK")
    assert ours.messages == []


async def test_str_message_with_non_ascii_is_rejected_like_smtplib() -> None:
    text = "From: alice@example.com\r\nSubject: café\r\n\r\nbody\r\n"
    fine = text.replace("é", "e")
    _, ours = await parity(
        [
            call("sendmail", "alice@example.com", ["bob@example.com"], text),
            call("sendmail", "alice@example.com", ["bob@example.com"], fine),
        ]
    )
    assert isinstance(ours.results[0], UnicodeEncodeError)
    assert ours.results[1] == {}
    assert only(ours).content == fine.encode()


async def test_str_message_with_ascii_is_sent_with_crlf() -> None:
    text = "Subject: plain\n\nline one\nline two\n"
    _, ours = await parity([call("sendmail", "alice@example.com", "bob@example.com", text)])
    assert only(ours).content == b"Subject: plain\r\n\r\nline one\r\nline two\r\n"


async def test_size_is_declared() -> None:
    data = b"Subject: size\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100
    _, ours = await parity([call("sendmail", "alice@example.com", ["bob@example.com"], data)])
    stored = only(ours)
    assert stored.content == data
    assert f"SIZE={len(data)}" in [option.upper() for option in stored.mail_options]


async def test_message_over_the_declared_limit_is_refused_at_mail() -> None:
    data = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 30
    small = b"Subject: small\r\n\r\nfits\r\n"
    # Not a parity test: smtplib sends MAIL and gets the server's 552; aiosmtp
    # refuses before MAIL with a 552 of its own (the SIZE precheck, issue 6).
    with aiosmtpd_server(data_size_limit=1000) as server:
        async with aiosmtp.SMTP(server.host, server.port, timeout=5) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
                await smtp.sendmail("alice@example.com", ["bob@example.com"], data)
            assert caught.value.smtp_code == 552
            assert caught.value.enhanced_status == "5.3.4"
            assert caught.value.sender == "alice@example.com"
            # Nothing was sent for it: the next one goes through.
            assert await smtp.sendmail("alice@example.com", ["bob@example.com"], small) == {}
        assert [message.content for message in server.messages] == [small]


def refusing() -> EventRecordingHandler:
    return EventRecordingHandler(refuse_rcpt={"nobody@example.com", "ghost@example.com"})


async def test_one_refused_recipient_is_returned_in_the_dict() -> None:
    msg = message(
        ("From", "alice@example.com"),
        ("To", "bob@example.com, nobody@example.com, carol@example.com"),
    )
    _, ours = await parity([call("send_message", msg)], handler=refusing)
    assert ours.values == [{"nobody@example.com": (550, b"5.1.1 No such user")}]
    assert only(ours).rcpt_tos == ["bob@example.com", "carol@example.com"]


async def test_every_recipient_refused_raises_and_the_session_goes_on() -> None:
    data = b"Subject: nobody\r\n\r\nlost\r\n"
    _, ours = await parity(
        [
            call(
                "sendmail", "alice@example.com", ["nobody@example.com", "ghost@example.com"], data
            ),
            call("sendmail", "alice@example.com", ["bob@example.com"], data),
        ],
        handler=refusing,
    )
    error = ours.results[0]
    assert isinstance(error, aiosmtp.SMTPRecipientsRefused)
    assert error.recipients == {
        "nobody@example.com": (550, b"5.1.1 No such user"),
        "ghost@example.com": (550, b"5.1.1 No such user"),
    }
    assert ours.results[1] == {}
    assert only(ours).rcpt_tos == ["bob@example.com"]


async def test_the_session_is_usable_after_a_partly_refused_transaction() -> None:
    data = b"Subject: again\r\n\r\nsecond try\r\n"
    _, ours = await parity(
        [
            call("sendmail", "alice@example.com", ["nobody@example.com", "bob@example.com"], data),
            call("noop"),
            call("sendmail", "alice@example.com", ["carol@example.com"], data),
        ],
        handler=refusing,
    )
    first, second = ours.messages
    assert first.rcpt_tos == ["bob@example.com"]
    assert second.rcpt_tos == ["carol@example.com"]


async def test_sendmail_with_a_str_to_addrs() -> None:
    data = b"Subject: one\r\n\r\nbody\r\n"
    _, ours = await parity(
        [call("sendmail", "alice@example.com", "bob@example.com", data)],
    )
    assert ours.values == [{}]
    stored = only(ours)
    assert (stored.mail_from, stored.rcpt_tos) == ("alice@example.com", ["bob@example.com"])


async def test_sendmail_passes_mail_and_rcpt_options() -> None:
    data = b"Subject: options\r\n\r\n8bit: \xc3\xa9\r\n"
    _, ours = await parity(
        [
            call(
                "sendmail",
                "alice@example.com",
                ["bob@example.com"],
                data,
                mail_options=["BODY=8BITMIME"],
            )
        ],
    )
    stored = only(ours)
    assert "BODY=8BITMIME" in stored.mail_options
    assert stored.content == data


async def test_empty_sender_is_the_null_reverse_path() -> None:
    _, ours = await parity(
        [call("sendmail", "", ["bob@example.com"], b"Subject: dsn\r\n\r\nx\r\n")]
    )
    assert only(ours).mail_from == "<>"  # as aiosmtpd stores the null reverse-path


async def test_simple_commands_reply_like_smtplib() -> None:
    std, ours = await parity(
        [
            call("mail", "alice@example.com"),  # before EHLO: 503 from aiosmtpd
            call("ehlo", "client.example"),
            call("has_extn", "pipelining"),
            call("has_extn", "8bitmime"),
            call("has_extn", "smtputf8"),
            call("noop"),
            call("rset"),
            call("verify", "alice@example.com"),
            call("vrfy", "Alice <alice@example.com>"),
            call("expn", "staff"),
            call("help"),
            call("help", "MAIL"),
            call("docmd", "NOOP"),
            call("docmd", "XUNKNOWN", "argument"),
            call("helo", "client.example"),
        ]
    )
    assert std.error is None
    values = ours.values
    assert values[0][0] == 503
    assert values[1][0] == 250
    assert values[2:5] == [True, True, True]
    assert values[5] == (250, b"2.0.0 OK")
    assert isinstance(values[10], bytes)
    assert values[13][0] == 500


async def test_a_transaction_by_hand_replies_like_smtplib() -> None:
    data = b"Subject: by hand\r\n\r\n.dot\r\n"
    _, ours = await parity(
        [
            call("ehlo", "client.example"),
            call("mail", "alice@example.com", ["BODY=7BIT"]),
            call("rcpt", "bob@example.com"),
            call("rcpt", "nobody@example.com"),
            call("data", data),
            call("data", data),  # DATA outside a transaction: SMTPDataError
        ],
        handler=refusing,
    )
    assert ours.values[1:4] == [(250, b"OK"), (250, b"OK"), (550, b"5.1.1 No such user")]
    assert ours.values[4] == (250, b"2.0.0 Ok: queued as TEST")
    assert isinstance(ours.error, aiosmtp.SMTPDataError)
    assert ours.error.smtp_code == 503
    stored = only(ours)
    assert stored.content == data
    assert stored.mail_options == ["BODY=7BIT"]


async def test_no_recipients_at_all_raises_recipients_refused_like_smtplib() -> None:
    msg = message(("From", "alice@example.com"), ("Subject", "to nobody"))
    data = b"Subject: x\r\n\r\ny\r\n"
    _, ours = await parity(
        [
            call("sendmail", "alice@example.com", [], data),
            call("send_message", msg),
            call("sendmail", "alice@example.com", ["bob@example.com"], data),
        ]
    )
    for error in ours.results[:2]:
        assert isinstance(error, aiosmtp.SMTPRecipientsRefused)
        assert error.recipients == {}
    assert ours.results[2] == {}
    assert len(ours.messages) == 1


async def test_unknown_rcpt_parameters_refuse_every_recipient_like_smtplib() -> None:
    # aiosmtpd implements no RCPT parameter: 555 for each recipient.
    data = b"Subject: dsn\r\n\r\nx\r\n"
    _, ours = await parity(
        [
            call(
                "sendmail",
                "alice@example.com",
                ["bob@example.com", "carol@example.com"],
                data,
                rcpt_options=["NOTIFY=NEVER"],
            ),
            call("noop"),
        ]
    )
    error = ours.results[0]
    assert isinstance(error, aiosmtp.SMTPRecipientsRefused)
    assert sorted(error.recipients) == ["bob@example.com", "carol@example.com"]
    assert {code for code, _ in error.recipients.values()} == {555}
    assert ours.results[1] == (250, b"2.0.0 OK")
    assert ours.messages == []


async def test_unknown_mail_parameters_refuse_the_sender_like_smtplib() -> None:
    data = b"Subject: ret\r\n\r\nx\r\n"
    _, ours = await parity(
        [
            call("sendmail", "alice@example.com", ["bob@example.com"], data, ["RET=HDRS"]),
            call("sendmail", "alice@example.com", ["bob@example.com"], data),
        ]
    )
    error = ours.results[0]
    assert isinstance(error, aiosmtp.SMTPSenderRefused)
    assert (error.smtp_code, error.sender) == (555, "alice@example.com")
    assert ours.results[1] == {}
    assert len(ours.messages) == 1


async def test_smtputf8_asked_for_in_sendmail_options() -> None:
    data = "Subject: hi\r\nFrom: jörg@exämple.org\r\n\r\nHallo\r\n".encode()
    _, ours = await parity(
        [
            call(
                "sendmail",
                "jörg@exämple.org",
                ["zoë@example.com"],
                data,
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )
        ],
        enable_SMTPUTF8=True,
    )
    stored = only(ours)
    assert (stored.mail_from, stored.rcpt_tos) == ("jörg@exämple.org", ["zoë@example.com"])
    assert "SMTPUTF8" in stored.mail_options
    assert stored.content == data


async def test_smtputf8_option_without_server_support_is_not_supported() -> None:
    data = b"Subject: hi\r\n\r\nHallo\r\n"
    _, ours = await parity(
        [
            call("sendmail", "alice@example.com", ["bob@example.com"], data, ["SMTPUTF8"]),
            call("noop"),
        ],
        enable_SMTPUTF8=False,
    )
    assert isinstance(ours.results[0], aiosmtp.SMTPNotSupportedError)
    assert ours.results[1] == (250, b"2.0.0 OK")
    assert ours.messages == []


async def test_non_ascii_sender_in_sendmail_without_smtputf8_option() -> None:
    # smtplib cannot encode the command in ASCII; neither may aiosmtp send it.
    data = b"Subject: hi\r\n\r\nHallo\r\n"
    _, ours = await parity(
        [
            call("sendmail", "jörg@exämple.org", ["bob@example.com"], data),
            call("noop"),
        ],
        enable_SMTPUTF8=True,
    )
    assert isinstance(ours.results[0], UnicodeEncodeError)
    assert ours.results[1] == (250, b"2.0.0 OK")
    assert ours.messages == []


async def test_mail_options_are_dropped_after_helo_like_smtplib() -> None:
    data = b"Subject: old school\r\n\r\nx\r\n"
    _, ours = await parity(
        [
            call("helo", "client.example"),
            call("sendmail", "alice@example.com", ["bob@example.com"], data, ["BODY=8BITMIME"]),
        ]
    )
    assert ours.results[1] == {}
    # No ESMTP: neither SIZE nor the caller's options.
    assert only(ours).mail_options == []


async def test_quit_then_a_command_raises_server_disconnected_like_smtplib() -> None:
    _, ours = await parity([call("noop"), call("quit"), call("noop"), call("ehlo")])
    assert ours.results[1] == (221, b"2.0.0 Bye")
    for error in ours.results[2:]:
        assert isinstance(error, aiosmtp.SMTPServerDisconnected)


async def test_many_recipients_some_refused() -> None:
    # More recipients than one pipelined group holds.
    recipients = [f"user{number}@example.com" for number in range(250)]
    recipients[7] = recipients[150] = recipients[249] = "nobody@example.com"
    recipients[120] = "ghost@example.com"
    data = b"Subject: crowd\r\n\r\nhello all\r\n"
    _, ours = await parity(
        [call("sendmail", "alice@example.com", recipients, data)], handler=refusing
    )
    assert ours.values == [
        {
            "nobody@example.com": (550, b"5.1.1 No such user"),
            "ghost@example.com": (550, b"5.1.1 No such user"),
        }
    ]
    assert only(ours).rcpt_tos == [
        address for address in recipients if address not in refusing().refuse_rcpt
    ]


async def test_a_large_message_arrives_intact() -> None:
    lines = [f"{number:08d} " + "z" * 70 for number in range(40000)]
    lines[1000] = ".starts with a dot"
    lines[2000] = "."
    data = ("Subject: large\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()
    assert len(data) > 3_000_000
    _, ours = await parity([call("sendmail", "alice@example.com", ["bob@example.com"], data)])
    assert only(ours).content == data


def snapshot(msg: EmailMessage) -> list[tuple[str, str | None, list[tuple[str, object]]]]:
    """Every part's type, boundary and headers, read without flattening anything."""
    return [
        (part.get_content_type(), part.get_boundary(), list(part.items())) for part in msg.walk()
    ]


async def test_nested_parts_of_the_callers_message_are_not_changed(
    smtpd: RunningServer,
) -> None:
    # A message as EmailMessage builds it: no boundary anywhere until it is
    # flattened. API.md: the caller's message object is never mutated, and that
    # includes its parts (a shallow copy of the top level shares them).
    msg = message(("From", "alice@example.com"), ("To", "bob@example.com"), ("Bcc", "eve@x.org"))
    msg.add_alternative("<p>Hello</p>", subtype="html")
    msg.add_attachment(b"\x00\x01data", maintype="application", subtype="octet-stream")
    before = snapshot(msg)
    assert [boundary for _, boundary, _ in before] == [None] * 5
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(smtpd.host, smtpd.port, timeout=10) as smtp:
            assert await smtp.send_message(msg) == {}
    assert snapshot(msg) == before
    [stored] = smtpd.messages
    received = email.message_from_bytes(stored.content, policy=email.policy.default)
    assert [part.get_content_type() for part in received.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/octet-stream",
    ]
    assert b"eve@" not in stored.content
