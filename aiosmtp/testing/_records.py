"""What the recording server keeps: messages, sessions, and the faults it was told
to play. Plain data, no I/O."""

from __future__ import annotations

import email.parser
import email.policy
import enum
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import cached_property

__all__ = ["RecordedMessage", "SessionRecord", "Step"]


class Step(enum.StrEnum):
    """A point in an SMTP session where a fault can be injected.

    ``DATA`` is the DATA command (before the 354); ``DOT`` is the reply to the end of
    the payload (the final ``.`` or ``BDAT ... LAST``); ``BDAT`` is each BDAT command,
    answered once its chunk has been read. ``EHLO`` also covers HELO and LHLO."""

    GREETING = "GREETING"
    EHLO = "EHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    DOT = "DOT"
    BDAT = "BDAT"
    QUIT = "QUIT"
    AUTH = "AUTH"
    STARTTLS = "STARTTLS"


@dataclass
class SessionRecord:
    """One connection the server accepted. The server updates it as the session goes
    on; ``commands`` holds each command line as received (AUTH credentials hidden)."""

    number: int
    peer: str
    tls: bool = False
    ehlo_name: str | None = None
    auth_user: str | None = None
    commands: list[str] = field(default_factory=list)
    closed: bool = False


@dataclass(frozen=True)
class RecordedMessage:
    """One message the server accepted (it has answered, or is about to answer, 250).

    ``data`` is the payload as the client meant it: DATA un-dot-stuffed without the
    final ``.\\r\\n``, or the BDAT chunks joined. ``rcpt_options`` runs parallel to
    ``rcpt_tos``. Under LMTP, ``rcpt_tos`` lists the recipients accepted after the
    data (those refused there are not in it)."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    rcpt_options: list[list[str]]
    data: bytes
    #: ``"DATA"`` or ``"BDAT"``: how the payload arrived.
    via: str
    #: The id given in the 250 reply ("queued as ...").
    queue_id: str
    #: Session details at the time the message was accepted.
    session: int
    peer: str
    ehlo_name: str | None
    tls: bool
    auth_user: str | None
    lmtp: bool

    @cached_property
    def message(self) -> EmailMessage:
        """``data`` parsed with the modern email policy, its CRLF line endings made
        the email package's own ``\\n`` first, so that ``get_content()`` gives back
        the text the sender set."""
        parser = email.parser.BytesParser(policy=email.policy.default)
        return parser.parsebytes(self.data.replace(b"\r\n", b"\n"))


class _Rule:
    """A refusal, a delay or a drop, armed for one step."""

    def __init__(
        self,
        kind: str,
        step: Step,
        *,
        match: str | None,
        times: int | None,
        code: int = 0,
        text: str = "",
        seconds: float = 0.0,
        record: bool = False,
    ) -> None:
        self.kind = kind
        self.step = step
        self.match = match.lower() if match is not None else None
        self.times = times
        self.code = code
        self.text = text
        self.seconds = seconds
        self.record = record

    def matches(self, subjects: list[str]) -> list[str] | None:
        """Which of ``subjects`` this rule applies to (all of them when it has no
        ``match``), or None when it does not apply at all."""
        if self.times is not None and self.times <= 0:
            return None
        if self.match is None:
            return subjects
        hits = [subject for subject in subjects if subject.lower() == self.match]
        return hits or None


class _Faults:
    """The armed rules, shared between the server's event loop and any thread that
    arms them (hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []

    def add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, kind: str, step: Step, subjects: list[str]) -> tuple[_Rule, list[str]] | None:
        """The first live rule of ``kind`` for ``step`` that applies to ``subjects``,
        with the subjects it hits; using it counts against its ``times``."""
        with self._lock:
            for rule in self._rules:
                if rule.kind != kind or rule.step is not step:
                    continue
                hits = rule.matches(subjects)
                if hits is None:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule, hits
        return None
