"""Commands the client sends, as small validated values (after h11's ``_events``).

A command is built once, checked when built, and serialised to exactly the bytes
that go on the wire. Nothing a caller passes may carry CR, LF or NUL into a command
line: those would let one argument smuggle a second command (or end the line early),
so they are refused before any byte is produced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._errors import ForbiddenCharacterError

__all__ = ["Command", "CommandKind", "check_argument"]

_FORBIDDEN = ("\r", "\n", "\0")


class CommandKind(enum.Enum):
    """What a command is, as far as the session state is concerned."""

    # Enum hashes by name in Python; members are singletons, so identity is
    # enough, and the hot path looks them up in sets and dicts many times a message.
    __hash__ = object.__hash__

    GREETING = "greeting"  # not sent: the server's first reply is awaited like one
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "end of data"  # the final "." line, answered like a command
    BDAT = "BDAT"
    BDAT_LAST = "BDAT LAST"
    RSET = "RSET"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    AUTH_RESPONSE = "AUTH response"  # a base64 line answering a 334 challenge
    QUIT = "QUIT"
    RECIPIENT_STATUS = "recipient status"  # LMTP: a further per-recipient reply to the data
    OTHER = "other"  # NOOP, VRFY, EXPN, HELP and whatever docmd() is given

    @classmethod
    def of_verb(cls, verb: str) -> CommandKind:
        kind = _KIND_OF_VERB.get(verb.split(" ", 1)[0].upper())
        return CommandKind.OTHER if kind is None else kind


_KIND_OF_VERB = {
    "EHLO": CommandKind.EHLO,
    "LHLO": CommandKind.EHLO,
    "HELO": CommandKind.HELO,
    "MAIL": CommandKind.MAIL,
    "RCPT": CommandKind.RCPT,
    "DATA": CommandKind.DATA,
    "RSET": CommandKind.RSET,
    "STARTTLS": CommandKind.STARTTLS,
    "AUTH": CommandKind.AUTH,
    "QUIT": CommandKind.QUIT,
}


def check_argument(what: str, value: str) -> None:
    """Refuse a value that would break out of its command line."""
    for char in _FORBIDDEN:
        if char in value:
            raise ForbiddenCharacterError(
                f"{what} contains a forbidden {_NAMES[char]} character: {value!r}"
            )


_NAMES = {"\r": "CR", "\n": "LF", "\0": "NUL"}


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: a verb and its argument text.

    ``sensitive`` marks lines whose argument must never be logged (AUTH payloads).
    """

    verb: str
    argument: str = ""
    kind: CommandKind = CommandKind.OTHER
    sensitive: bool = False

    def __post_init__(self) -> None:
        check_argument("command", self.verb)
        check_argument(f"{self.verb} argument", self.argument)

    @classmethod
    def make(cls, verb: str, argument: str = "", *, sensitive: bool = False) -> Command:
        """Build a command and work out its kind from the verb."""
        return cls(verb, argument, CommandKind.of_verb(verb), sensitive)

    @classmethod
    def auth_response(cls, line: str) -> Command:
        """A line answering an AUTH challenge; it has no verb of its own."""
        return cls(line, "", CommandKind.AUTH_RESPONSE, True)

    def to_bytes(self, encoding: str = "ascii") -> bytes:
        """Serialise the line. ``encoding`` is "utf-8" in an SMTPUTF8 transaction.

        Raises UnicodeEncodeError (a ValueError) for non-ASCII text outside one,
        as smtplib does.
        """
        if self.argument:
            return f"{self.verb} {self.argument}\r\n".encode(encoding)
        return f"{self.verb}\r\n".encode(encoding)

    def redacted(self) -> str:
        """The line as it may be shown in logs."""
        if not (self.sensitive or self.kind in (CommandKind.AUTH, CommandKind.AUTH_RESPONSE)):
            return f"{self.verb} {self.argument}" if self.argument else self.verb
        if self.kind is CommandKind.AUTH:
            mechanism = self.argument.split(" ", 1)[0]
            return f"AUTH {mechanism} <redacted>" if " " in self.argument else f"AUTH {mechanism}"
        return "<redacted>"
