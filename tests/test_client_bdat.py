"""CHUNKING (RFC 3030) byte for byte: BDAT chunks, pipelined grouping, refusals at
every step, LMTP, and a connection lost after BDAT LAST.

Every test runs against tests/bdat_server.py, which records each byte and each
round trip; its ``settle`` makes one client write always show as one round.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import aiosmtp
from aiosmtp._body import CHUNK_SIZE

from .bdat_server import BDATServer, dot_stuffed, normalised

pytestmark = pytest.mark.anyio

#: Never reached in a passing test; bounds each test as a whole.
LIMIT = 15
#: The client's per-operation timeout where no timeout is expected to fire.
TIMEOUT = 5.0
NAME = "client.example"

#: Bare LF, bare CR, CR LF, lines that start with a dot, and the sequence that
#: would end DATA early: over BDAT none of it is escaped, all of it is normalised.
TRICKY = b"Subject: tricky\n\n.leading dot\r\n..two dots\rbare CR\r\n.\r\nafter a lone dot\n"


@pytest.fixture
def server() -> Iterator[BDATServer]:
    with BDATServer(settle=0.01) as server:
        yield server


def client(server: BDATServer, *, chunking: bool = True) -> aiosmtp.SMTP:
    return aiosmtp.SMTP(server.host, server.port, NAME, TIMEOUT, chunking=chunking)


def bdat_lines(server: BDATServer) -> list[bytes]:
    return [line for line in server.commands() if line.startswith(b"BDAT")]


async def test_one_pipelined_write_per_message(server: BDATServer) -> None:
    expected = normalised(TRICKY)
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            first = await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], TRICKY)
            second = await smtp.sendmail("d@x.org", "e@x.org", b"Subject: 2\r\n\r\nshort\r\n")
    assert first == {}
    assert first.reply == (250, b"2.0.0 Ok: queued as Q1")
    assert second.reply == (250, b"2.0.0 Ok: queued as Q2")
    # MAIL, every RCPT and BDAT n LAST with the whole payload came in one piece before
    # the server had answered any of them: one round trip per message.
    assert server.connections[0].rounds() == [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<a@x.org> SIZE=%d\r\n" % len(expected)
        + b"RCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\n"
        + b"BDAT %d LAST\r\n" % len(expected)
        + expected,
        b"MAIL FROM:<d@x.org> SIZE=21\r\nRCPT TO:<e@x.org>\r\n"
        b"BDAT 21 LAST\r\nSubject: 2\r\n\r\nshort\r\n",
        b"QUIT\r\n",
    ]
    assert [(m.via, m.recipients, m.data) for m in server.messages] == [
        ("BDAT", ["b@x.org", "c@x.org"], expected),
        ("BDAT", ["e@x.org"], b"Subject: 2\r\n\r\nshort\r\n"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"a\nb\n",
        b"a\rb\r",
        b"a\r\r\nb\n\r",
        b"\n\n\r\r",
        b".\r\n..\r\n.",
        b"\r\n.\r\n",
        b"no line ending at all",
        b"",
    ],
)
async def test_chunk_sizes_count_the_normalised_bytes(server: BDATServer, body: bytes) -> None:
    expected = normalised(body)
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], body)
    assert bdat_lines(server) == [b"BDAT %d LAST\r\n" % len(expected)]
    [message] = server.messages
    assert message.data == expected
    assert message.chunk_sizes == [len(expected)]
    # No dot-stuffing, no terminator: the bytes after the BDAT line are the message.
    assert server.connections[0].received().endswith(b"LAST\r\n" + expected + b"QUIT\r\n")


def _large_body() -> bytes:
    # CRLF lines (nothing to normalise) that start with dots; no chunk boundary at
    # CHUNK_SIZE multiples falls between a CR and its LF.
    line = b".dotted line " + b"x" * 84 + b"\r\n"  # 99 bytes
    return b"Subject: big\r\n\r\n" + line * (5 * CHUNK_SIZE // (2 * len(line)))


async def _pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for size in sizes:
        yield data[start : start + size]
        start += size
        await anyio.lowlevel.checkpoint()
    yield data[start:]


@pytest.mark.parametrize("kind", ["bytes", "BytesIO", "file", "small pieces", "mixed pieces"])
async def test_a_large_body_goes_as_several_bounded_chunks(
    server: BDATServer, tmp_path: Path, kind: str
) -> None:
    body = _large_body()
    assert len(body) > 2 * CHUNK_SIZE
    path = tmp_path / "big.eml"
    path.write_bytes(body)
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            if kind == "bytes":
                await smtp.sendmail("a@x.org", ["b@x.org"], body)
            elif kind == "BytesIO":
                await smtp.sendmail("a@x.org", ["b@x.org"], io.BytesIO(body))
            elif kind == "file":
                with path.open("rb") as file:
                    await smtp.sendmail("a@x.org", ["b@x.org"], file)
            elif kind == "small pieces":
                await smtp.sendmail("a@x.org", ["b@x.org"], _pieces(body, [4000] * 600))
            else:
                # A few bytes, then pieces larger than a chunk: still no oversized chunk.
                sizes = [7, 2 * CHUNK_SIZE, 3]
                await smtp.sendmail("a@x.org", ["b@x.org"], _pieces(body, sizes))
    [message] = server.messages
    assert message.data == body
    sizes = message.chunk_sizes
    assert len(sizes) >= 3
    assert sum(sizes) == len(body)
    assert max(sizes) <= CHUNK_SIZE, sizes
    lines = bdat_lines(server)
    assert lines == [b"BDAT %d\r\n" % size for size in sizes[:-1]] + [
        b"BDAT %d LAST\r\n" % sizes[-1]
    ]
    # The first chunk went out with the envelope, in the same write.
    envelope_round = server.connections[0].rounds()[1]
    assert envelope_round.startswith(b"MAIL FROM:<a@x.org>")
    assert b"RCPT TO:<b@x.org>\r\nBDAT %d\r\n" % sizes[0] in envelope_round
    size_option = [option for option in message.mail_options if option.startswith("SIZE=")]
    if kind in ("bytes", "BytesIO", "file"):
        assert size_option == [f"SIZE={len(body)}"]
    else:
        assert size_option == []  # the length of a stream is not known in advance


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    with BDATServer(pipelining=False, settle=0.01) as server, anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            result = await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], b"hi\n")
        assert result == {}
        assert result.reply.code == 250
        assert server.connections[0].rounds() == [
            b"EHLO client.example\r\n",
            b"MAIL FROM:<a@x.org> SIZE=4\r\n",
            b"RCPT TO:<b@x.org>\r\n",
            b"RCPT TO:<c@x.org>\r\n",
            b"BDAT 4 LAST\r\nhi\r\n",
            b"QUIT\r\n",
        ]


async def test_pipelining_without_chunking_takes_two_round_trips() -> None:
    with BDATServer(chunking=False, settle=0.01) as server, anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], TRICKY)
        expected = normalised(TRICKY)
        assert server.connections[0].rounds() == [
            b"EHLO client.example\r\n",
            b"MAIL FROM:<a@x.org> SIZE=%d\r\nRCPT TO:<b@x.org>\r\nDATA\r\n" % len(expected),
            dot_stuffed(expected),
            b"QUIT\r\n",
        ]
        assert server.messages[0].data == expected


@pytest.mark.parametrize("pipelining", [True, False])
async def test_refused_sender(pipelining: bool) -> None:
    with BDATServer(pipelining=pipelining) as server, anyio.fail_after(LIMIT):
        server.mail_reply = "550 5.7.1 Sender blocked"
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPSenderRefused) as caught:
                await smtp.sendmail("a@x.org", ["b@x.org"], b"hi\r\n")
            assert caught.value.smtp_code == 550
            assert caught.value.smtp_error == b"5.7.1 Sender blocked"
            assert caught.value.sender == "a@x.org"
            if pipelining:
                # Everything had gone in one write; the chunk was answered, then RSET.
                assert server.connections[0].verbs() == ["EHLO", "MAIL", "RCPT", "BDAT", "RSET"]
            else:
                assert server.connections[0].verbs() == ["EHLO", "MAIL", "RSET"]
            server.mail_reply = None
            assert (await smtp.sendmail("a@x.org", ["b@x.org"], b"again\r\n")) == {}
        assert [m.data for m in server.messages] == [b"again\r\n"]
        assert server.opened == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_every_recipient_refused(pipelining: bool) -> None:
    with BDATServer(pipelining=pipelining) as server, anyio.fail_after(LIMIT):
        server.rcpt_replies = {
            "b@x.org": "550 5.1.1 No such user",
            "c@x.org": "450 4.2.1 Try later",
        }
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPRecipientsRefused) as caught:
                await smtp.sendmail("a@x.org", ["b@x.org", "c@x.org"], b"hi\r\n")
            assert caught.value.recipients == {
                "b@x.org": (550, b"5.1.1 No such user"),
                "c@x.org": (450, b"4.2.1 Try later"),
            }
            verbs = server.connections[0].verbs()
            assert verbs[-1] == "RSET"
            # Without pipelining no chunk is sent for a transaction with no recipient.
            assert ("BDAT" in verbs) is pipelining
            assert (await smtp.noop()).code == 250  # in step
            result = await smtp.sendmail("a@x.org", ["b@x.org", "d@x.org"], b"hi\r\n")
        assert result == {"b@x.org": (550, b"5.1.1 No such user")}
        assert [m.recipients for m in server.messages] == [["d@x.org"]]


@pytest.mark.parametrize(
    ("size", "refused_chunk", "reply"),
    [
        (3 * CHUNK_SIZE + 10, 2, "552 5.3.4 Message too big"),
        (3 * CHUNK_SIZE + 10, 1, "451 4.3.0 Try again later"),
        (100, 1, "554 5.6.0 Content rejected"),
    ],
)
async def test_a_refused_chunk_ends_the_transaction(
    server: BDATServer, size: int, refused_chunk: int, reply: str
) -> None:
    server.chunk_replies = {refused_chunk: reply}
    body = (b"z" * 98 + b"\r\n") * (size // 100)
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPDataError) as caught:
                await smtp.sendmail("a@x.org", ["b@x.org"], body)
            code, text = reply.split(" ", 1)
            assert caught.value.smtp_code == int(code)
            assert caught.value.smtp_error == text.encode()
            # RFC 3030 4.2: no chunk after the refused one; then RSET.
            verbs = server.connections[0].verbs()
            assert verbs.count("BDAT") == refused_chunk
            assert verbs[-1] == "RSET"
            server.chunk_replies = {}
            assert (await smtp.sendmail("a@x.org", ["b@x.org"], b"ok\r\n")) == {}
    assert [m.data for m in server.messages] == [b"ok\r\n"]
    assert server.opened == 1


async def test_421_to_bdat_closes_the_session(server: BDATServer) -> None:
    server.close_with_421 = {"BDAT": 1}
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPDataError) as caught:
                await smtp.sendmail("a@x.org", ["b@x.org"], b"hi\r\n")
            assert caught.value.smtp_code == 421
            assert smtp.is_closed
    assert server.messages == []


async def test_chunking_false_falls_back_to_data(server: BDATServer) -> None:
    expected = normalised(TRICKY)
    with anyio.fail_after(LIMIT):
        async with client(server, chunking=False) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], TRICKY)
            assert smtp.has_extn("chunking")
    assert bdat_lines(server) == []
    [message] = server.messages
    assert message.via == "DATA"
    assert message.data == expected
    assert message.wire == dot_stuffed(expected)


async def test_lmtp_per_recipient_replies_after_bdat_last() -> None:
    with BDATServer(lmtp=True, settle=0.01) as server, anyio.fail_after(LIMIT):
        server.rcpt_replies = {"x@x.org": "550 5.1.1 Unknown user"}
        server.lmtp_replies = {"c@x.org": "452 4.2.2 Mailbox full"}
        recipients = ["b@x.org", "x@x.org", "c@x.org", "d@x.org"]
        async with aiosmtp.LMTP(server.host, server.port, NAME, timeout=TIMEOUT) as lmtp:
            result = await lmtp.sendmail("a@x.org", recipients, b"hi\n")
            assert result == {
                "x@x.org": (550, b"5.1.1 Unknown user"),
                "c@x.org": (452, b"4.2.2 Mailbox full"),
            }
            assert result.reply == (250, b"2.1.5 <d@x.org> delivered")
            assert (await lmtp.noop()).code == 250  # every reply was read: still in step
            server.lmtp_replies = {
                "b@x.org": "550 5.2.1 Mailbox disabled",
                "c@x.org": "452 4.2.2 Mailbox full",
            }
            with pytest.raises(aiosmtp.SMTPRecipientsRefused) as caught:
                await lmtp.sendmail("a@x.org", ["b@x.org", "x@x.org", "c@x.org"], b"hi\n")
            assert caught.value.recipients == {
                "b@x.org": (550, b"5.2.1 Mailbox disabled"),
                "x@x.org": (550, b"5.1.1 Unknown user"),
                "c@x.org": (452, b"4.2.2 Mailbox full"),
            }
            assert (await lmtp.noop()).code == 250
        rounds = server.connections[0].rounds()
        assert rounds[0] == b"LHLO client.example\r\n"
        assert rounds[1] == (
            b"MAIL FROM:<a@x.org> SIZE=4\r\n"
            + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients)
            + b"BDAT 4 LAST\r\nhi\r\n"
        )


@pytest.mark.parametrize("size", [20, 2 * CHUNK_SIZE + 20])
async def test_lost_after_bdat_last_is_an_unknown_outcome(server: BDATServer, size: int) -> None:
    server.drop("after-end")
    body = b"x" * (size - 2) + b"\r\n"
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
                await smtp.sendmail("a@x.org", ["b@x.org"], body)
            assert smtp.end_of_data_sent
            assert smtp.is_closed
    assert [m.data for m in server.messages] == [body]


async def test_lost_before_bdat_last_is_a_plain_disconnection(server: BDATServer) -> None:
    server.drop("bdat")  # on the first chunk of a three-chunk message
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPServerDisconnected) as caught:
                await smtp.sendmail("a@x.org", ["b@x.org"], b"y" * (3 * CHUNK_SIZE))
            assert not isinstance(caught.value, aiosmtp.SMTPDeliveryUnknownError)
            assert not smtp.end_of_data_sent
    assert server.messages == []
    assert not any(line.endswith(b" LAST\r\n") for line in bdat_lines(server))
