"""Reply: smtplib's (code, message) tuple with a few read-only helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import Reply


def test_reply_is_a_plain_tuple_to_smtplib_users() -> None:
    reply = Reply(250, b"2.0.0 OK")
    plain = (250, b"2.0.0 OK")
    assert reply == plain
    assert plain == reply
    assert reply != (250, b"2.0.0 ok")
    assert reply != (251, b"2.0.0 OK")
    assert hash(reply) == hash((250, b"2.0.0 OK"))
    code, message = reply
    assert (code, message) == (250, b"2.0.0 OK")
    assert reply[0] == reply.code == 250
    assert reply[1] == reply.message == b"2.0.0 OK"
    assert isinstance(reply, tuple)
    assert len(reply) == 2
    assert {(250, b"2.0.0 OK"): "found"}[reply] == "found"


def test_reply_fields_are_read_only() -> None:
    reply = Reply(250, b"OK")
    with pytest.raises(AttributeError):
        reply.code = 550  # type: ignore[misc]
    with pytest.raises(AttributeError):
        reply.text = "nope"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (b"", ""),
        (b"OK", "OK"),
        (b"line one\nline two", "line one\nline two"),
        ("Grüße".encode(), "Grüße"),
        (b"bad \xff byte", "bad \ufffd byte"),
        (b"\xc3", "\ufffd"),
    ],
)
def test_text_is_decoded_leniently(message: bytes, text: str) -> None:
    assert Reply(250, message).text == text


@given(st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_text_never_fails(message: bytes) -> None:
    assert Reply(250, message).text == message.decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (b"2.1.5 Recipient OK", "2.1.5"),
        (b"2.0.0", "2.0.0"),
        (b"5.7.8 Authentication credentials invalid", "5.7.8"),
        (b"4.4.2 Timeout", "4.4.2"),
        (b"2.123.456 widest allowed", "2.123.456"),
        (b"2.0.0\nsecond line", "2.0.0"),
        (b"2.0.0 first\n5.0.0 second", "2.0.0"),
        (b"OK", None),
        (b"", None),
        (b"250 2.1.5 the code is not part of the text", None),
        (b"3.0.0 class 3 does not exist", None),
        (b"1.0.0 nor does class 1", None),
        (b"2.1 two parts", None),
        (b"2.1.5.6 four parts", None),
        (b"2..5 empty subject", None),
        (b"2.1. empty detail", None),
        (b"2.1234.5 subject too long", None),
        (b"2.1.5678 detail too long", None),
        (b"2.x.5 not digits", None),
        (b"2.1.5x glued text", None),
        (b"22.1.5 class too long", None),
        (b"second line\n2.1.5 only", None),
        (b"2.\xd9\xa1.5 non-ASCII digit", None),
    ],
)
def test_enhanced_status(message: bytes, status: str | None) -> None:
    # The class must match the reply code's first digit (RFC 3463 section 2):
    # each status is read from a reply of its own class.
    code = int(status[0]) * 100 + 50 if status is not None else 250
    assert Reply(code, message).enhanced_status == status
    if status is not None and status[0] != "2":
        assert Reply(250, message).enhanced_status is None


@given(st.binary(max_size=40))
@settings(max_examples=200, deadline=None)
def test_enhanced_status_is_none_or_well_formed(message: bytes) -> None:
    status = Reply(550, message).enhanced_status
    if status is not None:
        klass, subject, detail = status.split(".")
        assert klass in {"2", "4", "5"}
        assert 1 <= len(subject) <= 3
        assert subject.isascii()
        assert subject.isdigit()
        assert 1 <= len(detail) <= 3
        assert detail.isascii()
        assert detail.isdigit()
        assert message.startswith(status.encode())


@pytest.mark.parametrize(
    ("code", "positive", "intermediate", "transient", "permanent"),
    [
        (200, True, False, False, False),
        (250, True, False, False, False),
        (299, True, False, False, False),
        (334, False, True, False, False),
        (354, False, True, False, False),
        (400, False, False, True, False),
        (421, False, False, True, False),
        (450, False, False, True, False),
        (499, False, False, True, False),
        (500, False, False, False, True),
        (550, False, False, False, True),
        (599, False, False, False, True),
        (-1, False, False, False, False),
        (199, False, False, False, False),
        (600, False, False, False, False),
    ],
)
def test_classes(
    code: int, positive: bool, intermediate: bool, transient: bool, permanent: bool
) -> None:
    reply = Reply(code, b"")
    assert reply.is_positive is positive
    assert reply.is_intermediate is intermediate
    assert reply.is_transient is transient
    assert reply.is_permanent is permanent
