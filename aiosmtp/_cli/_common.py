"""What the CLI's commands share: exit codes, the password, the TLS context, and how
an exception becomes an exit code."""

from __future__ import annotations

import getpass
import os
import ssl
import sys

from ..errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPDeliveryUnknownError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from ._session import Session

__all__ = [
    "EXIT_AUTH",
    "EXIT_CODES",
    "EXIT_CONNECTION",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_REFUSED",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "PASSWORD_VARIABLE",
    "UsageError",
    "exit_code_for",
    "fail",
    "make_context",
    "read_password",
]

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_PARTIAL = 2
EXIT_REFUSED = 3
EXIT_CONNECTION = 4
EXIT_AUTH = 5
EXIT_UNKNOWN = 6

EXIT_CODES = """\
exit status:
  0  sent, accepted for every recipient (check: every step passed)
  1  usage: bad arguments, an unreadable file, no password
  2  sent, but the server refused some of the recipients
  3  refused: the sender, every recipient, or the message; or the greeting,
     EHLO/HELO, or a message the server cannot take (SMTPUTF8)
  4  connection, TLS or timeout: cannot connect, STARTTLS not offered or
     refused, certificate not verified, connection lost, no reply in time
  5  authentication: credentials refused, no usable AUTH mechanism, or
     credentials withheld over a connection that is not encrypted
  6  delivery unknown: the connection was lost after the whole message had
     been sent and before the server's reply; it may have been delivered,
     so do not simply send it again
"""

PASSWORD_VARIABLE = "AIOSMTP_PASSWORD"


class UsageError(Exception):
    """Bad arguments or input: exit status 1."""


def fail(code: int, message: str) -> int:
    print(f"aiosmtp: {message}", file=sys.stderr)
    return code


def read_password(user: str, where: str, *, stdin_taken: bool = False) -> str:
    """The password from AIOSMTP_PASSWORD, or asked for on the terminal (never argv)."""
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is not None:
        return password
    if stdin_taken and not _has_terminal():
        raise UsageError(
            f"the message comes from standard input and there is no terminal to ask "
            f"for the password on: set {PASSWORD_VARIABLE}"
        )
    try:
        return getpass.getpass(f"Password for {user} at {where}: ")
    except EOFError:
        raise UsageError(f"no password given (set {PASSWORD_VARIABLE})") from None


def _has_terminal() -> bool:
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def make_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying context; with ``cafile``, trusting the CAs in that file only."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --cafile {cafile}: {exc}") from None


def exit_code_for(
    exc: BaseException, session: Session, *, tls_required: bool, user_given: bool
) -> int:
    """The exit status for an exception, told apart by where the session was."""
    if isinstance(exc, SMTPDeliveryUnknownError):
        return EXIT_UNKNOWN
    if isinstance(exc, SMTPAuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, SMTPSenderRefused | SMTPRecipientsRefused | SMTPDataError | SMTPHeloError):
        return EXIT_REFUSED
    if isinstance(exc, SMTPConnectError):
        # A code of -1: no connection at all; else the greeting refused service.
        return EXIT_CONNECTION if exc.smtp_code < 0 else EXIT_REFUSED
    if isinstance(exc, SMTPServerDisconnected):  # lost, timed out, TLS failed
        return EXIT_CONNECTION
    if isinstance(exc, SMTPResponseException):
        if session.last_verb == "STARTTLS":
            return EXIT_CONNECTION
        if session.last_verb == "AUTH":
            return EXIT_AUTH
        return EXIT_REFUSED
    if isinstance(exc, SMTPException):
        # A check that failed before anything was sent for it (SMTPNotSupportedError
        # and friends): which one is told by how far the session got.
        if tls_required and not session.tls:
            return EXIT_CONNECTION  # STARTTLS not offered
        if user_given and not session.authenticated and not session.mail_sent:
            return EXIT_AUTH  # no AUTH, no usable mechanism, or not over plaintext
        return EXIT_REFUSED  # a message the server cannot take (SMTPUTF8)
    if isinstance(exc, ValueError):
        return EXIT_USAGE
    if isinstance(exc, OSError):
        return EXIT_CONNECTION
    raise exc
