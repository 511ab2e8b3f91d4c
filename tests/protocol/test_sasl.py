"""SASL responses, byte for byte as smtplib computes them (plus UTF-8 credentials).

The expected values come from smtplib's own authobjects on an ``smtplib.SMTP``
object with ``user`` and ``password`` set, and from the published examples of
RFC 2195 (CRAM-MD5) and Google's XOAUTH2 documentation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    PASSWORD_MECHANISMS,
    RemoteProtocolError,
    cram_md5_response,
    decode_challenge,
    encode_response,
    login_response,
    plain_response,
    xoauth2_response,
)

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_CHALLENGE_B64 = b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_RESPONSE_B64 = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"


def smtplib_client(user: str, password: str) -> smtplib.SMTP:
    client = smtplib.SMTP(local_hostname="client.example")
    client.user, client.password = user, password
    return client


def smtplib_plain(user: str, password: str) -> bytes:
    return smtplib_client(user, password).auth_plain().encode("ascii")


def smtplib_login(user: str, password: str, challenge_count: int) -> bytes:
    client = smtplib_client(user, password)
    # smtplib counts the challenges in this attribute, which its stubs do not declare.
    vars(client)["_auth_challenge_count"] = challenge_count
    return client.auth_login(b"VXNlcm5hbWU6").encode("ascii")


def smtplib_cram_md5(user: str, password: str, challenge: bytes) -> bytes:
    response = smtplib_client(user, password).auth_cram_md5(challenge)
    assert response is not None
    return response.encode("ascii")


def smtplib_wire(response: bytes) -> str:
    """How smtplib base64-encodes a response for the AUTH line."""
    return base64.b64encode(response).decode("ascii")


ASCII_CREDENTIALS = [
    ("user", "password"),
    ("tim", "tanstaaftanstaaf"),
    ("user@example.com", "p@ss w0rd with spaces"),
    ("", ""),
    ("u", "a very long password " * 20),
]


# -- PLAIN ---------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), ASCII_CREDENTIALS)
def test_plain_as_smtplib(user: str, password: str) -> None:
    assert plain_response(user, password) == smtplib_plain(user, password)
    assert plain_response(user, password) == b"\0" + user.encode() + b"\0" + password.encode()


def test_plain_known_value() -> None:
    assert encode_response(plain_response("tim", "tanstaaf"), initial=True) == (
        "AHRpbQB0YW5zdGFhZg=="
    )


def test_plain_with_authzid() -> None:
    assert plain_response("tim", "secret", "admin") == b"admin\0tim\0secret"
    assert plain_response("tim", "secret", authzid="") == b"\0tim\0secret"


def test_plain_utf8() -> None:
    # RFC 4616 section 2: UTF-8. smtplib refuses these with UnicodeEncodeError.
    assert plain_response("jürgen", "pässwörd") == b"\0j\xc3\xbcrgen\0p\xc3\xa4ssw\xc3\xb6rd"
    assert plain_response("用户", "密码") == "\0用户\0密码".encode()
    with pytest.raises(UnicodeEncodeError):
        smtplib_plain("jürgen", "pässwörd")


# -- LOGIN ---------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), ASCII_CREDENTIALS)
@pytest.mark.parametrize("challenge_number", [1, 2, 3, 4])
def test_login_as_smtplib(user: str, password: str, challenge_number: int) -> None:
    assert login_response(user, password, challenge_number) == smtplib_login(
        user, password, challenge_number
    )


def test_login_answers_by_position() -> None:
    assert login_response("tim", "secret", 1) == b"tim"
    assert login_response("tim", "secret", 2) == b"secret"
    assert login_response("tim", "secret", 3) == b"secret"


def test_login_utf8() -> None:
    assert login_response("jürgen", "pässwörd", 1) == "jürgen".encode()
    assert login_response("jürgen", "pässwörd", 2) == "pässwörd".encode()


# -- CRAM-MD5 ------------------------------------------------------------------


def test_cram_md5_rfc2195_example() -> None:
    response = cram_md5_response("tim", "tanstaaftanstaaf", RFC2195_CHALLENGE)
    assert response == b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert response == smtplib_cram_md5("tim", "tanstaaftanstaaf", RFC2195_CHALLENGE)
    assert decode_challenge(RFC2195_CHALLENGE_B64) == RFC2195_CHALLENGE
    assert encode_response(response) == RFC2195_RESPONSE_B64


@pytest.mark.parametrize(("user", "password"), ASCII_CREDENTIALS)
@pytest.mark.parametrize("challenge", [b"", b"<1.2@host>", bytes(range(256))])
def test_cram_md5_as_smtplib(user: str, password: str, challenge: bytes) -> None:
    assert cram_md5_response(user, password, challenge) == smtplib_cram_md5(
        user, password, challenge
    )


def test_cram_md5_utf8() -> None:
    digest = hmac.new("pässwörd".encode(), b"<1.2@host>", hashlib.md5).hexdigest()
    assert cram_md5_response("jürgen", "pässwörd", b"<1.2@host>") == (
        "jürgen ".encode() + digest.encode()
    )
    with pytest.raises(UnicodeEncodeError):
        smtplib_cram_md5("jürgen", "pässwörd", b"<1.2@host>")


# -- XOAUTH2 -------------------------------------------------------------------


def test_xoauth2_format() -> None:
    assert xoauth2_response("someuser@example.com", "ya29.token") == (
        b"user=someuser@example.com\x01auth=Bearer ya29.token\x01\x01"
    )


def test_xoauth2_googles_example() -> None:
    response = xoauth2_response(
        "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    )
    assert encode_response(response, initial=True) == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr"
        "QmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


def test_xoauth2_utf8() -> None:
    assert xoauth2_response("jürgen@example.com", "t") == (
        "user=jürgen@example.com\x01auth=Bearer t\x01\x01".encode()
    )


# -- base64 on the wire --------------------------------------------------------


def test_encode_response() -> None:
    assert encode_response(b"", initial=True) == "="  # RFC 4954 section 4
    assert encode_response(b"") == ""
    assert encode_response(b"", initial=False) == ""
    assert encode_response(b"\0tim\0tanstaaf") == "AHRpbQB0YW5zdGFhZg=="
    assert encode_response(b"\0tim\0tanstaaf", initial=True) == "AHRpbQB0YW5zdGFhZg=="
    assert encode_response(b"tim") == "dGlt"


def test_encode_response_has_no_line_breaks() -> None:
    # Base64 for an AUTH line must stay on that line, however long it is.
    encoded = encode_response(b"x" * 1000)
    assert "\n" not in encoded
    assert "\r" not in encoded
    assert base64.b64decode(encoded, validate=True) == b"x" * 1000


@given(st.binary(max_size=300), st.booleans())
@settings(max_examples=200, deadline=None)
def test_encode_response_as_smtplib(data: bytes, initial: bool) -> None:
    encoded = encode_response(data, initial=initial)
    if initial and not data:
        assert encoded == "="
    else:
        assert encoded == smtplib_wire(data)
        assert base64.b64decode(encoded, validate=True) == data


def test_decode_challenge() -> None:
    assert decode_challenge(b"VXNlcm5hbWU6") == b"Username:"
    assert decode_challenge(b"UGFzc3dvcmQ6") == b"Password:"
    assert decode_challenge(b"") == b""
    assert decode_challenge(b"dGlt\r\n") == b"tim"
    # Lenient like smtplib's base64.decodebytes: stray characters are skipped.
    assert decode_challenge(b"dG#lt") == b"tim"
    assert decode_challenge(b"=") == b""


@pytest.mark.parametrize("garbage", [b"abc", b"a", b"dGltd", b"dGlt\r\nd"])
def test_decode_challenge_garbage_is_the_servers_error(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_challenge(garbage)


@given(st.binary(max_size=100))
@settings(max_examples=200, deadline=None)
def test_decode_challenge_round_trip(data: bytes) -> None:
    assert decode_challenge(base64.b64encode(data)) == data
    assert decode_challenge(encode_response(data).encode()) == data


@given(st.binary(max_size=60) | st.text("ABCabc+/=0189 \n-_*", max_size=30).map(str.encode))
@settings(max_examples=300, deadline=None)
def test_decode_challenge_as_smtplib(text: bytes) -> None:
    # smtplib decodes challenges with base64.decodebytes; where that fails,
    # the core raises its own error instead of binascii's.
    try:
        expected = base64.decodebytes(text)
    except ValueError:
        with pytest.raises(RemoteProtocolError):
            decode_challenge(text)
    else:
        assert decode_challenge(text) == expected


# -- properties against smtplib -------------------------------------------------

_ascii = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=30)
_unicode = st.text(st.characters(codec="utf-8"), max_size=20)


@given(_ascii, _ascii, st.binary(max_size=64), st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_ascii_credentials_as_smtplib(
    user: str, password: str, challenge: bytes, challenge_number: int
) -> None:
    assert plain_response(user, password) == smtplib_plain(user, password)
    assert login_response(user, password, challenge_number) == smtplib_login(
        user, password, challenge_number
    )
    assert cram_md5_response(user, password, challenge) == smtplib_cram_md5(
        user, password, challenge
    )


@given(_unicode, _unicode, st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_any_credentials_are_utf8(user: str, password: str, challenge: bytes) -> None:
    if "\0" in user + password:
        with pytest.raises(ValueError, match="NUL"):
            plain_response(user, password)
    else:
        plain = b"\0" + user.encode() + b"\0" + password.encode()
        assert plain_response(user, password) == plain
    assert login_response(user, password, 1) == user.encode()
    assert login_response(user, password, 2) == password.encode()
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    assert cram_md5_response(user, password, challenge) == f"{user} {digest}".encode()


def test_password_mechanisms_strongest_first() -> None:
    # API.md: login() tries the password mechanisms strongest first, ending with
    # PLAIN then LOGIN; token mechanisms are never among them.
    mechanisms = list(PASSWORD_MECHANISMS)
    assert mechanisms[-2:] == ["PLAIN", "LOGIN"]
    assert "CRAM-MD5" in mechanisms
    assert mechanisms.index("CRAM-MD5") < mechanisms.index("PLAIN")
    assert "XOAUTH2" not in mechanisms
    assert "OAUTHBEARER" not in mechanisms
    assert all(mechanism == mechanism.upper() for mechanism in mechanisms)
