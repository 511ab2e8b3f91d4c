"""Fuzzing the body encoders of the core: DATA (dot-stuffing) and BDAT (sizes).

For any message bytes cut into any chunks (empty ones included, cuts between CR
and LF and just before a dot):

- DATA: the payload holds no bare CR and no bare LF; the only end-of-data sequence
  (CRLF "." CRLF, counting the CRLF that ends the DATA command line) is the final
  one; and un-stuffing it as a server does (drop the final ".\\r\\n", then one
  leading dot from each line that starts with a dot) gives back the input with
  its line endings normalised, plus the CRLF that ends an unended last line. The
  payload does not depend on where the chunks were cut.
- BDAT: every chunk is exactly as long as its command line says, so a server can
  never read message bytes as a command; the chunks joined are the normalised
  input, and hold no bare CR or LF.

The model of normalisation is written from API.md ("a bare CR or bare LF becomes
CRLF"), not from ``normalize_line_endings``: a regular expression that takes CRLF
first and then a lone CR or LF.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aiosmtp.protocol import (
    NEED_DATA,
    Command,
    DataEncoder,
    LineEndingNormalizer,
    LocalProtocolError,
    SMTPConnection,
    State,
    normalize_line_endings,
)

from .. import hypothesis_profiles  # noqa: F401  (registers and loads the profiles)

END_OF_DATA = b"\r\n.\r\n"

# -- the models ---------------------------------------------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")


def normalised(data: bytes) -> bytes:
    """Every line ending (CRLF, or a CR or an LF on its own) as CRLF."""
    return _LINE_END.sub(b"\r\n", data)


def stored(data: bytes) -> bytes:
    """What a server must store for ``data``: normalised, ending with a line ending."""
    data = normalised(data)
    return data + b"\r\n" if data and not data.endswith(b"\r\n") else data


def unstuffed(payload: bytes) -> bytes:
    """A server's reading of a DATA payload (RFC 5321 section 4.5.2)."""
    assert payload.endswith(b".\r\n")
    body = payload[: -len(b".\r\n")]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def has_bare_line_ends(data: bytes) -> bool:
    return not (data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"))


def assert_clean_data_payload(payload: bytes) -> None:
    """No bare CR or LF, and the only end of data at the very end."""
    assert not has_bare_line_ends(payload), payload
    wire = b"\r\n" + payload  # the DATA command line's CRLF comes first
    assert wire.find(END_OF_DATA) == len(wire) - len(END_OF_DATA), payload
    # Every line that starts with a dot is stuffed, but the last.
    lines = payload.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[-2] == b"."
    assert all(line[:1] != b"." or line[:2] == b".." for line in lines[:-2]), payload


# -- strategies -----------------------------------------------------------------------------

_SMUGGLERS = [b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]
_pieces = st.sampled_from(
    [
        b"\r",
        b"\n",
        b".",
        b"..",
        b"\r\n",
        b"\n.",
        b"\r.",
        b".\r",
        b".\n",
        b"a",
        b" ",
        b"\0",
        *_SMUGGLERS,
    ]
)
_tricky = st.lists(_pieces, max_size=40).map(b"".join)
_messages = st.one_of(_tricky, st.binary(max_size=300), st.text(max_size=80).map(str.encode))


@st.composite
def chunks_of(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut anywhere, repeated cuts giving empty chunks."""
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *points, len(data)]
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


# -- the models agree with the cases everyone agrees on --------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", b""),
        (b"a\r\nb", b"a\r\nb"),
        (b"a\nb", b"a\r\nb"),
        (b"a\rb", b"a\r\nb"),
        (b"\r\r\n", b"\r\n\r\n"),
        (b"\n\r", b"\r\n\r\n"),
        (b"\r\n\n", b"\r\n\r\n"),
        (b"\n.\n", b"\r\n.\r\n"),
    ],
)
def test_normalisation_model(data: bytes, expected: bytes) -> None:
    assert normalised(data) == expected
    assert normalize_line_endings(data) == expected


def test_unstuffing_model() -> None:
    assert unstuffed(b"..a\r\nb\r\n...\r\n.\r\n") == b".a\r\nb\r\n..\r\n"
    assert unstuffed(b".\r\n") == b""


# -- normalisation ----------------------------------------------------------------------------


@given(_messages)
@example(b"\r" * 5 + b"\n" * 5)
def test_normalize_line_endings_equals_the_model(data: bytes) -> None:
    assert normalize_line_endings(data) == normalised(data)


@given(st.data(), _messages)
def test_streaming_normaliser_equals_the_model_in_any_chunks(
    data: st.DataObject, message: bytes
) -> None:
    normaliser = LineEndingNormalizer()
    pieces = [normaliser.feed(chunk) for chunk in data.draw(chunks_of(message))]
    pieces.append(normaliser.finish())
    assert b"".join(pieces) == normalised(message)
    # Each piece is itself clean, so each BDAT chunk made of one is.
    for piece in pieces:
        assert not has_bare_line_ends(piece), piece


# -- DATA ---------------------------------------------------------------------------------


def encode(chunks: Iterable[bytes]) -> bytes:
    encoder = DataEncoder()
    return b"".join([*(encoder.encode(chunk) for chunk in chunks), encoder.finish()])


@given(st.data(), _messages)
@example(None, b"\n.\n")
@example(None, b".")
@example(None, b"\r")
@example(None, b"")
def test_data_payload_is_clean_and_decodes_to_the_input(
    data: st.DataObject | None, message: bytes
) -> None:
    chunks = [message] if data is None else data.draw(chunks_of(message))
    payload = encode(chunks)
    assert_clean_data_payload(payload)
    assert unstuffed(payload) == stored(message)
    assert payload == encode([message])  # wherever the cuts were


def state_of(conn: SMTPConnection) -> State:
    # A call, so that mypy does not keep the state narrowed across end_data().
    return conn.state


@given(st.data(), _messages)
def test_data_through_a_session_after_354(data: st.DataObject, message: bytes) -> None:
    conn = SMTPConnection()
    conn.receive_data(b"220 hi\r\n")
    assert conn.next_reply() == (220, b"hi")
    wire = conn.send_many(
        [
            Command.make("MAIL", "FROM:<a@example.org>"),
            Command.make("RCPT", "TO:<b@example.org>"),
            Command.make("DATA"),
        ]
    )
    assert wire == b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    while conn.next_reply() is not NEED_DATA:
        pass
    assert conn.state is State.DATA
    payload = b"".join(conn.send_data(chunk) for chunk in data.draw(chunks_of(message)))
    payload += conn.end_data()
    assert_clean_data_payload(payload)
    assert unstuffed(payload) == stored(message)
    assert state_of(conn) is State.READY  # left the data phase with the final dot
    assert conn.awaiting_replies == 1
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"more")


# -- BDAT -----------------------------------------------------------------------------------

_BDAT = re.compile(rb"BDAT (0|[1-9][0-9]*)( LAST)?\r\n")


def read_bdat(wire: bytes) -> list[tuple[bytes, bool]]:
    """A server's reading of a stream of BDAT commands: (chunk, last) pairs."""
    chunks: list[tuple[bytes, bool]] = []
    position = 0
    while position < len(wire):
        match = _BDAT.match(wire, position)
        assert match is not None, wire[position : position + 40]
        size = int(match[1])
        start = match.end()
        assert start + size <= len(wire)
        chunks.append((wire[start : start + size], bool(match[2])))
        position = start + size
    return chunks


@given(st.data(), _messages)
@example(None, b"a\r")
@example(None, b"BDAT 5\r\n")
def test_bdat_chunks_have_the_sizes_they_declare(
    data: st.DataObject | None, message: bytes
) -> None:
    chunks = [message] if data is None else data.draw(chunks_of(message))
    conn = SMTPConnection()
    conn.receive_data(b"220 hi\r\n")
    assert conn.next_reply() == (220, b"hi")
    conn.send_many([Command.make("MAIL", "FROM:<a@example.org> BODY=8BITMIME")])
    conn.receive_data(b"250 ok\r\n")
    assert conn.next_reply() == (250, b"ok")
    normaliser = LineEndingNormalizer()
    wire = b""
    for chunk in chunks:
        piece = normaliser.feed(chunk)
        wire += conn.send_bdat(len(piece), last=False) + piece
        conn.receive_data(b"250 chunk ok\r\n")
        assert conn.next_reply() == (250, b"chunk ok")
    tail = normaliser.finish()
    wire += conn.send_bdat(len(tail), last=True) + tail
    read = read_bdat(wire)
    assert [last for _, last in read] == [False] * len(chunks) + [True]
    body = b"".join(chunk for chunk, _ in read)
    assert body == normalised(message)
    assert not has_bare_line_ends(body)
    conn.receive_data(b"250 queued\r\n")
    assert conn.next_reply() == (250, b"queued")
    assert conn.state is State.READY


def test_bdat_refuses_a_negative_size() -> None:
    conn = SMTPConnection()
    conn.receive_data(b"220 hi\r\n")
    conn.next_reply()
    with pytest.raises(LocalProtocolError):
        conn.send_bdat(-1, last=True)
    assert conn.awaiting_replies == 0
