"""The SMTP client session as a sans-IO state machine.

Theory of operation (after h11's ``Connection``): the driver hands every command to
``send()`` and writes the bytes it returns; it feeds whatever it reads to
``receive_data()`` and calls ``next_reply()`` until that says ``NEED_DATA``. Each
command sent pushes the kind of reply it waits for onto a queue, and each reply
pops the head (STYLE lesson 3), so pipelining is a batch of ``send()`` calls
followed by as many replies, and the greeting is simply the first reply awaited.

The core never waits and never calls out. When the server agrees to STARTTLS the
state becomes ``TLS_PENDING``: a pause that the driver resolves by upgrading its
stream and calling ``start_tls_done()``.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence
from typing import Final, Literal

from ._commands import Command, CommandKind
from ._data import DataEncoder
from ._errors import LocalProtocolError, RemoteProtocolError
from ._receivebuffer import MAX_LINE_LENGTH, MAX_REPLY_LINES, ReplyParser
from ._reply import Reply
from ._state import (
    LAST_IN_GROUP,
    REPLY_TRANSITIONS,
    SENDABLE,
    WAITS_FOR_MORE,
    Outcome,
    State,
)

__all__ = ["NEED_DATA", "NeedData", "SMTPConnection"]


class NeedData(enum.Enum):
    """The type of the ``NEED_DATA`` sentinel."""

    __hash__ = object.__hash__  # identity, as for the other enums of the core

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


#: ``next_reply()`` needs more bytes from the server before it can return a reply.
NEED_DATA: Final = NeedData.NEED_DATA

_K = CommandKind
_ENDS_TRANSACTION = frozenset({_K.EHLO, _K.HELO, _K.RSET})
# Replies after which no recipient of the current transaction counts any more:
# a new MAIL (accepted or not), the end of a transaction, or one of the commands
# that abandon it.
_COUNT_RESETS = frozenset({_K.MAIL, _K.END_OF_DATA, _K.BDAT_LAST, *_ENDS_TRANSACTION})


class SMTPConnection:
    """The client side of one SMTP (or LMTP, with ``lmtp=True``) session."""

    def __init__(
        self,
        *,
        lmtp: bool = False,
        max_line_length: int = MAX_LINE_LENGTH,
        max_reply_lines: int = MAX_REPLY_LINES,
    ) -> None:
        self.lmtp = lmtp
        self._state = State.GREETING
        self._parser = ReplyParser(
            max_line_length=max_line_length, max_reply_lines=max_reply_lines
        )
        self._awaiting: collections.deque[CommandKind] = collections.deque([_K.GREETING])
        self._encoder: DataEncoder | None = None
        self._utf8 = False
        self._accepted_recipients = 0

    def __repr__(self) -> str:
        return f"<SMTPConnection state={self._state.name} awaiting={len(self._awaiting)}>"

    @property
    def state(self) -> State:
        return self._state

    @property
    def awaiting_replies(self) -> int:
        """How many replies are owed by the server for what has been sent."""
        return len(self._awaiting)

    @property
    def awaits_recipient_status(self) -> bool:
        """Whether the next reply due is one of LMTP's per-recipient replies after
        the data: the driver reads them as part of the same message's outcome."""
        return bool(self._awaiting) and self._awaiting[0] is _K.RECIPIENT_STATUS

    @property
    def accepted_recipients(self) -> int:
        """Recipients of the current transaction that RCPT accepted with a 2xx."""
        return self._accepted_recipients

    def has_buffered_input(self) -> bool:
        """True while received bytes wait that are not part of a returned reply."""
        return self._parser.has_buffered_data()

    @property
    def command_encoding(self) -> str:
        """ "utf-8" inside an SMTPUTF8 transaction (RFC 6531), else "ascii"."""
        return "utf-8" if self._utf8 else "ascii"

    # -- sending ---------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """Return the bytes of ``command`` and await its reply."""
        return self.send_many((command,))

    def send_many(self, commands: Sequence[Command]) -> bytes:
        """Return the bytes of a pipelined group of commands, and await their replies.

        All or nothing: if any command is refused (or cannot be encoded), none is
        taken and the session is unchanged.
        """
        awaiting = len(self._awaiting)
        last = self._awaiting[-1] if awaiting else None
        utf8 = self._utf8
        lines: list[bytes] = []
        for command in commands:
            kind = command.kind
            if kind not in SENDABLE[self._state] or kind is _K.END_OF_DATA:
                raise LocalProtocolError(f"cannot send {kind.value} in state {self._state.name}")
            if last in LAST_IN_GROUP:
                assert last is not None
                raise LocalProtocolError(
                    f"cannot send {kind.value} before the reply to {last.value}"
                )
            if kind is _K.MAIL:
                utf8 = "SMTPUTF8" in command.argument.upper().split()
            elif kind in _ENDS_TRANSACTION:
                utf8 = False
            lines.append(command.to_bytes("utf-8" if utf8 else "ascii"))
            last = kind
        self._utf8 = utf8
        self._awaiting.extend(command.kind for command in commands)
        return lines[0] if len(lines) == 1 else b"".join(lines)

    def send_bdat(self, size: int, *, last: bool) -> bytes:
        """Return the ``BDAT`` command line for a chunk of ``size`` bytes (RFC 3030).

        The caller sends exactly that many bytes right after it, with line endings
        already normalised (``LineEndingNormalizer``) unless the body is
        BINARYMIME. BDAT may be pipelined after MAIL and RCPT.
        """
        if size < 0:
            raise LocalProtocolError(f"a BDAT chunk cannot have {size} bytes")
        kind = _K.BDAT_LAST if last else _K.BDAT
        data = self.send(Command("BDAT", f"{size} LAST" if last else str(size), kind))
        if last:
            self._utf8 = False
        return data

    def send_data(self, chunk: bytes, *, normalized: bool = False) -> bytes:
        """Return the wire bytes for the next piece of a message after 354.

        ``normalized``: the line endings are already CRLF (``normalize_line_endings``).
        """
        if self._state is not State.DATA or self._encoder is None:
            raise LocalProtocolError(f"cannot send message data in state {self._state.name}")
        return self._encoder.encode(chunk, normalized=normalized)

    def end_data(self) -> bytes:
        """Return the bytes that end the message, and await the reply (one per
        accepted recipient under LMTP, RFC 2033 section 4.2)."""
        if self._state is not State.DATA or self._encoder is None:
            raise LocalProtocolError(f"cannot end message data in state {self._state.name}")
        data = self._encoder.finish()
        self._awaiting.append(_K.END_OF_DATA)
        # The server leaves the data phase on the final dot, whatever it answers.
        self._state = State.READY
        self._encoder = None
        self._utf8 = False
        return data

    # -- receiving -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes read from the server. ``b""`` is not end of file here: the
        driver reports a lost connection with ``close()``."""
        self._parser.feed(data)

    def next_reply(self) -> Reply | Literal[NeedData.NEED_DATA]:
        """Return the next reply, or ``NEED_DATA``.

        Raises RemoteProtocolError (and closes the session) on nonsense.
        """
        try:
            reply = self._parser.next_reply()
            if reply is None:
                return NEED_DATA
            self._handle_reply(reply)
        except RemoteProtocolError:
            self.close()
            raise
        return reply

    def _handle_reply(self, reply: Reply) -> None:
        if not self._awaiting:
            raise RemoteProtocolError(f"unsolicited reply from the server: {reply!r}")
        if self._state is State.CLOSED:
            raise RemoteProtocolError(f"reply after the session closed: {reply!r}")
        kind = self._awaiting.popleft()
        if self.lmtp and kind in (_K.END_OF_DATA, _K.BDAT_LAST):
            # RFC 2033 section 4.2: one reply per recipient accepted at RCPT. They
            # are all counted by now (their replies came first), even if MAIL, RCPT
            # and BDAT were pipelined. With none accepted the server should not have
            # taken the data at all; one reply is then the likelier answer.
            more = max(self._accepted_recipients - 1, 0)
            self._awaiting.extendleft([_K.RECIPIENT_STATUS] * more)
        if kind in _COUNT_RESETS:
            self._accepted_recipients = 0
        outcome = Outcome.of(reply.code)
        if outcome is Outcome.INTERMEDIATE and kind not in WAITS_FOR_MORE:
            raise RemoteProtocolError(f"{reply.code} is no reply to {kind.value}")
        if reply.code == 421:
            # The server is closing the channel (RFC 5321 section 3.8).
            self.close()
            return
        if kind is _K.RCPT and outcome is Outcome.POSITIVE:
            self._accepted_recipients += 1
        if kind is _K.STARTTLS and self._parser.has_buffered_data():
            # Bytes after the 220 came in plaintext but would be read as if they had
            # come through TLS: a command injection attack (CVE-2011-0411).
            raise RemoteProtocolError("bytes received after the STARTTLS 220 reply")
        if not self._awaiting and self._parser.has_buffered_data():
            # Nothing more was asked for: these bytes would be taken as the reply to
            # the next command, and every reply after it would be one off.
            raise RemoteProtocolError(f"unsolicited bytes after the reply to {kind.value}")
        new_state = REPLY_TRANSITIONS.get((self._state, kind, outcome), self._state)
        if new_state is State.DATA:
            self._encoder = DataEncoder()
        elif new_state is State.READY and self._state is not State.READY:
            self._encoder = None
        self._state = new_state

    # -- pauses and the end ----------------------------------------------------

    def start_tls_done(self) -> None:
        """The driver has upgraded the stream: the session starts afresh (RFC 3207
        section 4.2), without a new greeting."""
        if self._state is not State.TLS_PENDING:
            raise LocalProtocolError(f"no STARTTLS to complete in state {self._state.name}")
        if self._parser.has_buffered_data():
            # Plaintext that arrived before the handshake must never count as if it
            # had come through TLS.
            self.close()
            raise RemoteProtocolError("plaintext bytes received before the TLS handshake")
        self._state = State.READY
        self._utf8 = False

    def close(self) -> None:
        """The connection is gone or can no longer be trusted."""
        self._state = State.CLOSED
        self._awaiting.clear()
        self._encoder = None
