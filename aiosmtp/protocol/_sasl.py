"""SASL mechanisms for SMTP AUTH (RFC 4954) as pure functions of their inputs.

The client drives the exchange; these functions only compute what to say. User
names and passwords are UTF-8 for every mechanism (RFC 4616 section 2), where
smtplib would refuse non-ASCII ones. Results are ``bytes`` before base64.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from ._errors import LocalProtocolError, RemoteProtocolError
from ._scram import SCRAM_MECHANISMS, escape_saslname

__all__ = [
    "OAUTHBEARER_ERROR_ACK",
    "OAUTH_MECHANISMS",
    "PASSWORD_MECHANISMS",
    "CredentialError",
    "choose_password_mechanisms",
    "cram_md5_response",
    "decode_challenge",
    "encode_response",
    "login_response",
    "oauthbearer_response",
    "plain_response",
    "xoauth2_response",
]


class CredentialError(LocalProtocolError, ValueError):
    """A user name or token that the mechanism cannot carry; nothing was sent."""


#: The mechanisms login() may use, strongest first.
PASSWORD_MECHANISMS = (*SCRAM_MECHANISMS, "CRAM-MD5", "PLAIN", "LOGIN")
#: The token mechanisms login_oauth() may use, preferred first.
OAUTH_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
#: The client's answer to an OAUTHBEARER error challenge (RFC 7628 section 3.2.3).
OAUTHBEARER_ERROR_ACK = b"\x01"


def choose_password_mechanisms(advertised: Iterable[str], *, channel_binding: bool) -> list[str]:
    """The mechanisms login() tries, in order: those of PASSWORD_MECHANISMS the
    server advertised (``advertised`` upper case), strongest first.

    A -PLUS mechanism needs ``channel_binding`` (a TLS session whose certificate
    gives tls-server-end-point data). Where one is usable, the plain SCRAM
    mechanisms are left out: a client able to bind must say so ("y") in them, and
    a server that offers binding must then refuse them (RFC 5802 section 6), so
    they could only fail.
    """
    offered = set(advertised)
    chosen = [name for name in PASSWORD_MECHANISMS if name in offered]
    if not channel_binding:
        return [name for name in chosen if not name.endswith("-PLUS")]
    if any(name.endswith("-PLUS") for name in chosen):
        return [name for name in chosen if name.endswith("-PLUS") or name not in SCRAM_MECHANISMS]
    return chosen


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
    _check_user(user)
    _check_token(token)
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def _check_token(token: str) -> None:
    # A bearer token is printable ASCII (RFC 6750 section 2.1); a control
    # character would end the field early. The token itself is never shown.
    if not token or not all(" " < char <= "~" for char in token):
        raise CredentialError("an OAuth token must be non-empty printable ASCII without spaces")


def _check_user(user: str) -> None:
    # ^A separates the fields of both token mechanisms.
    if any(char < " " or char == "\x7f" for char in user):
        raise CredentialError(f"an OAuth user name may not hold control characters: {user!r}")


def oauthbearer_response(
    user: str, token: str, host: str | None = None, port: int | None = None
) -> bytes:
    """OAUTHBEARER (RFC 7628 section 3.1): a GS2 header naming the user, then
    key=value fields between ^A separators, the Bearer token last."""
    _check_user(user)
    _check_token(token)
    fields = ""
    if host:
        fields += f"host={host}\x01"
    if port:
        fields += f"port={port}\x01"
    return f"n,a={escape_saslname(user)},\x01{fields}auth=Bearer {token}\x01\x01".encode()


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
