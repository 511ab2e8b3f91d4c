"""The client's side of the MAIL and RCPT parameter rules (``protocol/_mailparams.py``).

The core decides; this module tells it what only the client can know (the session's
features and TLS state, whether the body will go with BDAT, what the body holds)
and translates its refusals into what an smtplib user catches:
``SMTPNotSupportedError`` for a missing extension, ``SMTPSenderRefused(552)`` for a
message over the SIZE limit. Everything happens before MAIL is sent.

What is known of a body: its size (bytes, seekable files) and whether it holds
8-bit bytes, for a body held in memory. A file or a stream is read only while it
is sent; only under ``strict_8bit``, when the answer decides whether it may be sent
at all, is a seekable file read through once beforehand (off the event loop) and
rewound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._body import BytesBody, MessageBody
from .errors import SMTPNotSupportedError, SMTPSenderRefused
from .message import quote_address
from .protocol import (
    DSN,
    EightBitUnknown,
    EnvelopePlan,
    ExtensionNotOffered,
    MessageTooLarge,
    plan_envelope,
)

if TYPE_CHECKING:
    from .client import SMTP

__all__ = ["NO_EXTRAS", "MailExtras", "plan_parameters"]


@dataclass(frozen=True, slots=True)
class MailExtras:
    """The keywords ``sendmail`` and ``send_message`` add to smtplib's."""

    dsn: DSN | None = None
    require_tls: bool = False
    strict_8bit: bool = False

    def __post_init__(self) -> None:
        if self.dsn is not None and not isinstance(self.dsn, DSN):
            raise TypeError(f"dsn must be an aiosmtp.DSN, not {type(self.dsn).__name__}")


NO_EXTRAS = MailExtras()


def _bare_address(recipient: str) -> str:
    quoted = quote_address(recipient)
    return quoted[1:-1] if quoted.startswith("<") and quoted.endswith(">") else quoted


def known_8bit(body: MessageBody) -> bool | None:
    """Whether the body holds a byte >= 0x80; None when that is not known yet."""
    if isinstance(body, BytesBody):
        return not body.data.isascii()
    return None


async def scan_8bit(body: MessageBody) -> bool:
    """Read a replayable body through and rewind it: does it hold 8-bit bytes?"""
    found = False
    async with contextlib.aclosing(body.chunks()) as chunks:
        async for chunk in chunks:
            if not chunk.isascii():
                found = True
                break
    body.rewind()
    return found


async def plan_parameters(
    smtp: SMTP,
    sender: str,
    recipients: Sequence[str],
    body: MessageBody,
    mail_options: Sequence[str],
    rcpt_options: Sequence[str],
    extras: MailExtras,
) -> EnvelopePlan:
    """The parameters to add to MAIL and each RCPT for this message, or the
    smtplib-shaped exception saying why it cannot be sent on this session."""
    features = smtp.esmtp_features if smtp.does_esmtp else {}
    eight_bit = known_8bit(body)
    dsn = extras.dsn

    # ORCPT names each recipient by its bare address (RFC 3461 section 4.2).
    bare = [_bare_address(recipient) for recipient in recipients] if dsn is not None else []

    def plan() -> EnvelopePlan:
        return plan_envelope(
            features,
            recipients=bare,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
            tls=smtp.is_tls,
            bdat=smtp.chunking and "chunking" in features,
            size=body.size,
            eight_bit=eight_bit,
            dsn=dsn,
            require_tls=extras.require_tls,
            strict_8bit=extras.strict_8bit,
        )

    try:
        try:
            return plan()
        except EightBitUnknown:
            if not body.replayable:
                raise
            eight_bit = await scan_8bit(body)
            return plan()
    except ExtensionNotOffered as exc:
        raise SMTPNotSupportedError(str(exc)) from None
    except MessageTooLarge as exc:
        # RFC 3463: X.3.4 "message too big for system", as a server would say it.
        raise SMTPSenderRefused(552, f"5.3.4 {exc}".encode(), sender) from None
