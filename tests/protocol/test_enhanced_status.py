"""Enhanced status codes (RFC 3463, RFC 2034) on replies and on the exceptions.

Decision (documented on ``Reply.enhanced_status``): a code is read whenever the
text opens with one that follows RFC 3463's grammar and whose class is the reply
code's first digit, whether or not the server advertised ENHANCEDSTATUSCODES; a
reply is a value without a session, and servers send such codes in greetings and
to HELO sessions too. The class check is what keeps chance look-alikes out.
"""

from __future__ import annotations

import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiosmtp
from aiosmtp.protocol import Reply, ReplyParser


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        (250, b"2.1.5 Recipient OK", "2.1.5"),
        (550, b"5.1.1 No such user", "5.1.1"),
        (451, b"4.3.0 Try later", "4.3.0"),
        (221, b"2.0.0", "2.0.0"),
        (250, b"2.999.999 widest", "2.999.999"),
        (250, b"2.0.0\nsecond line", "2.0.0"),
        # The class must be the reply code's first digit (RFC 3463 section 2).
        (250, b"5.7.8 Authentication credentials invalid", None),
        (550, b"2.0.0 says the opposite", None),
        (421, b"5.0.0 mismatch", None),
        (354, b"3.0.0 class 3 does not exist", None),
        (334, b"2.0.0 challenge text", None),
        # Grammar.
        (250, b"2.1000.1 subject over 3 digits", None),
        (250, b"2.1.1000 detail over 3 digits", None),
        (250, b"2.01.5 leading zeros are still digits", "2.01.5"),
        (250, b"2.1.5, punctuation glued on", None),
        (250, b"2.1.5\tno tab separator", None),
        (250, b"Ok 2.1.5 not at the start", None),
        (0, b"2.0.0 no reply code", None),
        (-1, b"5.0.0 unparseable", None),
    ],
)
def test_reply_enhanced_status(code: int, message: bytes, status: str | None) -> None:
    assert Reply(code, message).enhanced_status == status


@given(
    st.sampled_from([2, 4, 5]),
    st.integers(0, 99),
    st.sampled_from([2, 4, 5]),
    st.integers(0, 999),
    st.integers(0, 999),
)
@settings(max_examples=200, deadline=None)
def test_status_read_exactly_when_the_class_matches(
    code_class: int, rest: int, status_class: int, subject: int, detail: int
) -> None:
    status = f"{status_class}.{subject}.{detail}"
    reply = Reply(code_class * 100 + rest, f"{status} text".encode())
    assert reply.enhanced_status == (status if code_class == status_class else None)


def test_status_from_a_parsed_multiline_reply() -> None:
    parser = ReplyParser()
    parser.feed(b"550-5.1.1 first line\r\n550-5.1.1 second\r\n550 5.1.1 last\r\n")
    reply = parser.next_reply()
    assert isinstance(reply, Reply)
    assert reply.enhanced_status == "5.1.1"


# -- the exceptions --------------------------------------------------------------------------

RESPONSE_EXCEPTIONS = [
    (aiosmtp.SMTPResponseException, ()),
    (aiosmtp.SMTPSenderRefused, ("a@x.org",)),
    (aiosmtp.SMTPDataError, ()),
    (aiosmtp.SMTPConnectError, ()),
    (aiosmtp.SMTPHeloError, ()),
    (aiosmtp.SMTPAuthenticationError, ()),
]


@pytest.mark.parametrize(("cls", "extra"), RESPONSE_EXCEPTIONS, ids=str)
def test_every_response_exception_carries_status_and_reply(
    cls: type[aiosmtp.SMTPResponseException], extra: tuple[str, ...]
) -> None:
    exc = cls(554, b"5.7.1 Relay access denied", *extra)
    assert isinstance(exc, smtplib.SMTPResponseException)
    assert exc.enhanced_status == "5.7.1"
    assert exc.reply == (554, b"5.7.1 Relay access denied")
    assert isinstance(exc.reply, Reply)
    # smtplib's attributes are untouched.
    assert (exc.smtp_code, exc.smtp_error) == (554, b"5.7.1 Relay access denied")
    plain = cls(554, b"Relay access denied", *extra)
    assert plain.enhanced_status is None
    assert plain.reply == (554, b"Relay access denied")


@pytest.mark.parametrize(
    ("code", "error", "status", "reply"),
    [
        (550, "5.1.1 text given as str", "5.1.1", (550, b"5.1.1 text given as str")),
        (451, b"5.1.1 class mismatch", None, (451, b"5.1.1 class mismatch")),
        (-1, "reply could not be parsed", None, None),
        (500, "reply line too long", None, (500, b"reply line too long")),
    ],
)
def test_exception_status_edge_cases(
    code: int, error: str | bytes, status: str | None, reply: tuple[int, bytes] | None
) -> None:
    exc = aiosmtp.SMTPResponseException(code, error)
    assert exc.enhanced_status == status
    assert exc.reply == reply


def test_refusal_dicts_keep_smtplibs_shape() -> None:
    refused = {"b@x.org": (550, b"5.1.1 No such user")}
    exc = aiosmtp.SMTPRecipientsRefused(refused)
    assert exc.recipients == refused
    (value,) = exc.recipients.values()
    assert type(value) is tuple
    # The status of a refused recipient is one Reply() away.
    assert Reply(*value).enhanced_status == "5.1.1"
