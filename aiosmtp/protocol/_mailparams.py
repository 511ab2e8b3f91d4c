"""The MAIL and RCPT parameters of one transaction, decided before anything is sent.

Theory of operation: the client gathers what the session knows (the EHLO features,
whether it is encrypted, whether the body will go out with BDAT), what it knows of
the message (its size, whether it holds 8-bit bytes, if that is known), and what the
caller asked for (``dsn``, ``require_tls``, ``strict_8bit``, raw options).
``plan_envelope`` turns that into the parameters to add to MAIL and to each RCPT,
or refuses with a ``LocalProtocolError`` that says why: nothing has been sent then,
and the session is as it was.

The rules, each from its RFC:

* SIZE (RFC 1870 section 6): a message larger than the server's advertised limit
  would be refused at MAIL or at the end of the data; it is refused here instead,
  before MAIL, so that none of it is uploaded (``MessageTooLarge``).
* DSN (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on each RCPT, only if the
  server advertises DSN; a raw option asking for the same thing is a ValueError.
* REQUIRETLS (RFC 8689 section 4.1): only over TLS, to a server advertising it.
* 8BITMIME / BINARYMIME (RFC 6152, RFC 3030): a message that needs 8 bits is
  declared ``BODY=8BITMIME`` when the server offers it, else ``BODY=BINARYMIME``
  when the server offers that and the body goes out with BDAT (BDAT carries any
  octets; the client still normalises line endings, so the body is the same text
  either way). A body whose bytes are not known before sending (a file, a stream)
  is declared the same way whenever the server offers it: declaring 8 bits for a
  7-bit body is harmless. Without either extension the message goes as smtplib
  sends it, undeclared, unless ``strict_8bit`` asks for an error. A ``BODY=`` the
  caller gave is never overridden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._dsn import DSN, dsn_option_conflicts
from ._errors import LocalProtocolError

__all__ = [
    "EightBitUnknown",
    "EnvelopePlan",
    "ExtensionNotOffered",
    "MessageTooLarge",
    "plan_envelope",
    "size_limit",
]


class ExtensionNotOffered(LocalProtocolError):
    """The call needs an SMTP extension (or a TLS session) this session lacks."""

    def __init__(self, extension: str, message: str) -> None:
        super().__init__(message)
        self.extension = extension


class EightBitUnknown(ExtensionNotOffered):
    """``strict_8bit`` with a server lacking 8BITMIME and BINARYMIME, and a body whose
    8-bitness is not known: the client may find out (a file it can read twice) and
    ask again."""


class MessageTooLarge(LocalProtocolError):
    """The message is larger than the server's advertised SIZE limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the message of {size} bytes exceeds the server's limit of {limit} bytes "
            "(SIZE); nothing of it was sent"
        )
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class EnvelopePlan:
    """What to add to the caller's options: ``mail`` after the MAIL options, and
    ``rcpt[i]`` after the RCPT options of the i-th recipient (empty when none)."""

    mail: tuple[str, ...] = ()
    rcpt: tuple[tuple[str, ...], ...] | None = None


def size_limit(features: Mapping[str, str]) -> int | None:
    """The advertised SIZE limit in bytes; None when there is none (no SIZE, a bare
    ``SIZE``, ``SIZE 0`` which RFC 1870 section 4 says means no fixed limit, or a
    value that is not a number)."""
    value = features.get("size")
    if not value:
        return None
    word = value.split()[0]
    if not (word.isascii() and word.isdigit()):
        return None
    limit = int(word)
    return limit or None


def _keyword(option: str) -> str:
    return option.split("=", 1)[0].strip().upper()


def _declared_body(mail_options: Sequence[str]) -> str | None:
    for option in reversed(mail_options):
        if _keyword(option) == "BODY":
            return option.partition("=")[2].strip().upper()
    return None


def _body_parameter(
    features: Mapping[str, str],
    *,
    eight_bit: bool | None,
    bdat: bool,
    declared: str | None,
    strict_8bit: bool,
) -> str | None:
    offers_8bitmime = "8bitmime" in features
    offers_binarymime = "binarymime" in features and bdat
    if declared is not None:
        if strict_8bit:
            if declared == "8BITMIME" and not offers_8bitmime:
                raise ExtensionNotOffered(
                    "8BITMIME", "BODY=8BITMIME was given, but the server does not offer 8BITMIME"
                )
            if declared == "BINARYMIME" and not offers_binarymime:
                raise ExtensionNotOffered(
                    "BINARYMIME",
                    "BODY=BINARYMIME was given, but the server does not offer BINARYMIME "
                    "with CHUNKING (or chunking is off in this client)",
                )
            if declared == "7BIT" and eight_bit:
                raise ValueError("BODY=7BIT was given, but the message holds 8-bit bytes")
        return None
    if eight_bit is False:
        return None
    if offers_8bitmime:
        return "BODY=8BITMIME"
    if offers_binarymime:
        return "BODY=BINARYMIME"
    if strict_8bit:
        if eight_bit:
            raise ExtensionNotOffered(
                "8BITMIME",
                "the message holds 8-bit bytes, and the server offers neither 8BITMIME "
                "nor BINARYMIME (strict_8bit=True)",
            )
        raise EightBitUnknown(
            "8BITMIME",
            "the server offers neither 8BITMIME nor BINARYMIME, and whether this body "
            "(a stream, read only while it is sent) is 7-bit cannot be known before "
            "sending it (strict_8bit=True); pass mail_options=['BODY=7BIT'] if it is",
        )
    return None


def plan_envelope(
    features: Mapping[str, str],
    *,
    recipients: Sequence[str],
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
    tls: bool = False,
    bdat: bool = False,
    size: int | None = None,
    eight_bit: bool | None = False,
    dsn: DSN | None = None,
    require_tls: bool = False,
    strict_8bit: bool = False,
) -> EnvelopePlan:
    """The parameters to add to MAIL and RCPT, or the reason the message cannot go.

    ``features`` are the EHLO features (lower-case keys; empty when the session is
    not ESMTP); ``recipients`` the bare addresses (for ORCPT); ``mail_options`` and
    ``rcpt_options`` what the caller gave raw; ``tls`` whether the session is
    encrypted; ``bdat`` whether the body will go out with BDAT; ``size`` the
    message's length if known; ``eight_bit`` whether it holds a byte >= 0x80
    (None: not known before sending).

    Raises ValueError for contradictory requests, ``ExtensionNotOffered`` when the
    session lacks what a request needs, ``MessageTooLarge`` for SIZE; checked in
    that order.
    """
    if dsn is not None:
        conflicts = dsn_option_conflicts(dsn, mail_options, rcpt_options)
        if conflicts:
            raise ValueError(
                f"the options {conflicts} ask again for what dsn= already sets; "
                "give each DSN parameter one way only"
            )
    mail: list[str] = []
    if require_tls:
        missing = []
        if not tls:
            missing.append("the session is not encrypted (use SMTP_SSL or starttls() first)")
        if "requiretls" not in features:
            missing.append("the server does not advertise REQUIRETLS")
        if missing:
            raise ExtensionNotOffered(
                "REQUIRETLS", f"require_tls=True cannot be honoured: {' and '.join(missing)}"
            )
    if dsn is not None and "dsn" not in features:
        raise ExtensionNotOffered(
            "DSN", "the server does not advertise DSN (RFC 3461), so dsn= cannot be honoured"
        )
    body = _body_parameter(
        features,
        eight_bit=eight_bit,
        bdat=bdat,
        declared=_declared_body(mail_options),
        strict_8bit=strict_8bit,
    )
    limit = size_limit(features)
    if limit is not None and size is not None and size > limit:
        raise MessageTooLarge(size, limit)
    if body is not None:
        mail.append(body)
    rcpt: tuple[tuple[str, ...], ...] | None = None
    if dsn is not None:
        mail.extend(dsn.mail_parameters())
        rcpt = tuple(dsn.rcpt_parameters(address) for address in recipients)
    if require_tls and not any(_keyword(option) == "REQUIRETLS" for option in mail_options):
        mail.append("REQUIRETLS")
    return EnvelopePlan(tuple(mail), rcpt)
