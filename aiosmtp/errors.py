"""The exceptions users catch: smtplib's tree, extended.

Each class subclasses the smtplib class of the same name, so ``except
smtplib.SMTPException`` keeps working for code moved over from smtplib.
"""

from __future__ import annotations

import smtplib
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import Reply

__all__ = [
    "SMTPAuthenticationError",
    "SMTPCertificateError",
    "SMTPConnectError",
    "SMTPDataError",
    "SMTPDeliveryUnknownError",
    "SMTPDeliveryUnknownResponseError",
    "SMTPDeliveryUnknownTimeoutError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPNotSupportedError",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTLSError",
    "SMTPTimeoutError",
]


def _reply(code: int, message: bytes | str) -> Reply | None:
    from .protocol import Reply

    if not isinstance(code, int) or not 100 <= code <= 599:
        return None  # not a server reply (-1: unparseable; 0: no code at all)
    if isinstance(message, str):
        message = message.encode("utf-8", "replace")
    return Reply(code, bytes(message))


class SMTPException(smtplib.SMTPException):
    """Base class of every exception aiosmtp raises on purpose."""


class SMTPNotSupportedError(SMTPException, smtplib.SMTPNotSupportedError):
    """The server does not offer what the call needs (SMTPUTF8, STARTTLS, AUTH...)."""


class SMTPServerDisconnected(SMTPException, smtplib.SMTPServerDisconnected):
    """Not connected, or the connection was lost."""


class SMTPTimeoutError(SMTPServerDisconnected, TimeoutError):
    """A network wait took longer than ``timeout``; the connection has been closed."""


class SMTPDeliveryUnknownError(SMTPServerDisconnected):
    """The connection was lost, or timed out, after the end of the message data had
    been sent and before the server's reply: the message may or may not have been
    accepted. It is never retried automatically; the caller decides."""


class SMTPDeliveryUnknownTimeoutError(SMTPDeliveryUnknownError, SMTPTimeoutError):
    """The wait for the reply to the end of the data timed out."""


class SMTPResponseException(SMTPException, smtplib.SMTPResponseException):
    """The server answered with an error (``smtp_code``, ``smtp_error``)."""

    @property
    def reply(self) -> Reply | None:
        """``(smtp_code, smtp_error)`` as a ``Reply`` (None when the code is not a
        reply code, as for -1: a reply that could not be parsed)."""
        return _reply(self.smtp_code, self.smtp_error)

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 status code ("5.1.1") that opens the reply's text, if it has
        one whose class matches the reply code (see ``Reply.enhanced_status``)."""
        reply = self.reply
        return None if reply is None else reply.enhanced_status


class SMTPDeliveryUnknownResponseError(SMTPDeliveryUnknownError, SMTPResponseException):
    """The reply to the end of the data could not be understood (``smtp_code`` as
    for any unparseable reply): the message may or may not have been accepted, and
    the connection is closed. Never retried automatically."""


class SMTPSenderRefused(SMTPResponseException, smtplib.SMTPSenderRefused):
    """MAIL FROM was refused; ``sender`` is the address."""


class SMTPRecipientsRefused(SMTPException, smtplib.SMTPRecipientsRefused):
    """Every recipient was refused; ``recipients`` maps each to its (code, message)."""


class SMTPDataError(SMTPResponseException, smtplib.SMTPDataError):
    """The server refused the message data."""


class SMTPConnectError(SMTPResponseException, smtplib.SMTPConnectError):
    """The connection could not be set up, or the greeting was not 220."""


class SMTPHeloError(SMTPResponseException, smtplib.SMTPHeloError):
    """The server refused both EHLO and HELO."""


class SMTPAuthenticationError(SMTPResponseException, smtplib.SMTPAuthenticationError):
    """The server did not accept the credentials."""


class SMTPTLSError(SMTPServerDisconnected, ssl.SSLError):
    """The TLS handshake failed; the connection has been closed."""


class SMTPCertificateError(SMTPTLSError, ssl.SSLCertVerificationError):
    """The server's certificate or host name could not be verified."""
