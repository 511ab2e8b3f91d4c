"""The DATA encoder and the line-ending normaliser, against a plain reference.

The reference does in three obvious steps, on the whole message at once, what the
encoder does in one pass over chunks split anywhere: every bare CR and bare LF
becomes CRLF, a last line ending is added if missing, lines starting with "." get
another one (RFC 5321 section 4.5.2), and ".\\r\\n" ends it all.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    DataEncoder,
    LineEndingNormalizer,
    LocalProtocolError,
    normalize_line_endings,
)

from ._chunking import FEEDERS, chunked, split_at


def reference_normalize(message: bytes) -> bytes:
    # The alternation tries CRLF first, so a CRLF stays one line ending.
    return re.sub(rb"\r\n|\r|\n", b"\r\n", message)


def reference_payload(message: bytes) -> bytes:
    text = reference_normalize(message)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    lines = text.split(b"\r\n")
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(stuffed) + b".\r\n"


def encode(chunks: list[bytes]) -> bytes:
    encoder = DataEncoder()
    return b"".join([*(encoder.encode(chunk) for chunk in chunks), encoder.finish()])


def normalize_streaming(chunks: list[bytes]) -> bytes:
    normalizer = LineEndingNormalizer()
    return b"".join([*(normalizer.feed(chunk) for chunk in chunks), normalizer.finish()])


def test_reference_itself() -> None:
    assert reference_payload(b"") == b".\r\n"
    assert reference_payload(b"a") == b"a\r\n.\r\n"
    assert reference_payload(b".a\n..b\r\nc.\r.") == b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n"


EXAMPLES = [
    (b"", b".\r\n"),
    (b"Subject: hi\r\n\r\nbody\r\n", b"Subject: hi\r\n\r\nbody\r\n.\r\n"),
    (b"no final line ending", b"no final line ending\r\n.\r\n"),
    (b"\r\n", b"\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"..\r\n", b"...\r\n.\r\n"),
    (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r\n.hidden\r\n", b"a\r\n..hidden\r\n.\r\n"),
    (b"not.at.start\r\n", b"not.at.start\r\n.\r\n"),
    # Bare line endings are normalised before stuffing (SMTP smuggling).
    (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\n.\r\nMAIL FROM:<x>\r\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
    (b"a\r\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r\r\n", b"a\r\n\r\n.\r\n"),
    (b"a\n\r", b"a\r\n\r\n.\r\n"),
    (b"\r", b"\r\n.\r\n"),
    (b"\n", b"\r\n.\r\n"),
    (b"\n\n", b"\r\n\r\n.\r\n"),
    (b"\r\r", b"\r\n\r\n.\r\n"),
    (b"\0\xff binary\r\n", b"\0\xff binary\r\n.\r\n"),
]


@pytest.mark.parametrize(("message", "payload"), EXAMPLES)
@pytest.mark.parametrize("feeder", sorted(FEEDERS))
def test_examples(feeder: str, message: bytes, payload: bytes) -> None:
    assert reference_payload(message) == payload
    assert encode(list(FEEDERS[feeder](message))) == payload


@pytest.mark.parametrize(("message", "payload"), EXAMPLES)
def test_examples_split_in_two_everywhere(message: bytes, payload: bytes) -> None:
    for cut in range(len(message) + 1):
        assert encode([message[:cut], message[cut:]]) == payload


def test_split_between_cr_and_lf_is_one_line_ending() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"line\r") == b"line"
    assert encoder.encode(b"\n.dot") == b"\r\n..dot"
    assert encoder.finish() == b"\r\n.\r\n"


def test_held_cr_followed_by_a_dot() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"line\r") == b"line"
    assert encoder.encode(b".x") == b"\r\n..x"
    assert encoder.finish() == b"\r\n.\r\n"


def test_dot_at_the_start_of_a_chunk_after_a_line_ending() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"line\r\n") == b"line\r\n"
    assert encoder.encode(b".") == b".."
    assert encoder.encode(b".") == b"."
    assert encoder.finish() == b"\r\n.\r\n"


def test_message_ending_in_cr_held_until_finish() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"a\r\n\r") == b"a\r\n"
    assert encoder.finish() == b"\r\n.\r\n"


def test_empty_chunks_change_nothing() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"") == b""
    assert encoder.encode(b".a") == b"..a"
    assert encoder.encode(b"") == b""
    assert encoder.encode(b"\r") == b""
    assert encoder.encode(b"") == b""
    assert encoder.encode(b".") == b"\r\n.."
    assert encoder.finish() == b"\r\n.\r\n"


def test_finish_is_final() -> None:
    encoder = DataEncoder()
    assert encoder.finish() == b".\r\n"
    with pytest.raises(LocalProtocolError):
        encoder.encode(b"more")
    with pytest.raises(LocalProtocolError):
        encoder.finish()


def test_encoders_are_independent() -> None:
    first, second = DataEncoder(), DataEncoder()
    assert first.encode(b"x") == b"x"
    assert second.encode(b".x") == b"..x"
    assert first.encode(b".y") == b".y"  # not at a line start in the first


def test_large_chunk_is_not_copied_when_clean() -> None:
    chunk = b"Subject: x\r\n\r\n" + b"0123456789abcdef\r\n" * 100_000
    encoder = DataEncoder()
    assert encoder.encode(chunk) is chunk
    assert encoder.encode(chunk) is chunk
    assert encoder.finish() == b".\r\n"


@pytest.mark.parametrize(
    "chunk",
    [b"x", b"x\r\n", b"x\r\ny", b"x.\r\n", b"\r\n", b"abc\r\ndef\r\n", b"\x00\xff"],
)
def test_clean_chunk_is_returned_as_is(chunk: bytes) -> None:
    encoder = DataEncoder()
    assert encoder.encode(chunk) is chunk
    assert normalize_line_endings(chunk) is chunk


def test_a_dot_chunk_in_the_middle_of_a_line_is_returned_as_is() -> None:
    encoder = DataEncoder()
    encoder.encode(b"no line ending yet")
    chunk = b".continues\r\n"
    assert encoder.encode(chunk) is chunk


@given(chunked(st.binary(max_size=300)))
@settings(max_examples=300, deadline=None)
def test_any_chunking_equals_the_reference(case: tuple[bytes, list[bytes]]) -> None:
    message, chunks = case
    assert encode(chunks) == reference_payload(message)


# Bytes rich in the characters that matter, so the property finds edge cases.
_tricky = st.lists(st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"a", b"\r\n.", b"\0"])).map(
    b"".join
)


@given(chunked(_tricky))
@settings(max_examples=300, deadline=None)
def test_tricky_bytes_under_any_chunking_equal_the_reference(
    case: tuple[bytes, list[bytes]],
) -> None:
    message, chunks = case
    payload = encode(chunks)
    assert payload == reference_payload(message)
    assert payload == encode(list(FEEDERS["bytewise"](message)))


@given(chunked(_tricky | st.binary(max_size=200)))
@settings(max_examples=300, deadline=None)
def test_the_only_end_of_data_is_the_last(case: tuple[bytes, list[bytes]]) -> None:
    _, chunks = case
    payload = encode(chunks)
    # The DATA command line ends in CRLF, so the payload starts at a line start.
    stream = b"DATA\r\n" + payload
    assert stream.endswith(b"\r\n.\r\n")
    assert stream.find(b"\r\n.\r\n") == len(stream) - 5
    # No bare CR or LF is left that a lenient server could take for a line end.
    assert stream.count(b"\r") == stream.count(b"\n") == stream.count(b"\r\n")
    # Hence no <LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF> ... before the final ".\r\n" either.
    body = stream[:-3]
    for ending in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r"):
        assert ending not in body


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_unchanged_chunk_is_the_same_object(data: st.DataObject) -> None:
    before = data.draw(st.lists(_tricky | st.binary(max_size=20), max_size=4), label="before")
    encoder = DataEncoder()
    previous = [encoder.encode(chunk) for chunk in before]
    at_line_start = b"".join([b"\r\n", *previous]).endswith(b"\r\n")
    held_cr = b"".join(before).endswith(b"\r")
    chunk = data.draw(_tricky | st.binary(max_size=40), label="chunk")
    needs_change = (
        held_cr
        or reference_normalize(chunk) != chunk
        or chunk.endswith(b"\r")
        or b"\r\n." in chunk
        or (at_line_start and chunk.startswith(b"."))
    )
    result = encoder.encode(chunk)
    if not needs_change:
        assert result is chunk
    else:
        assert result != chunk or chunk == b""


# -- the line-ending normaliser (BDAT bodies) ----------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        (b"", b""),
        (b"a", b"a"),
        (b"a\r\nb", b"a\r\nb"),
        (b"a\nb", b"a\r\nb"),
        (b"a\rb", b"a\r\nb"),
        (b"\r\r\n\n", b"\r\n\r\n\r\n"),
        (b"\n\r", b"\r\n\r\n"),
        (b".\n.", b".\r\n."),  # no dot-stuffing here
    ],
)
def test_normalize_line_endings(text: bytes, normal: bytes) -> None:
    assert normalize_line_endings(text) == normal
    assert normalize_streaming([text]) == normal
    assert normalize_streaming(list(FEEDERS["bytewise"](text))) == normal


def test_normalizer_holds_a_final_cr() -> None:
    normalizer = LineEndingNormalizer()
    assert normalizer.feed(b"a\r") == b"a"
    assert normalizer.feed(b"") == b""
    assert normalizer.feed(b"\n") == b"\r\n"
    assert normalizer.feed(b"b\r") == b"b"
    assert normalizer.finish() == b"\r\n"
    assert normalizer.finish() == b""


def test_normalizer_returns_a_clean_chunk_as_is() -> None:
    chunk = b"line\r\n" * 1000
    assert LineEndingNormalizer().feed(chunk) is chunk


@given(chunked(_tricky | st.binary(max_size=200)))
@settings(max_examples=300, deadline=None)
def test_streaming_normalizer_equals_the_reference(case: tuple[bytes, list[bytes]]) -> None:
    text, chunks = case
    assert normalize_line_endings(text) == reference_normalize(text)
    assert normalize_streaming(chunks) == reference_normalize(text)


@given(st.binary(max_size=100), st.lists(st.integers(0, 100), max_size=10))
@settings(max_examples=200, deadline=None)
def test_normalised_sizes_add_up(text: bytes, cuts: list[int]) -> None:
    # BDAT sizes count normalised bytes: the pieces must add up to the whole.
    normalizer = LineEndingNormalizer()
    pieces = [normalizer.feed(chunk) for chunk in split_at(text, cuts)]
    pieces.append(normalizer.finish())
    assert sum(map(len, pieces)) == len(reference_normalize(text))
