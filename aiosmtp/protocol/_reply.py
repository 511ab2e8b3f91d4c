"""Server replies (RFC 5321 section 4.2) as a tuple that smtplib users already know."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Reply"]


def _is_status_number(part: bytes, max_len: int) -> bool:
    return 0 < len(part) <= max_len and part.isdigit()


class Reply(NamedTuple):
    """One complete server reply: the code and the text of all its lines.

    It unpacks and compares exactly like smtplib's ``(code, msg)`` tuples; multiline
    text is joined with ``b"\\n"`` as smtplib joins it.
    """

    code: int
    message: bytes

    @property
    def text(self) -> str:
        """The message decoded leniently (UTF-8, undecodable bytes replaced)."""
        return self.message.decode("utf-8", "replace")

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 enhanced status code ("2.1.5") that opens the text, if any.

        RFC 3463 section 2: ``class "." subject "." detail``, the class 2, 4 or 5
        and the same as the reply code's first digit (RFC 2034 section 3), subject
        and detail 1 to 3 digits each. It is read whether or not the server
        advertised ENHANCEDSTATUSCODES: a reply is a value, not a session, and a
        code that matches this grammar and its own reply code means what it says
        (servers send them before EHLO, in greetings and to HELO sessions too).
        """
        head = self.message.split(b" ", 1)[0].split(b"\n", 1)[0]
        parts = head.split(b".")
        if len(parts) != 3 or parts[0] not in (b"2", b"4", b"5"):
            return None
        if self.code // 100 != parts[0][0] - 0x30:
            return None
        # RFC 3463 section 2: subject is 1 to 3 digits, detail 1 to 3 digits.
        if not (_is_status_number(parts[1], 3) and _is_status_number(parts[2], 3)):
            return None
        return head.decode("ascii")

    @property
    def is_positive(self) -> bool:
        """2xx: the command was accepted."""
        return 200 <= self.code <= 299

    @property
    def is_intermediate(self) -> bool:
        """3xx: the server waits for more (354 after DATA, 334 during AUTH)."""
        return 300 <= self.code <= 399

    @property
    def is_transient(self) -> bool:
        """4xx: a temporary failure; the same command may succeed later."""
        return 400 <= self.code <= 499

    @property
    def is_permanent(self) -> bool:
        """5xx: a permanent failure."""
        return 500 <= self.code <= 599
