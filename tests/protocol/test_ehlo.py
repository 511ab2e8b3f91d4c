"""parse_ehlo_features: the same dict smtplib builds from a 250 EHLO reply.

The reference is smtplib's own parser: ``smtplib.SMTP.ehlo`` is driven with its
command output swallowed and its reply read from the test, and ``esmtp_features``
is then what smtplib makes of that reply.
"""

from __future__ import annotations

import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import Reply, ReplyParser, parse_ehlo_features


class _ScriptedSMTP(smtplib.SMTP):
    """smtplib.SMTP with no socket: every reply is the one it was given."""

    def __init__(self, reply: tuple[int, bytes]) -> None:
        super().__init__(local_hostname="client.example")
        self._scripted = reply
        self.sent: list[tuple[str, str]] = []

    def putcmd(self, cmd: str, args: str = "") -> None:
        self.sent.append((cmd, args))

    def getreply(self) -> tuple[int, bytes]:
        return self._scripted


def smtplib_features(message: bytes) -> dict[str, str]:
    client = _ScriptedSMTP((250, message))
    assert client.ehlo() == (250, message)
    assert client.sent == [("ehlo", "client.example")]
    return client.esmtp_features


def test_reference_really_runs_smtplibs_parser() -> None:
    # Guards the reference itself: smtplib must see and parse the reply.
    assert smtplib_features(b"mx\nSIZE 100\nAUTH=LOGIN") == {"size": "100", "auth": " LOGIN"}


EXAMPLES = [
    b"mail.example.com",
    b"",
    b"mail.example.com Hello client [192.0.2.1]\nPIPELINING\nSIZE 10240000\nVRFY\nETRN"
    b"\nSTARTTLS\nAUTH PLAIN LOGIN\nENHANCEDSTATUSCODES\n8BITMIME\nDSN\nSMTPUTF8\nCHUNKING",
    # Outlook / Exchange style, with old-style AUTH= next to the RFC form.
    b"smtp.office365.com Hello\nSIZE 157286400\nPIPELINING\nAUTH LOGIN XOAUTH2\nAUTH=LOGIN",
    b"mx\nAUTH=PLAIN LOGIN CRAM-MD5",
    b"mx\nauth=plain",
    b"mx\nAuth=Login\nAUTH CRAM-MD5\nAUTH=PLAIN",
    b"mx\nAUTH=",
    b"mx\nAUTH",
    b"mx\nAUTH \nAUTH  PLAIN  ",
    b"mx\nAUTH= CRAM-MD5  ",
    b"mx\nAUTHX=PLAIN",
    b"mx\nAUTH-X PLAIN",
    # Keywords: case, odd characters, duplicates (the last wins), no space.
    b"mx\nsize 1000\nSIZE 2000",
    b"mx\nX-EXPS GSSAPI NTLM\nX-LINK2STATE",
    b"mx\nSIZE=1000",
    b"mx\n8BITMIME\tOK",
    b"mx\nXFOO:bar baz",
    b"mx\nDSN  ",
    b"mx\n  leading space\n-dash first\n_underscore\n\xe9t\xe9",
    b"mx\n\n\nPIPELINING\n",
    b"mx\r\nSIZE 1\r",
    b"mx\nSIZE \xff\xfe",
    b"mx\nSMTPUTF8\nsmtputf8",
    b"mx\nAUTH=\xe9",
    b"mx\nA\nB-\nC- x",
]


@pytest.mark.parametrize("message", EXAMPLES)
def test_equals_smtplib(message: bytes) -> None:
    assert parse_ehlo_features(message) == smtplib_features(message)


def test_typical_reply() -> None:
    assert parse_ehlo_features(EXAMPLES[2]) == {
        "pipelining": "",
        "size": "10240000",
        "vrfy": "",
        "etrn": "",
        "starttls": "",
        "auth": " PLAIN LOGIN",
        "enhancedstatuscodes": "",
        "8bitmime": "",
        "dsn": "",
        "smtputf8": "",
        "chunking": "",
    }


def test_auth_lines_accumulate_in_order() -> None:
    features = parse_ehlo_features(b"mx\nAUTH LOGIN XOAUTH2\nAUTH=LOGIN\nAUTH CRAM-MD5")
    assert features == {"auth": " LOGIN XOAUTH2 LOGIN CRAM-MD5"}
    assert features["auth"].split() == ["LOGIN", "XOAUTH2", "LOGIN", "CRAM-MD5"]


def test_only_old_style_auth() -> None:
    assert parse_ehlo_features(b"mx\nAUTH=PLAIN LOGIN") == {"auth": " PLAIN LOGIN"}


def test_greeting_line_is_not_a_feature() -> None:
    assert parse_ehlo_features(b"PIPELINING") == {}
    assert parse_ehlo_features(b"SIZE 100\nSIZE 200") == {"size": "200"}


def test_from_a_parsed_reply() -> None:
    parser = ReplyParser()
    parser.feed(
        b"250-mx.example.com at your service\r\n250-SIZE 35882577\r\n"
        b"250-AUTH LOGIN PLAIN XOAUTH2\r\n250-AUTH=LOGIN PLAIN\r\n250 SMTPUTF8\r\n"
    )
    reply = parser.next_reply()
    assert isinstance(reply, Reply)
    assert parse_ehlo_features(reply.message) == {
        "size": "35882577",
        "auth": " LOGIN PLAIN XOAUTH2 LOGIN PLAIN",
        "smtputf8": "",
    }
    assert parse_ehlo_features(reply.message) == smtplib_features(reply.message)


# -- properties ----------------------------------------------------------------

_keyword_lines = st.builds(
    lambda keyword, gap, params: keyword + gap + params,
    st.sampled_from(
        [
            *(b"AUTH", b"auth", b"Auth", b"SIZE", b"size", b"8BITMIME", b"X-EXPS", b"A-"),
            *(b"-X", b"PIPELINING", b"STARTTLS", b"", b"AUTHX", b"_X", b"\xe9X", b"X\xe9"),
        ]
    ),
    st.sampled_from([b"", b" ", b"  ", b"=", b"\t", b" = ", b":", b"\r"]),
    st.binary(max_size=12).filter(lambda params: b"\n" not in params),
)

_ehlo_messages = st.one_of(
    st.lists(_keyword_lines, max_size=10).map(lambda lines: b"\n".join([b"mx", *lines])),
    st.binary(max_size=120),
    st.text(max_size=60).map(lambda text: text.encode("utf-8")),
)


@given(_ehlo_messages)
@settings(max_examples=400, deadline=None)
def test_equals_smtplib_on_anything(message: bytes) -> None:
    assert parse_ehlo_features(message) == smtplib_features(message)
