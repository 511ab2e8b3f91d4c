"""Message bodies on the wire: the DATA encoder (RFC 5321 section 4.5.2).

Theory of operation: a message may arrive in chunks split anywhere, even between
the CR and LF of one line ending, or just before a line's leading dot. The encoder
keeps two facts across chunks (are we at the start of a line; is a CR held back)
and otherwise works on whole chunks with ``bytes`` methods that run in C: no
Python loop over lines.

Every bare CR and bare LF becomes CRLF *before* dot-stuffing. That closes SMTP
smuggling: a payload can then hold no ``<LF>.<LF>`` or ``<CR>.<CR>`` that some
server could take for the end of the data, and the only ``<CRLF>.<CRLF>`` is the
one ``finish()`` appends. A chunk that needs no change is returned as it is, not
copied.
"""

from __future__ import annotations

from ._errors import LocalProtocolError

__all__ = ["DataEncoder", "LineEndingNormalizer", "normalize_line_endings"]

_CR = b"\r"
_LF = b"\n"
_CRLF = b"\r\n"


def _has_bare_line_ends(chunk: bytes) -> bool:
    pairs = chunk.count(_CRLF)
    return chunk.count(_CR) != pairs or chunk.count(_LF) != pairs


def normalize_line_endings(chunk: bytes) -> bytes:
    """Turn every bare CR and bare LF into CRLF; a chunk that has none is returned."""
    if not _has_bare_line_ends(chunk):
        return chunk
    return chunk.replace(_CRLF, _LF).replace(_CR, _LF).replace(_LF, _CRLF)


class LineEndingNormalizer:
    """Streaming form of ``normalize_line_endings`` for a body sent in chunks.

    A chunk that ends in CR is returned without it: whether that CR is bare or the
    first half of a CRLF is known only from the next chunk (or ``finish()``).
    """

    __slots__ = ("_held_cr",)

    def __init__(self) -> None:
        self._held_cr = False

    @property
    def holds_cr(self) -> bool:
        return self._held_cr

    def feed(self, chunk: bytes) -> bytes:
        if self._held_cr:
            # Rare: a line ending was split across chunks.
            self._held_cr = False
            chunk = _CR + chunk
        if chunk.endswith(_CR):
            self._held_cr = True
            chunk = chunk[:-1]
        return normalize_line_endings(chunk) if chunk else b""

    def finish(self) -> bytes:
        """The held CR, if any, as the line ending it is."""
        held, self._held_cr = self._held_cr, False
        return _CRLF if held else b""


class DataEncoder:
    """Streaming transformer from message bytes to a DATA payload."""

    __slots__ = ("_at_line_start", "_finished", "_normalizer")

    def __init__(self) -> None:
        self._normalizer = LineEndingNormalizer()
        self._at_line_start = True
        self._finished = False

    def encode(self, chunk: bytes, *, normalized: bool = False) -> bytes:
        """Return the wire bytes for the next piece of the message.

        ``normalized``: the caller has already made every line ending CRLF (with
        ``normalize_line_endings``) and the chunk does not end in a bare CR, so
        the scan for bare ones is skipped.
        """
        if self._finished:
            raise LocalProtocolError("the message data has already been finished")
        if not normalized or self._normalizer.holds_cr or chunk.endswith(_CR):
            chunk = self._normalizer.feed(chunk)
        if not chunk:
            return chunk
        if b"\r\n." in chunk:
            chunk = chunk.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and chunk[0] == 0x2E:  # "."
            chunk = b"." + chunk
        self._at_line_start = chunk.endswith(_CRLF)
        return chunk

    def finish(self) -> bytes:
        """Return the bytes that end the payload: a line ending if one is due, and ".\r\n"."""
        if self._finished:
            raise LocalProtocolError("the message data has already been finished")
        self._finished = True
        if self._normalizer.finish() or not self._at_line_start:
            return b"\r\n.\r\n"
        return b".\r\n"
