"""Hooks: what a client or a pool did, as it happens, for metrics, traces and logs.

Theory of operation: a ``Hooks`` object is given as ``hooks=`` to ``SMTP``,
``SMTP_SSL``, ``LMTP``, ``SMTPPool`` or ``aiosmtp.send``. The client calls its
methods at fixed points: a connection opened, a STARTTLS handshake done, a command
line sent, a reply read, a message's outcome known. Without hooks the client pays one
``None`` check at each of those points and nothing else.

Hooks are plain synchronous methods, called on the task doing the I/O: they cannot
stall the protocol with an ``await``, and should not block either (count, record,
hand over to a queue). An exception raised by a hook is logged on the
``aiosmtp.hooks`` logger and swallowed: a broken metric never breaks a delivery.

Credentials never reach a hook: an AUTH command is shown as ``AUTH PLAIN <redacted>``
and every line answering an AUTH challenge as ``<redacted>`` (its verb is ``AUTH``).
"""

from __future__ import annotations

import email.message
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal

from .errors import (
    SMTPDataError,
    SMTPDeliveryUnknownError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
)
from .message import envelope_addresses
from .protocol import Command, CommandKind

if TYPE_CHECKING:
    from .client import SendResult
    from .protocol import Reply

__all__ = ["Hooks", "MessageOutcome", "message_envelope", "message_outcome"]

logger = logging.getLogger("aiosmtp.hooks")

#: What became of a message, as ``Hooks.on_message`` is told:
#:
#: - ``accepted``: the server took it (for every recipient, or for some: the result
#:   lists those refused);
#: - ``rejected``: the server refused it (sender, every recipient, or the data);
#: - ``unknown``: the connection was lost after the data had been sent in full and
#:   before the reply (``SMTPDeliveryUnknownError``): it may have been delivered;
#: - ``failed``: it was not sent (connection, TLS, authentication, timeout, misuse);
#: - ``cancelled``: the caller gave up (cancellation, KeyboardInterrupt) part way;
#:   like ``unknown``, it may or may not have been delivered.
MessageOutcome = Literal["accepted", "rejected", "unknown", "failed", "cancelled"]


class Hooks:
    """Callbacks for what a client does; every method is a no-op here.

    Subclass it and override what you need. Timings (``elapsed``) are seconds from
    ``time.perf_counter()``. One object may serve many connections at once (a pool
    gives its hooks to each of its connections).
    """

    def on_connect(self, host: str, port: int, tls: bool, elapsed: float) -> None:
        """A connection was opened (``tls``: implicit TLS, handshake included in
        ``elapsed``). The greeting follows as the next reply."""

    def on_tls(self, host: str, elapsed: float) -> None:
        """STARTTLS succeeded: the handshake took ``elapsed``; what follows is
        encrypted."""

    def on_command(self, verb: str, line: str) -> None:
        """A command line is being sent: its upper-case ``verb`` and the ``line``
        with any credentials redacted. The end of a message's data is reported as
        the verb ``"."``."""

    def on_reply(self, reply: Reply, elapsed: float) -> None:
        """A reply was read, ``elapsed`` after the last command (or the data, or the
        connection, for the greeting) was sent."""

    def on_message(
        self,
        outcome: MessageOutcome,
        sender: str,
        recipients: Sequence[str],
        result: SendResult | BaseException,
        elapsed: float,
    ) -> None:
        """A ``sendmail`` / ``send_message`` call ended: its outcome, the envelope,
        the ``SendResult`` (refused recipients and ``.reply``) or the exception
        about to be raised, and how long the whole call took (for a pool: waiting
        for a connection, retries and follow-up transactions included)."""


def call_hook(method: Callable[..., object], *args: object) -> None:
    """Call one hook method; log and swallow whatever it raises."""
    try:
        method(*args)
    except Exception:
        logger.exception("hook %s raised; ignored", getattr(method, "__qualname__", method))


def command_sent(hooks: Hooks, command: Command, line: str) -> None:
    """``on_command`` for a command, its ``line`` already redacted. The verb of a line
    answering an AUTH challenge is ``AUTH``: its own "verb" is the payload."""
    if command.kind is CommandKind.AUTH_RESPONSE or command.sensitive:
        verb = "AUTH"
    else:
        verb = command.verb.upper()
    call_hook(hooks.on_command, verb, line)


def message_outcome(result: SendResult | BaseException) -> MessageOutcome:
    """The outcome ``on_message`` reports for this result or exception."""
    if not isinstance(result, BaseException):
        return "accepted"
    if isinstance(result, SMTPDeliveryUnknownError):
        return "unknown"
    if isinstance(result, SMTPSenderRefused | SMTPRecipientsRefused | SMTPDataError):
        return "rejected"
    if isinstance(result, Exception):
        return "failed"
    return "cancelled"


async def observe_message(
    hooks: Hooks, sending: Awaitable[SendResult], sender: str, recipients: Sequence[str]
) -> SendResult:
    """Await one send and tell ``hooks.on_message`` how it ended."""
    started = time.perf_counter()
    try:
        result = await sending
    except BaseException as exc:
        elapsed = time.perf_counter() - started
        call_hook(hooks.on_message, message_outcome(exc), sender, list(recipients), exc, elapsed)
        raise
    elapsed = time.perf_counter() - started
    call_hook(hooks.on_message, "accepted", sender, list(recipients), result, elapsed)
    return result


def message_envelope(
    msg: email.message.Message, from_addr: str | None, to_addrs: str | Sequence[str] | None
) -> tuple[str, list[str]]:
    """The sender and recipients ``send_message`` takes from a message, for
    ``on_message``. Never raises: a message send_message refuses is reported as it
    is refused."""
    try:
        return envelope_addresses(msg, from_addr, to_addrs)
    except Exception:
        return from_addr or "", []
