"""Message bodies as the client reads them: bytes, a binary file, an async iterable.

A body yields raw chunks of bounded size; the DATA and BDAT encoders of the core
normalise them on the way, so memory stays bounded for files and streams of any
size. ``size`` is what SIZE declares (RFC 1870), known for bytes and for seekable
files; ``replayable`` says whether the same bytes can be read again for a retry.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable
from typing import Any, Protocol, cast

import anyio.to_thread

from .protocol import normalize_line_endings

__all__ = ["CHUNK_SIZE", "READ_SIZE", "MessageBody", "as_body"]

#: The largest BDAT chunk: large enough that a chunk's command line costs nothing,
#: small enough that streaming a file of any size stays within a few MiB.
CHUNK_SIZE = 1 << 19
#: Bytes read from a file, or taken from a stream's piece, at a time.
READ_SIZE = 1 << 18


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes | Awaitable[bytes]: ...


class MessageBody:
    """Base class: what every kind of body offers the client."""

    size: int | None = None
    replayable: bool = False

    def chunks(self) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError

    def rewind(self) -> None:
        """Make the next ``chunks()`` start from the beginning again."""
        if not self.replayable:
            raise ValueError("this message body cannot be read twice")


class BytesBody(MessageBody):
    replayable = True

    def __init__(self, data: bytes) -> None:
        # Normalised, and ended with a line ending as the data must be, up front:
        # SIZE then counts exactly the bytes that are sent.
        data = normalize_line_endings(data)
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        self.data = data
        self.size = len(data)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        yield self.data


class FileBody(MessageBody):
    def __init__(self, file: _Readable) -> None:
        self.file = file
        self._start: int | None = None
        self._in_memory = isinstance(file, io.BytesIO)
        try:
            seekable: Any = file
            if seekable.seekable():
                self._start = seekable.tell()
                end = seekable.seek(0, io.SEEK_END)
                seekable.seek(self._start)
                # The file's own length: normalising bare line endings on the way may
                # add a few bytes, which SIZE's estimate tolerates.
                self.size = end - self._start
                self.replayable = True
        except (AttributeError, OSError, TypeError):
            pass

    async def _read(self) -> bytes:
        if self._in_memory:
            data = self.file.read(READ_SIZE)
        else:
            data = await anyio.to_thread.run_sync(self.file.read, READ_SIZE)
        if inspect.isawaitable(data):
            data = await data
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"the message file must be opened in binary mode, read gave {data!r:.40}"
            )
        return bytes(data)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        while chunk := await self._read():
            yield chunk

    def rewind(self) -> None:
        super().rewind()
        cast(Any, self.file).seek(self._start)


class AsyncIterableBody(MessageBody):
    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self.source = source
        self._consumed = False

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        if self._consumed:
            raise ValueError("an async iterable message body can be sent only once")
        self._consumed = True
        async for chunk in self.source:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(
                    f"the message iterable must yield bytes, not {type(chunk).__name__}"
                )
            # Bounded chunks whatever the producer yields.
            view = memoryview(chunk)
            for start in range(0, len(view), READ_SIZE):
                yield bytes(view[start : start + READ_SIZE])


MessageSource = (
    str | bytes | bytearray | memoryview | _Readable | AsyncIterable[bytes] | MessageBody
)


def as_body(msg: object) -> MessageBody:
    """Wrap what the caller passed as a message."""
    if isinstance(msg, MessageBody):
        return msg
    if isinstance(msg, str):
        # smtplib refuses non-ASCII text in a str message the same way.
        return BytesBody(msg.encode("ascii"))
    if isinstance(msg, bytes):
        return BytesBody(msg)
    if isinstance(msg, bytearray | memoryview):
        return BytesBody(bytes(msg))
    if hasattr(msg, "read"):
        return FileBody(cast(_Readable, msg))
    if hasattr(msg, "__aiter__"):
        return AsyncIterableBody(cast(AsyncIterable[bytes], msg))
    raise TypeError(
        "the message must be str, bytes, a binary file or an async iterable of bytes, "
        f"not {type(msg).__name__}"
    )
