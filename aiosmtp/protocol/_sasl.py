"""SASL mechanisms for SMTP AUTH (RFC 4954) as pure functions of their inputs.

The client drives the exchange; these functions only compute what to say. User
names and passwords are UTF-8 for every mechanism (RFC 4616 section 2), where
smtplib would refuse non-ASCII ones. Results are ``bytes`` before base64.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from ._errors import RemoteProtocolError

__all__ = [
    "PASSWORD_MECHANISMS",
    "cram_md5_response",
    "decode_challenge",
    "encode_response",
    "login_response",
    "plain_response",
    "xoauth2_response",
]

#: The mechanisms login() may use, strongest first.
PASSWORD_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


def plain_response(user: str, password: str, authzid: str = "") -> bytes:
    """PLAIN (RFC 4616): authzid NUL authcid NUL passwd.

    NUL separates the fields, so none may hold one (RFC 4616 section 2): such a
    credential is refused before anything is sent rather than cut apart.
    """
    fields = (("authorization identity", authzid), ("user name", user), ("password", password))
    for name, value in fields:
        if "\0" in value:
            raise ValueError(f"the {name} contains a NUL character, which AUTH PLAIN cannot carry")
    return f"{authzid}\0{user}\0{password}".encode()


def login_response(user: str, password: str, challenge_number: int) -> bytes:
    """LOGIN: the user name first, the password for every later challenge.

    ``challenge_number`` counts the challenges so far, 1 for the first; smtplib
    answers by position rather than by the prompt's text, and so do we, because
    servers word the prompts differently.
    """
    return (user if challenge_number < 2 else password).encode()


def cram_md5_response(user: str, password: str, challenge: bytes) -> bytes:
    """CRAM-MD5 (RFC 2195): the user name and the hex HMAC-MD5 of the challenge."""
    digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
    return f"{user} {digest}".encode()


def xoauth2_response(user: str, token: str) -> bytes:
    """XOAUTH2, as Google and Microsoft define it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def encode_response(data: bytes, *, initial: bool = False) -> str:
    """Base64 for an AUTH line.

    An empty initial response is "=" (RFC 4954 section 4), which tells it apart from
    no initial response at all; an empty answer to a challenge is an empty line.
    """
    if not data and initial:
        return "="
    return base64.b64encode(data).decode("ascii")


def decode_challenge(text: bytes) -> bytes:
    """Decode a 334 challenge; garbage there is the server's error."""
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(f"AUTH challenge is not base64: {text[:80]!r}") from exc
