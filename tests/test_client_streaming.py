"""Streaming bodies: binary files, BytesIO and async iterables of bytes, sent over
DATA (aiosmtpd, and the recording server for the exact wire bytes) and over BDAT,
with piece boundaries inside a CRLF and right before a line-starting dot; SIZE,
progress reports, and memory that stays flat for a large file."""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import aiosmtp

from .bdat_server import BDATServer, dot_stuffed, normalised
from .servers import aiosmtpd_server

pytestmark = pytest.mark.anyio

LIMIT = 20
TIMEOUT = 5.0

#: Every spot where a careless encoder goes wrong: CRLF, bare CR, bare LF, CR CR LF,
#: lines that start with one or two dots, a lone dot line, and no final line ending.
BODY = b"Subject: cut\r\n\r\n.a\r\n..b\rc\nd\r\r\ne\r\n.\r\n\n.\rf"


@dataclass
class Sink:
    """A server that stores messages, and how to read back what it stored."""

    kind: str
    host: str
    port: int
    contents: Callable[[], list[bytes]]
    mail_options: Callable[[], list[list[str]]]
    #: The raw DATA payloads as received (the recording server over DATA only).
    wire: Callable[[], list[bytes]] | None = None


@pytest.fixture(params=["DATA (aiosmtpd)", "DATA (wire)", "BDAT"])
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    kind: str = request.param
    if kind == "DATA (aiosmtpd)":
        with aiosmtpd_server() as smtpd:
            yield Sink(
                kind,
                smtpd.host,
                smtpd.port,
                lambda: [m.content for m in smtpd.messages],
                lambda: [m.mail_options for m in smtpd.messages],
            )
        return
    with BDATServer(chunking=kind == "BDAT") as server:
        yield Sink(
            kind,
            server.host,
            server.port,
            lambda: [m.data for m in server.messages],
            lambda: [m.mail_options for m in server.messages],
            None if kind == "BDAT" else lambda: [m.wire for m in server.messages],
        )


def client(sink: Sink) -> aiosmtp.SMTP:
    return aiosmtp.SMTP(sink.host, sink.port, "client.example", TIMEOUT)


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await anyio.lowlevel.checkpoint()
        yield part


class PieceReader:
    """A binary, non-seekable file object whose read() returns the given pieces (not
    the empty ones: for a file, b"" is the end)."""

    def __init__(self, *parts: bytes) -> None:
        self._parts = [part for part in parts if part]

    def read(self, size: int = -1, /) -> bytes:
        return self._parts.pop(0) if self._parts else b""


def assert_stored(sink: Sink, expected: list[bytes]) -> None:
    assert sink.contents() == expected
    if sink.wire is not None:
        assert sink.wire() == [dot_stuffed(text) for text in expected]


async def test_each_kind_of_body(sink: Sink, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(BODY)
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], BODY)
            await smtp.sendmail("a@x.org", ["b@x.org"], io.BytesIO(BODY))
            with path.open("rb") as file:
                await smtp.sendmail("a@x.org", ["b@x.org"], file)
            await smtp.sendmail("a@x.org", ["b@x.org"], pieces(BODY))
            await smtp.sendmail("a@x.org", ["b@x.org"], PieceReader(BODY))
    assert_stored(sink, [normalised(BODY)] * 5)


async def test_every_two_piece_split(sink: Sink) -> None:
    # Each cut in turn: inside a CRLF, between CR CR and LF, right before a dot that
    # starts a line, right after it, ...
    cuts = range(1, len(BODY))
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            for cut in cuts:
                await smtp.sendmail("a@x.org", ["b@x.org"], pieces(BODY[:cut], BODY[cut:]))
                await smtp.sendmail("a@x.org", ["b@x.org"], PieceReader(BODY[:cut], BODY[cut:]))
    assert_stored(sink, [normalised(BODY)] * (2 * len(cuts)))


async def test_one_byte_at_a_time_and_empty_pieces(sink: Sink) -> None:
    bytewise = [BODY[index : index + 1] for index in range(len(BODY))]
    with_empties = [piece for byte in bytewise for piece in (byte, b"")]
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], pieces(*bytewise))
            await smtp.sendmail("a@x.org", ["b@x.org"], pieces(*with_empties))
            await smtp.sendmail("a@x.org", ["b@x.org"], PieceReader(*bytewise))
    assert_stored(sink, [normalised(BODY)] * 3)


@pytest.mark.parametrize(
    "parts",
    [
        (b"x\r", b"\n.y\r\n"),  # the CR of a line ending, then its LF and a dot
        (b"x\r\n", b".y\r\n"),  # a piece that ends a line, then one that starts with a dot
        (b"x\r", b"\r\n", b".\r", b"\n"),  # CR | CR LF, then a lone dot split from its LF
        (b".", b".", b"\r", b"\n"),  # the first line: two dots, in pieces
        (b"x\r", b"", b"\n.", b""),  # empty pieces between the halves
        (b"\r", b"\r", b"\r"),  # only bare CRs, each in its own piece
    ],
)
async def test_awkward_boundaries(sink: Sink, parts: tuple[bytes, ...]) -> None:
    whole = b"".join(parts)
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], pieces(*parts))
            await smtp.sendmail("a@x.org", ["b@x.org"], PieceReader(*parts))
    assert_stored(sink, [normalised(whole)] * 2)


async def test_size_is_declared_when_the_length_is_known(sink: Sink, tmp_path: Path) -> None:
    text = b"Subject: size\r\n\r\n" + b"line\r\n" * 1000
    path = tmp_path / "sized.eml"
    path.write_bytes(text)
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], text)
            await smtp.sendmail("a@x.org", ["b@x.org"], io.BytesIO(text))
            with path.open("rb") as file:
                await smtp.sendmail("a@x.org", ["b@x.org"], file)
            await smtp.sendmail("a@x.org", ["b@x.org"], pieces(text))
            await smtp.sendmail("a@x.org", ["b@x.org"], PieceReader(text))
    sizes = [
        [option.upper() for option in options if option.upper().startswith("SIZE=")]
        for options in sink.mail_options()
    ]
    declared = [f"SIZE={len(text)}"]
    assert sizes == [declared, declared, declared, [], []]
    assert sink.contents() == [text] * 5


async def test_progress_counts_up_to_the_whole_body(sink: Sink, tmp_path: Path) -> None:
    line = b"a progress line, long enough to matter " + b"p" * 58 + b"\r\n"
    text = b"Subject: progress\r\n\r\n" + line * 30_000  # about 3 MB
    path = tmp_path / "progress.eml"
    path.write_bytes(text)
    from_file: list[int] = []
    from_stream: list[int] = []
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            with path.open("rb") as file:
                await smtp.sendmail("a@x.org", ["b@x.org"], file, progress=from_file.append)
            stream = pieces(
                *(text[start : start + 100_000] for start in range(0, len(text), 100_000))
            )
            await smtp.sendmail("a@x.org", ["b@x.org"], stream, progress=from_stream.append)
    for seen in (from_file, from_stream):
        assert len(seen) >= 2
        assert all(earlier < later for earlier, later in itertools.pairwise(seen))
        assert seen[0] > 0
        assert seen[-1] == len(text)
    assert sink.contents() == [text, text]


async def test_a_text_mode_file_is_refused(sink: Sink, tmp_path: Path) -> None:
    path = tmp_path / "text.eml"
    path.write_bytes(b"Subject: text\r\n\r\nhello\r\n")
    with anyio.fail_after(LIMIT):
        async with client(sink) as smtp:
            with (
                path.open(encoding="ascii") as text_file,
                pytest.raises(TypeError, match="binary"),
            ):
                await smtp.sendmail("a@x.org", ["b@x.org"], text_file)  # type: ignore[arg-type]
    assert sink.contents() == []


async def test_a_large_file_is_sent_with_bounded_memory(tmp_path: Path) -> None:
    size = 30_000_000
    line = b"." + b"m" * 997 + b"\r\n"  # leading dots: every line is stuffed on the way
    path = tmp_path / "large.eml"
    digest = hashlib.sha256()
    with path.open("wb") as file:
        block = line * 1000
        for _ in range(size // len(block)):
            file.write(block)
            digest.update(block)
        del block
    written = path.stat().st_size
    assert written == size
    gc.collect()
    with BDATServer(chunking=False, store=False) as server, anyio.fail_after(LIMIT):
        async with aiosmtp.SMTP(server.host, server.port, "client.example", TIMEOUT) as smtp:
            await smtp.ehlo()  # the session is warm before the measurement
            tracemalloc.start()
            try:
                with path.open("rb") as file:
                    await smtp.sendmail("a@x.org", ["b@x.org"], file)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        [message] = server.messages
        assert message.via == "DATA"
        assert message.size == written
        assert message.sha256 == digest.hexdigest()
    assert peak < 8_000_000, f"peak {peak} bytes while sending {written} bytes"
