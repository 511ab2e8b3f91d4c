"""Bytes from the server, cut into replies.

Theory of operation: received bytes are appended to one ``bytearray``. The parser
remembers how far it has already searched for a line end, so each byte is looked at
once however the data is split (after h11's ``_receivebuffer``). Lines of a
multiline reply (``250-...``) are collected until the line whose fourth byte is a
space (or that has only the code). An incomplete line may not grow past the line
limit, nor a reply past the line count: a server cannot make us buffer forever.
"""

from __future__ import annotations

from ._errors import RemoteProtocolError
from ._reply import Reply

__all__ = ["MAX_LINE_LENGTH", "MAX_REPLY_LINES", "ReplyParser"]

#: smtplib's limit: a reply line of more than 8192 bytes (terminator included) is refused.
MAX_LINE_LENGTH = 8192
#: A reply of more than this many lines is refused.
MAX_REPLY_LINES = 1000

# Every valid reply code, by its three bytes: one lookup checks and converts.
_CODES = {str(code).encode(): code for code in range(200, 600)}


class ReplyParser:
    """Incremental parser of server replies."""

    __slots__ = ("_buffer", "_code", "_lines", "_max_line", "_max_lines", "_searched")

    def __init__(
        self, *, max_line_length: int = MAX_LINE_LENGTH, max_reply_lines: int = MAX_REPLY_LINES
    ) -> None:
        self._buffer = bytearray()
        self._searched = 0
        self._lines: list[bytes] = []
        self._code = -1
        self._max_line = max_line_length
        self._max_lines = max_reply_lines

    def has_buffered_data(self) -> bool:
        """True while received bytes wait that are not part of a returned reply."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_reply(self) -> Reply | None:
        """Return the next complete reply, or None if more bytes are needed.

        Raises RemoteProtocolError on an over-long line, an over-long reply, or a
        line that is not a reply line.
        """
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._searched)
            if end < 0:
                self._searched = len(buffer)
                if len(buffer) > self._max_line:
                    raise RemoteProtocolError(
                        f"reply line longer than {self._max_line} bytes", 500
                    )
                return None
            if end + 1 > self._max_line:
                raise RemoteProtocolError(f"reply line longer than {self._max_line} bytes", 500)
            # Lenient like smtplib: a bare LF ends a line too.
            stop = end - 1 if end > 0 and buffer[end - 1] == 0x0D else end
            line = bytes(buffer[:stop])
            if end + 1 == len(buffer):
                buffer.clear()  # the usual case: the last line received; no memmove
            else:
                del buffer[: end + 1]
            self._searched = 0
            reply = self._add_line(line)
            if reply is not None:
                return reply

    def _add_line(self, line: bytes) -> Reply | None:
        code = _CODES.get(line[:3], 0)
        if not code:
            raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
        if len(line) > 3 and line[3] not in b" -":
            raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
        if not self._lines and len(line) > 3 and line[3] == 0x20:
            # The usual case: a one-line reply.
            return Reply(code, line[4:].strip(b" \t\r\n"))
        if self._lines and code != self._code:
            raise RemoteProtocolError(
                f"reply line with code {code} inside a multiline reply with code {self._code}"
            )
        self._code = code
        # smtplib strips each line's text; so do we, for equal messages.
        self._lines.append(line[4:].strip(b" \t\r\n"))
        if len(line) > 3 and line[3] == 0x2D:  # "-": more lines follow
            if len(self._lines) >= self._max_lines:
                raise RemoteProtocolError(f"reply of more than {self._max_lines} lines", 500)
            return None
        lines, self._lines = self._lines, []
        return Reply(code, lines[0] if len(lines) == 1 else b"\n".join(lines))
