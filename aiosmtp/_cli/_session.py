"""What the CLI knows about its one session, learnt through the hooks.

``Session`` follows the conversation (the last command, whether TLS is on, what the
last EHLO offered, whether AUTH succeeded), so that a failure can be told apart by
where it happened (STARTTLS, AUTH, the transaction), and with ``trace`` it prints
a swaks-like transcript: ``-> `` for a command and ``<- `` for a reply, ``~> `` and
``<~ `` once the connection is encrypted. Credentials never reach it: the client
hands hooks AUTH lines already redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from ..hooks import Hooks, MessageOutcome
from ..protocol import Reply, parse_ehlo_features

if TYPE_CHECKING:
    from ..client import SendResult

__all__ = ["Session", "format_reply"]


def format_reply(reply: Reply) -> list[str]:
    """The reply's lines as the server sent them: ``250-first`` ... ``250 last``."""
    lines = reply.message.decode("utf-8", "replace").split("\n") if reply.message else [""]
    last = len(lines) - 1
    return [
        f"{reply.code}{'-' if number < last else ' '}{line}".rstrip()
        for number, line in enumerate(lines)
    ]


class Session(Hooks):
    """Hooks that remember where the session is, and optionally print it."""

    def __init__(self, trace: TextIO | None = None) -> None:
        self.trace = trace
        self.tls = False
        self.last_verb: str | None = None
        self.features: dict[str, str] | None = None
        self.authenticated = False
        self.mail_sent = False

    def _print(self, line: str) -> None:
        if self.trace is not None:
            print(line, file=self.trace, flush=True)

    def on_connect(self, host: str, port: int, tls: bool, elapsed: float) -> None:
        self.tls = tls
        where = host if host.startswith("/") else f"{host}:{port}"
        how = " with implicit TLS" if tls else ""
        self._print(f"=== Connected to {where}{how} in {elapsed:.3f} s")

    def on_tls(self, host: str, elapsed: float) -> None:
        self.tls = True
        self.features = None
        self._print(f"=== TLS started in {elapsed:.3f} s")

    def on_command(self, verb: str, line: str) -> None:
        self.last_verb = verb
        if verb == "MAIL":
            self.mail_sent = True
        self._print(f"{'~>' if self.tls else '->'} {line}")

    def on_reply(self, reply: Reply, elapsed: float) -> None:
        if self.last_verb in ("EHLO", "LHLO") and reply.code == 250:
            self.features = parse_ehlo_features(reply.message)
        elif self.last_verb == "AUTH" and reply.code == 235:
            self.authenticated = True
        prefix = "<~" if self.tls else "<-"
        for line in format_reply(reply):
            self._print(f"{prefix} {line}")

    def on_message(
        self,
        outcome: MessageOutcome,
        sender: str,
        recipients: Sequence[str],
        result: SendResult | BaseException,
        elapsed: float,
    ) -> None:
        self._print(f"=== Message {outcome} after {elapsed:.3f} s")
