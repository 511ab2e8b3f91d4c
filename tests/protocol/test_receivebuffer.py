"""ReplyParser: bytes from the server cut into replies, checked against smtplib.

Every parser input is fed whole, one byte at a time, and with trailing bytes after
it (h11's tests/test_io.py); the properties add arbitrary chunkings. smtplib's own
``getreply()`` (reading from an in-memory file) is the reference for well-formed
input, so code, text stripping and the line limit must agree with it exactly.
"""

from __future__ import annotations

import io
import smtplib
from collections.abc import Callable, Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    MAX_LINE_LENGTH,
    MAX_REPLY_LINES,
    RemoteProtocolError,
    Reply,
    ReplyParser,
)

from ._chunking import FEEDERS, chunked, split_at

Feeder = Callable[[bytes], Iterator[bytes]]


def parse_all(chunks: Iterable[bytes], parser: ReplyParser | None = None) -> list[Reply]:
    """Feed the chunks one after another and collect every reply completed."""
    parser = ReplyParser() if parser is None else parser
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not None:
            replies.append(reply)
    return replies


def outcome(chunks: Iterable[bytes]) -> tuple[list[Reply], int | None]:
    """The replies parsed, and the error code if parsing stopped on an error."""
    parser = ReplyParser()
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (reply := parser.next_reply()) is not None:
                replies.append(reply)
    except RemoteProtocolError as exc:
        return replies, exc.code
    return replies, None


def smtplib_replies(data: bytes, count: int) -> list[tuple[int, bytes]]:
    """What smtplib's getreply() makes of ``data``, read ``count`` times."""
    client = smtplib.SMTP(local_hostname="client.example")
    client.file = io.BytesIO(data)
    return [client.getreply() for _ in range(count)]


def smtplib_refusal(data: bytes) -> int | None:
    """The code of smtplib's SMTPResponseException for ``data``, if it raises one."""
    client = smtplib.SMTP(local_hostname="client.example")
    client.file = io.BytesIO(data)
    try:
        client.getreply()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
    return None


@pytest.fixture(params=sorted(FEEDERS))
def feed(request: pytest.FixtureRequest) -> Feeder:
    feeder: Feeder = FEEDERS[request.param]
    return feeder


# -- well-formed replies -------------------------------------------------------

WELL_FORMED = [
    (b"220 mail.example.com ESMTP ready\r\n", Reply(220, b"mail.example.com ESMTP ready")),
    (b"250 OK\r\n", Reply(250, b"OK")),
    (b"250 OK\n", Reply(250, b"OK")),
    (b"250\r\n", Reply(250, b"")),
    (b"250 \r\n", Reply(250, b"")),
    (b"354 End data with <CR><LF>.<CR><LF>\r\n", Reply(354, b"End data with <CR><LF>.<CR><LF>")),
    (b"550   padded text \t \r\n", Reply(550, b"padded text")),
    (b"550 trailing CRs\r\r\r\n", Reply(550, b"trailing CRs")),
    (b"550 inner\rCR\r\n", Reply(550, b"inner\rCR")),
    (b"250 \xff\xfe raw bytes\r\n", Reply(250, b"\xff\xfe raw bytes")),
    (
        b"250-mail.example.com greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        b"250 8BITMIME\r\n",
        Reply(250, b"mail.example.com greets you\nPIPELINING\nSIZE 10240000\n8BITMIME"),
    ),
    (b"250-first\n250-second\n250 last\n", Reply(250, b"first\nsecond\nlast")),
    (b"250-mixed\r\n250-line\n250 ends\r\n", Reply(250, b"mixed\nline\nends")),
    (b"250-\r\n250-\r\n250\r\n", Reply(250, b"\n\n")),
    (b"250- spaced \r\n250  out \r\n", Reply(250, b"spaced\nout")),
    (b"421-4.3.2 going\r\n421 4.3.2 down\r\n", Reply(421, b"4.3.2 going\n4.3.2 down")),
]


@pytest.mark.parametrize(("data", "expected"), WELL_FORMED)
def test_well_formed(feed: Feeder, data: bytes, expected: Reply) -> None:
    assert parse_all(feed(data)) == [expected]


@pytest.mark.parametrize(("data", "expected"), WELL_FORMED)
def test_well_formed_equals_smtplib(data: bytes, expected: Reply) -> None:
    assert smtplib_replies(data, 1) == [expected]


@pytest.mark.parametrize(("data", "expected"), WELL_FORMED)
def test_well_formed_with_trailing_bytes(feed: Feeder, data: bytes, expected: Reply) -> None:
    parser = ReplyParser()
    assert parse_all(feed(data + b"250-next reply, not yet compl"), parser) == [expected]
    assert parser.next_reply() is None
    assert parser.has_buffered_data()
    parser.feed(b"ete\r\n250 done\r\n")
    assert parser.next_reply() == (250, b"next reply, not yet complete\ndone")
    assert parser.next_reply() is None
    assert not parser.has_buffered_data()


def test_incomplete_reply_needs_more_data(feed: Feeder) -> None:
    data = b"250-one\r\n250-two\r\n250 three\r\n"
    parser = ReplyParser()
    fed = b""
    for chunk in feed(data):
        assert parser.next_reply() is None
        parser.feed(chunk)
        fed += chunk
        if fed != data:
            assert parser.next_reply() is None
            assert parser.has_buffered_data()
    assert parser.next_reply() == (250, b"one\ntwo\nthree")
    assert not parser.has_buffered_data()


def test_a_lone_cr_does_not_end_a_line() -> None:
    parser = ReplyParser()
    parser.feed(b"250 one\r")
    assert parser.next_reply() is None
    parser.feed(b"250 still the same line\r\n")
    assert parser.next_reply() == (250, b"one\r250 still the same line")


def test_several_replies_in_one_chunk() -> None:
    data = b"250 a\r\n251-b\r\n251 c\r\n354 d\r\n"
    expected = [Reply(250, b"a"), Reply(251, b"b\nc"), Reply(354, b"d")]
    assert parse_all([data]) == expected
    assert parse_all(FEEDERS["bytewise"](data)) == expected
    assert smtplib_replies(data, 3) == expected


def test_fresh_parser_has_nothing_buffered() -> None:
    parser = ReplyParser()
    assert not parser.has_buffered_data()
    assert parser.next_reply() is None
    parser.feed(b"")
    assert not parser.has_buffered_data()
    assert parser.next_reply() is None


def test_first_lines_of_a_multiline_reply_count_as_buffered() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n")
    assert parser.next_reply() is None
    assert parser.has_buffered_data()


# -- malformed input -----------------------------------------------------------

MALFORMED = [
    b"\r\n",
    b"\n",
    b"2\r\n",
    b"25\r\n",
    b"25 short code\r\n",
    b"abc not a code\r\n",
    b"2a0 letters\r\n",
    b" 250 leading space\r\n",
    b"+250 sign\r\n",
    b"099 class 0\r\n",
    b"150 class 1\r\n",
    b"650 class 6\r\n",
    b"950 class 9\r\n",
    b"2500 four digits\r\n",
    b"250x separator\r\n",
    b"250\tseparator\r\n",
    b"250_separator\r\n",
    b"\xd9\xa2\xd9\xa5\xd9\xa0 Arabic-Indic digits\r\n",
    b"250-fine\r\nnonsense\r\n",
    b"hello world\r\n",
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_line(feed: Feeder, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(feed(data))
    assert info.value.code == -1


@pytest.mark.parametrize(
    "data",
    [
        b"250-one\r\n251 two\r\n",
        b"250-one\r\n550-two\r\n550 three\r\n",
        b"450-one\n451 two\n",
    ],
)
def test_code_mismatch_inside_a_multiline_reply(feed: Feeder, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(feed(data))
    assert info.value.code == -1
    assert "multiline" in str(info.value)


def test_replies_before_a_malformed_line_are_returned_first() -> None:
    parser = ReplyParser()
    parser.feed(b"250 good\r\n251 also good\r\nbad\r\n")
    assert parser.next_reply() == (250, b"good")
    assert parser.next_reply() == (251, b"also good")
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()


# -- limits --------------------------------------------------------------------


def line_of(length: int, ending: bytes = b"\r\n") -> bytes:
    """A reply line of exactly ``length`` bytes, its ending included."""
    return b"250 " + b"x" * (length - 4 - len(ending)) + ending


def test_line_limit_is_smtplibs() -> None:
    assert MAX_LINE_LENGTH == vars(smtplib)["_MAXLINE"] == 8192


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
@pytest.mark.parametrize("length", [8190, 8191, 8192, 8193, 8194, 20000])
def test_line_limit_matches_smtplib(feed: Feeder, ending: bytes, length: int) -> None:
    data = line_of(length, ending)
    assert len(data) == length
    refusal = smtplib_refusal(data)
    assert refusal == (500 if length > 8192 else None)
    if refusal is not None:
        with pytest.raises(RemoteProtocolError) as info:
            parse_all(feed(data))
        assert info.value.code == 500
    else:
        assert parse_all(feed(data)) == [(250, b"x" * (length - 4 - len(ending)))]


def test_line_of_8192_bytes_is_fine_8193_is_not() -> None:
    assert parse_all([line_of(8192)]) == smtplib_replies(line_of(8192), 1)
    with pytest.raises(RemoteProtocolError) as info:
        parse_all([line_of(8193)])
    assert info.value.code == 500


def test_line_limit_applies_to_every_line_of_a_multiline_reply() -> None:
    long_continuation = b"250-" + b"y" * (8192 - 6) + b"\r\n"
    assert parse_all([long_continuation, b"250 end\r\n"]) == [(250, b"y" * (8192 - 6) + b"\nend")]
    too_long = b"250-" + b"y" * (8193 - 6) + b"\r\n"
    with pytest.raises(RemoteProtocolError) as info:
        parse_all([too_long, b"250 end\r\n"])
    assert info.value.code == 500


def test_an_unterminated_line_may_not_grow_past_the_limit() -> None:
    parser = ReplyParser()
    parser.feed(b"250 " + b"z" * (8192 - 4))
    assert parser.next_reply() is None  # 8192 bytes: the line ending may still come
    parser.feed(b"z")
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_reply()
    assert info.value.code == 500


def test_an_unterminated_line_is_refused_as_soon_as_it_is_too_long(feed: Feeder) -> None:
    # No line ending ever arrives: the parser must not wait for one.
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(feed(b"2" * 8193))
    assert info.value.code == 500


def test_many_short_lines_in_one_big_chunk_are_fine() -> None:
    data = b"".join(b"250-line %d\r\n" % number for number in range(900)) + b"250 end\r\n"
    assert len(data) > 8192
    (reply,) = parse_all([data])
    assert reply.code == 250
    assert reply.message.count(b"\n") == 900


def reply_of_lines(count: int) -> bytes:
    return b"250-l\r\n" * (count - 1) + b"250 l\r\n"


def test_reply_line_limit() -> None:
    assert MAX_REPLY_LINES == 1000


@pytest.mark.parametrize("count", [1, 2, 999, 1000])
def test_reply_of_up_to_1000_lines(count: int) -> None:
    assert parse_all([reply_of_lines(count)]) == [(250, b"\n".join([b"l"] * count))]


@pytest.mark.parametrize("count", [1001, 1002, 5000])
def test_reply_of_more_than_1000_lines(feed: Feeder, count: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(feed(reply_of_lines(count)))
    assert info.value.code == 500


def test_reply_line_limit_is_refused_before_the_reply_ends() -> None:
    # The 1001st line is not needed to know the reply is too long.
    parser = ReplyParser()
    parser.feed(b"250-l\r\n" * 999)
    assert parser.next_reply() is None
    parser.feed(b"250-l\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_reply()
    assert info.value.code == 500


def test_limits_are_configurable() -> None:
    parser = ReplyParser(max_line_length=16, max_reply_lines=2)
    parser.feed(b"250-0123456789\r\n250 ok\r\n")  # 16 bytes, then 8
    assert parser.next_reply() == (250, b"0123456789\nok")
    parser.feed(b"250 0123456789a\r\n")  # 17 bytes
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()
    parser = ReplyParser(max_line_length=16, max_reply_lines=2)
    parser.feed(b"250-a\r\n250-b\r\n250 c\r\n")
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()


# -- properties ----------------------------------------------------------------


@given(chunked(st.binary(max_size=400)))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_raise_nothing_but_remote_protocol_error(
    case: tuple[bytes, list[bytes]],
) -> None:
    data, chunks = case
    replies, code = outcome(chunks)
    assert code in (None, -1, 500)
    # However the bytes are cut, the parser comes to the same result.
    assert outcome([data]) == (replies, code)
    assert outcome(FEEDERS["bytewise"](data)) == (replies, code)


# Bytes that look like replies, so that the property above also reaches the
# multiline, mismatch and limit paths often.
reply_ish_lines = st.lists(
    st.tuples(
        st.sampled_from([b"250", b"251", b"354", b"550", b"25", b"2x0", b"", b"999"]),
        st.sampled_from([b"-", b" ", b"", b"x"]),
        st.binary(max_size=12).filter(lambda text: b"\n" not in text),
        st.sampled_from([b"\r\n", b"\n", b"\r", b""]),
    ).map(b"".join),
    max_size=12,
).map(b"".join)


@given(chunked(reply_ish_lines))
@settings(max_examples=300, deadline=None)
def test_reply_like_bytes_raise_nothing_but_remote_protocol_error(
    case: tuple[bytes, list[bytes]],
) -> None:
    data, chunks = case
    replies, code = outcome(chunks)
    assert code in (None, -1, 500)
    assert outcome([data]) == (replies, code)


@st.composite
def well_formed_replies(draw: st.DrawFn) -> tuple[bytes, list[Reply]]:
    """Valid replies (any code, CRLF or bare LF, odd spacing) and their meaning."""
    wire = b""
    expected: list[Reply] = []
    texts = st.binary(max_size=20).filter(lambda text: b"\n" not in text)
    for _ in range(draw(st.integers(1, 4))):
        code = draw(st.integers(200, 599))
        lines = draw(st.lists(texts, min_size=1, max_size=5))
        for index, text in enumerate(lines):
            last = index == len(lines) - 1
            separator = draw(st.sampled_from([b" ", b""])) if last and not text else b" "
            if not last:
                separator = b"-"
            ending = draw(st.sampled_from([b"\r\n", b"\n"]))
            wire += b"%d" % code + separator + text + ending
        expected.append(Reply(code, b"\n".join(text.strip(b" \t\r\n") for text in lines)))
    return wire, expected


@given(well_formed_replies(), st.lists(st.integers(0, 500), max_size=20))
@settings(max_examples=300, deadline=None)
def test_well_formed_replies_equal_smtplib_under_any_chunking(
    case: tuple[bytes, list[Reply]], cuts: list[int]
) -> None:
    wire, expected = case
    assert smtplib_replies(wire, len(expected)) == expected
    parser = ReplyParser()
    assert parse_all(split_at(wire, cuts), parser) == expected
    assert not parser.has_buffered_data()
