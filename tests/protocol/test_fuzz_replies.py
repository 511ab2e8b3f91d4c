"""Fuzzing the reply side of the core: ``ReplyParser`` and ``SMTPConnection``.

Properties, each under arbitrary chunking of the received bytes:

- arbitrary bytes (random, reply-like, and well-formed replies with mutations) give
  exactly what an independent model of the reply grammar says: the same replies in
  the same order, then either a RemoteProtocolError or a wait for more bytes; no
  other exception, ever, from the parser or from the session;
- well-formed generated replies are returned as the model's (code, lines), at the
  parser and through a session that pipelined as many commands;
- line and reply limits hold wherever the chunks are cut;
- a session that saw nonsense is closed and never hands out a reply again.

The model below is written from the rules (RFC 5321 section 4.2 as smtplib reads
it: a bare LF ends a line too, each line's text is stripped, lines join with LF),
not from the parser's code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aiosmtp.protocol import (
    MAX_LINE_LENGTH,
    MAX_REPLY_LINES,
    NEED_DATA,
    Command,
    RemoteProtocolError,
    Reply,
    ReplyParser,
    SMTPConnection,
    State,
)

from .. import hypothesis_profiles  # noqa: F401  (registers and loads the profiles)
from ._chunking import split_at

# -- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a stream of bytes means: these replies, then an error or not."""

    replies: tuple[Reply, ...]
    error: bool
    #: Model only: the offset just past each reply.
    ends: tuple[int, ...] = field(default=(), compare=False)


def model(
    data: bytes, max_line: int = MAX_LINE_LENGTH, max_lines: int = MAX_REPLY_LINES
) -> Outcome:
    """The replies in ``data`` and whether it goes wrong, from the grammar alone."""
    replies: list[Reply] = []
    ends: list[int] = []
    texts: list[bytes] = []
    code = 0
    offset = 0

    def failed() -> Outcome:
        return Outcome(tuple(replies), True, tuple(ends))

    for raw, complete in _lines(data):
        offset += len(raw)
        if len(raw) > max_line:
            return failed()  # terminator included; an unended line counts as it grows
        if not complete:
            break
        line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if len(line) < 3 or not line[:3].isdigit() or line[:1] not in (b"2", b"3", b"4", b"5"):
            return failed()
        if len(line) > 3 and line[3:4] not in (b" ", b"-"):
            return failed()
        if texts and int(line[:3]) != code:
            return failed()
        code = int(line[:3])
        texts.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] == b"-":
            if len(texts) >= max_lines:
                return failed()
            continue
        replies.append(Reply(code, b"\n".join(texts)))
        ends.append(offset)
        texts = []
    return Outcome(tuple(replies), False, tuple(ends))


def _lines(data: bytes) -> Iterable[tuple[bytes, bool]]:
    """(line with its LF, True) for each complete line; (the rest, False) last."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start : end + 1], True
        start = end + 1
    yield data[start:], False


# -- the code under test, driven chunk by chunk ----------------------------------------


def parse(chunks: Iterable[bytes], **limits: int) -> Outcome:
    parser = ReplyParser(**limits)
    replies: list[Reply] = []
    error: RemoteProtocolError | None = None
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (reply := parser.next_reply()) is not None:
                assert type(reply) is Reply
                replies.append(reply)
    except RemoteProtocolError as exc:
        error = exc
    if error is not None:
        assert error.code in (-1, 500)  # what smtplib would report
    return Outcome(tuple(replies), error is not None)


def session(
    commands: int,
    *,
    max_line_length: int = MAX_LINE_LENGTH,
    max_reply_lines: int = MAX_REPLY_LINES,
) -> SMTPConnection:
    """A session past its greeting that has pipelined MAIL and ``commands - 1`` RCPTs."""
    conn = SMTPConnection(max_line_length=max_line_length, max_reply_lines=max_reply_lines)
    conn.receive_data(b"220 ok\r\n")
    assert conn.next_reply() == (220, b"ok")
    group = [Command.make("MAIL", "FROM:<a@example.org>")]
    group += [Command.make("RCPT", f"TO:<r{n}@example.org>") for n in range(commands - 1)]
    conn.send_many(group)
    assert conn.awaiting_replies == commands
    return conn


def drive(conn: SMTPConnection, chunks: Iterable[bytes]) -> Outcome:
    """Feed the session; after an error, check that it stays poisoned."""
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while (reply := conn.next_reply()) is not NEED_DATA:
                assert type(reply) is Reply
                replies.append(reply)
    except RemoteProtocolError:
        assert conn.state is State.CLOSED
        assert conn.awaiting_replies == 0
        # Nothing it holds, nor anything that comes later, is ever a reply again.
        for more in (b"", b"250 ok\r\n", b"250-a\r\n250 b\r\n"):
            conn.receive_data(more)
            with contextlib.suppress(RemoteProtocolError):
                assert conn.next_reply() is NEED_DATA
        return Outcome(tuple(replies), True)
    return Outcome(tuple(replies), False)


# -- strategies ------------------------------------------------------------------------

_text = st.binary(max_size=40).map(lambda text: text.replace(b"\n", b""))
_ending = st.sampled_from([b"\r\n", b"\n"])
_all_codes = st.integers(200, 599)


@st.composite
def reply_bytes(draw: st.DrawFn, codes: st.SearchStrategy[int] = _all_codes) -> bytes:
    """One well-formed reply: any code, one to five lines, CRLF or bare LF endings,
    any text without LF (a final line may be the bare code)."""
    code = draw(codes)
    count = draw(st.integers(1, 5))
    lines = []
    for index in range(count):
        text = draw(_text)
        last = index == count - 1
        separator = b" " if last else b"-"
        if last and not text and draw(st.booleans()):
            separator = b""
        lines.append(b"%d%s%s%s" % (code, separator, text, draw(_ending)))
    return b"".join(lines)


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = draw(st.lists(st.integers(0, len(data)), max_size=30))
    return split_at(data, points)


_interesting = st.sampled_from(b"0123456789 -\r\n\t25")
_reply_ish = st.lists(
    st.one_of(_interesting.map(lambda b: bytes([b])), st.binary(max_size=4)), max_size=120
).map(b"".join)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Well-formed replies with a few bytes inserted, deleted or replaced."""
    data = bytearray(b"".join(draw(st.lists(reply_bytes(), min_size=1, max_size=4))))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.one_of(_interesting, st.integers(0, 255)))
        if action == "insert":
            data[where:where] = bytes([byte])
        elif where < len(data):
            data[where : where + 1] = b"" if action == "delete" else bytes([byte])
    return bytes(data)


_no_3xx_or_421 = st.integers(200, 599).filter(lambda code: code // 100 != 3 and code != 421)

_any_input = st.one_of(st.binary(max_size=300), _reply_ish, mutated())


# -- the model is right about the cases everyone agrees on ------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"250 ok\r\n", Outcome((Reply(250, b"ok"),), False)),
        (b"250-a\n250 b\r\n", Outcome((Reply(250, b"a\nb"),), False)),
        (b"250\r\n", Outcome((Reply(250, b""),), False)),
        (b"250 ok", Outcome((), False)),
        (b"250 ok\r\n25", Outcome((Reply(250, b"ok"),), False)),
        (b"250x\r\n", Outcome((), True)),
        (b"150 no\r\n", Outcome((), True)),
        (b"25\r\n", Outcome((), True)),
        (b"250-a\r\n251 b\r\n", Outcome((), True)),
        (b"\r\n", Outcome((), True)),
        (b"250 ok\r\nhello\r\n", Outcome((Reply(250, b"ok"),), True)),
        (b"250  spaced \t\r\r\n", Outcome((Reply(250, b"spaced"),), False)),
    ],
)
def test_model_examples(data: bytes, expected: Outcome) -> None:
    assert model(data) == expected
    assert parse([data]) == expected


# -- the parser -------------------------------------------------------------------------


@given(st.data(), _any_input)
@example(None, b"2\xb2\xb35 x\r\n")  # digits that are not ASCII digits
@example(None, b"250-" + b"x" * 9000)
def test_parser_equals_the_model_on_any_bytes_in_any_chunks(
    data: st.DataObject | None, raw: bytes
) -> None:
    chunks = [raw] if data is None else data.draw(cuts(raw))
    expected = model(raw)
    assert parse(chunks) == expected
    # Whole and a byte at a time agree too (h11's test_io style).
    assert parse([raw]) == expected
    assert parse(raw[i : i + 1] for i in range(len(raw))) == expected


@given(st.data(), st.lists(reply_bytes(), min_size=1, max_size=8), st.binary(max_size=6))
def test_well_formed_replies_are_the_model_whatever_the_chunking(
    data: st.DataObject, replies: list[bytes], tail: bytes
) -> None:
    # A tail that is not a complete line yet: the replies before it are all returned.
    tail = tail.replace(b"\n", b"")
    raw = b"".join(replies) + tail
    outcome = parse(data.draw(cuts(raw)))
    assert outcome == model(raw)
    assert not outcome.error
    assert [reply.code for reply in outcome.replies] == [int(one[:3]) for one in replies]


@given(
    st.data(),
    st.lists(reply_bytes(_no_3xx_or_421), min_size=1, max_size=6),
    st.integers(10, 60),
    st.integers(1, 5),
)
def test_limits_hold_whatever_the_chunking(
    data: st.DataObject, replies: list[bytes], max_line: int, max_lines: int
) -> None:
    raw = b"".join(replies)
    limits = {"max_line_length": max_line, "max_reply_lines": max_lines}
    expected = model(raw, max_line, max_lines)
    assert parse(data.draw(cuts(raw)), **limits) == expected
    assert drive(session(len(replies), **limits), data.draw(cuts(raw))) == expected


def test_an_unended_line_is_refused_as_soon_as_it_passes_the_limit() -> None:
    parser = ReplyParser(max_line_length=10)
    parser.feed(b"250 " + b"x" * 6)
    assert parser.next_reply() is None
    parser.feed(b"x")
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_reply()
    assert info.value.code == 500


# -- the session --------------------------------------------------------------------------


@given(st.data(), st.lists(reply_bytes(_no_3xx_or_421), min_size=1, max_size=8))
def test_a_session_returns_pipelined_replies_as_the_model(
    data: st.DataObject, replies: list[bytes]
) -> None:
    raw = b"".join(replies)
    conn = session(len(replies))
    outcome = drive(conn, data.draw(cuts(raw)))
    assert outcome == model(raw)
    assert conn.awaiting_replies == 0
    assert not conn.has_buffered_input()
    assert conn.state in (State.READY, State.TRANSACTION)


@given(st.data(), st.lists(reply_bytes(_no_3xx_or_421), min_size=2, max_size=6))
def test_a_3xx_to_mail_or_rcpt_poisons_the_session(
    data: st.DataObject, replies: list[bytes]
) -> None:
    position = data.draw(st.integers(0, len(replies) - 1))
    bad = data.draw(reply_bytes(st.integers(300, 399)))
    sent = [*replies[:position], bad, *replies[position + 1 :]]
    raw = b"".join(sent)
    conn = session(len(sent))
    outcome = drive(conn, data.draw(cuts(raw)))
    assert outcome == Outcome(model(b"".join(replies[:position])).replies, True)


@given(st.data(), st.lists(reply_bytes(_no_3xx_or_421), min_size=2, max_size=6))
def test_a_421_closes_the_session_and_nothing_after_it_counts(
    data: st.DataObject, replies: list[bytes]
) -> None:
    position = data.draw(st.integers(0, len(replies) - 1))
    sent = [*replies[:position], b"421 4.3.2 closing\r\n", *replies[position + 1 :]]
    raw = b"".join(sent)
    conn = session(len(sent))
    outcome = drive(conn, data.draw(cuts(raw)))
    before = model(b"".join(replies[:position])).replies
    assert outcome.replies == (*before, Reply(421, b"4.3.2 closing"))
    # The replies that follow the 421 answer nothing any more: an error, whichever
    # way they arrive, unless the 421 was the last reply.
    assert outcome.error is (position < len(replies) - 1)
    assert conn.state is State.CLOSED


@given(st.data(), st.lists(reply_bytes(_no_3xx_or_421), min_size=1, max_size=4), _any_input)
def test_a_session_fed_anything_raises_only_remote_protocol_errors(
    data: st.DataObject, replies: list[bytes], noise: bytes
) -> None:
    # Well-formed replies, then anything at all: the expected replies come first,
    # and what follows (more than was asked for) is refused or awaited, never
    # handed out as a reply. (The first lines of a multiline reply that nothing
    # asked for are only held, if they arrive after the last reply: the session
    # then reports them through has_buffered_input(), and whatever completes
    # them is refused.)
    raw = b"".join(replies) + noise
    conn = session(len(replies))
    outcome = drive(conn, data.draw(cuts(raw)))
    expected = model(b"".join(replies)).replies
    # Bytes that arrive with the last reply make it suspect: the session refuses it.
    assert outcome.replies == expected or (outcome.error and outcome.replies == expected[:-1])
    extra = model(noise)
    if extra.replies or extra.error:
        assert outcome.error  # a whole reply more than was asked for, or nonsense
    if noise and not outcome.error:
        assert conn.has_buffered_input()  # held, and visible to the driver
    if not noise:
        assert not outcome.error


@given(st.data(), _any_input)
def test_a_fresh_session_fed_anything_returns_at_most_the_greeting(
    data: st.DataObject, raw: bytes
) -> None:
    conn = SMTPConnection()
    outcome = drive(conn, data.draw(cuts(raw)))
    expected = model(raw)
    if not expected.replies:
        assert outcome == expected
        return
    greeting, rest = expected.replies[0], raw[expected.ends[0] :]
    if greeting.code // 100 == 3:
        assert outcome == Outcome((), True)  # a 3xx greets nobody
        return
    # Bytes that arrive with the greeting make it suspect: the session refuses it.
    assert outcome.replies == (greeting,) or (outcome.error and outcome.replies == ())
    extra = model(rest)
    if extra.replies or extra.error:
        assert outcome.error  # a whole reply that nothing asked for, or nonsense
    if rest and not outcome.error:
        assert conn.has_buffered_input()
    if not rest:
        assert not outcome.error
    assert conn.state is (State.CLOSED if greeting.code == 421 or outcome.error else State.READY)


def test_the_first_line_of_an_unsolicited_reply_is_held_then_refused() -> None:
    # Found by the long profile: a continuation line that arrives after the last
    # awaited reply is no reply yet, so it is held (and shown), not refused at once.
    conn = session(1)
    conn.receive_data(b"250 ok\r\n")
    assert conn.next_reply() == (250, b"ok")
    conn.receive_data(b"250-more\r\n")
    assert conn.next_reply() is NEED_DATA
    assert conn.has_buffered_input()
    conn.receive_data(b"250 end\r\n")
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        conn.next_reply()
    assert conn.state is State.CLOSED
