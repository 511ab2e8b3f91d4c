"""The exceptions users catch: smtplib's tree, extended.

Each class subclasses the smtplib class of the same name, so ``except
smtplib.SMTPException`` keeps working for code moved over from smtplib.
"""

from __future__ import annotations

import smtplib
import ssl

__all__ = [
    "SMTPAuthenticationError",
    "SMTPCertificateError",
    "SMTPConnectError",
    "SMTPDataError",
    "SMTPDeliveryUnknownError",
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


def _enhanced_status(message: bytes | str) -> str | None:
    from .protocol import Reply

    if isinstance(message, str):
        message = message.encode("utf-8", "replace")
    return Reply(0, message).enhanced_status


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
    def enhanced_status(self) -> str | None:
        """The RFC 3463 status code that opens the server's text, if it gave one."""
        return _enhanced_status(self.smtp_error)


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
