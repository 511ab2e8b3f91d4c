"""A one-line progress bar on stderr, fed by the client's ``progress`` callback."""

from __future__ import annotations

from typing import TextIO

__all__ = ["LARGE_MESSAGE", "ProgressBar"]

#: From this size on, a message gets a progress bar when stderr is a terminal.
LARGE_MESSAGE = 1 << 20

_WIDTH = 30


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


class ProgressBar:
    """``bar(bytes_sent)`` redraws the line when the shown percentage changes."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self._shown = -1

    def __call__(self, sent: int) -> None:
        # Normalising line endings may add a few bytes to what goes out.
        sent = min(sent, self.total)
        percent = sent * 100 // self.total
        if percent == self._shown:
            return
        self._shown = percent
        filled = _WIDTH * sent // self.total
        bar = "#" * filled + "." * (_WIDTH - filled)
        self.stream.write(f"\rsending [{bar}] {percent:3d}% {_mib(sent)}/{_mib(self.total)} MiB")
        self.stream.flush()

    def finish(self) -> None:
        if self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()
