"""CHUNKING (RFC 3030) and streaming bodies, against a small BDAT-speaking server."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import aiosmtp
from aiosmtp._body import CHUNK_SIZE

from .servers import RunningServer

pytestmark = pytest.mark.anyio


class ChunkingServer:
    """EHLO offers PIPELINING (optional), CHUNKING and SIZE; records every line,
    every BDAT size and every message; LMTP mode answers once per recipient."""

    def __init__(
        self, *, lmtp: bool = False, pipelining: bool = True, refuse: frozenset[str] = frozenset()
    ) -> None:
        self.lmtp = lmtp
        self.pipelining = pipelining
        self.refuse = refuse
        self.refuse_chunk: int | None = None
        self.lines: list[bytes] = []
        self.reads: list[bytes] = []
        self.messages: list[tuple[list[str], bytes]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        recipients: list[str] = []
        body = b""
        chunks = 0
        failed = False
        with conn:
            conn.sendall(b"220 chunky\r\n")
            while line := reader.readline():
                self.lines.append(line)
                words = line.split()
                verb = words[0].upper()
                if verb in (b"EHLO", b"LHLO"):
                    extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                    conn.sendall(
                        b"250-chunky\r\n" + extra + b"250-SIZE 1000000000\r\n250 CHUNKING\r\n"
                    )
                elif verb == b"MAIL":
                    recipients, body, chunks, failed = [], b"", 0, False
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"RCPT":
                    address = words[1][4:-1].decode()
                    if address in self.refuse:
                        conn.sendall(b"550 5.1.1 no such user\r\n")
                    else:
                        recipients.append(address)
                        conn.sendall(b"250 ok\r\n")
                elif verb == b"BDAT":
                    size = int(words[1])
                    data = reader.read(size)
                    chunks += 1
                    if failed or not recipients:
                        conn.sendall(b"503 5.5.1 no valid recipients\r\n")
                        continue
                    if chunks == self.refuse_chunk:
                        failed = True
                        conn.sendall(b"552 5.3.4 chunk refused\r\n")
                        continue
                    body += data
                    if len(words) > 2:
                        self.messages.append((recipients, body))
                        if self.lmtp:
                            for address in recipients:
                                conn.sendall(f"250 2.0.0 <{address}> delivered\r\n".encode())
                        else:
                            conn.sendall(b"250 2.0.0 queued\r\n")
                    else:
                        conn.sendall(b"250 2.0.0 chunk ok\r\n")
                elif verb == b"RSET":
                    recipients, body, failed = [], b"", False
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"502 no\r\n")

    def bdat_lines(self) -> list[bytes]:
        return [line for line in self.lines if line.startswith(b"BDAT")]


@pytest.fixture
def chunky() -> Iterator[ChunkingServer]:
    server = ChunkingServer()
    yield server
    server.close()


async def test_one_message_is_one_bdat_last(chunky: ChunkingServer) -> None:
    async with aiosmtp.SMTP("127.0.0.1", chunky.port, timeout=5) as smtp:
        result = await smtp.sendmail(
            "a@x.org", ["b@x.org", "c@x.org"], b"Subject: x\n\n.dot\nend\r"
        )
    assert result == {}
    assert result.reply == (250, b"2.0.0 queued")
    # Line endings normalised; no dot-stuffing in BDAT; the size counts what is sent.
    expected = b"Subject: x\r\n\r\n.dot\r\nend\r\n"
    assert chunky.messages == [(["b@x.org", "c@x.org"], expected)]
    assert chunky.bdat_lines() == [f"BDAT {len(expected)} LAST\r\n".encode()]
    assert not any(line.startswith(b"DATA") for line in chunky.lines)


async def test_a_large_body_goes_in_bounded_chunks(chunky: ChunkingServer) -> None:
    body = (b"y" * 99 + b"\n") * 30_000  # 3 MB of bare-LF lines
    async with aiosmtp.SMTP("127.0.0.1", chunky.port, timeout=5) as smtp:
        await smtp.sendmail("a@x.org", ["b@x.org"], body)
    sizes = [int(line.split()[1]) for line in chunky.bdat_lines()]
    assert len(sizes) >= 3
    assert all(size <= 2 * CHUNK_SIZE for size in sizes)
    assert chunky.bdat_lines()[-1].endswith(b" LAST\r\n")
    assert chunky.messages[0][1] == body.replace(b"\n", b"\r\n")
    assert sum(sizes) == len(body) + body.count(b"\n")


async def test_refusals(chunky: ChunkingServer) -> None:
    chunky.refuse = frozenset({"nobody@x.org"})
    async with aiosmtp.SMTP("127.0.0.1", chunky.port, timeout=5) as smtp:
        result = await smtp.sendmail("a@x.org", ["nobody@x.org", "b@x.org"], b"hi\r\n")
        assert result == {"nobody@x.org": (550, b"5.1.1 no such user")}
        with pytest.raises(aiosmtp.SMTPRecipientsRefused) as refused:
            await smtp.sendmail("a@x.org", ["nobody@x.org"], b"hi\r\n")
        assert list(refused.value.recipients) == ["nobody@x.org"]
        assert chunky.lines[-1] == b"RSET\r\n"
        chunky.refuse_chunk = 2
        with pytest.raises(aiosmtp.SMTPDataError) as caught:
            await smtp.sendmail("a@x.org", ["b@x.org"], b"z" * (3 * CHUNK_SIZE))
        assert caught.value.smtp_code == 552
        # After the refused chunk no further chunk was sent, and RSET ended it.
        assert len(chunky.bdat_lines()) == 2 + 2
        assert chunky.lines[-1] == b"RSET\r\n"
        assert (await smtp.noop()).code == 502  # still in step


async def test_without_pipelining_bdat_goes_step_by_step() -> None:
    server = ChunkingServer(pipelining=False)
    try:
        async with aiosmtp.SMTP("127.0.0.1", server.port, timeout=5) as smtp:
            await smtp.sendmail("a@x.org", ["b@x.org"], b"one\r\n")
        assert server.messages == [(["b@x.org"], b"one\r\n")]
    finally:
        server.close()


async def test_chunking_can_be_turned_off(chunky: ChunkingServer) -> None:
    async with aiosmtp.SMTP("127.0.0.1", chunky.port, timeout=5, chunking=False) as smtp:
        await smtp.ehlo()
        assert smtp.has_extn("chunking")
        with pytest.raises(aiosmtp.SMTPDataError):
            await smtp.sendmail("a@x.org", ["b@x.org"], b"one\r\n")  # the server has no DATA
    assert any(line.startswith(b"DATA") for line in chunky.lines)
    assert chunky.bdat_lines() == []


async def test_lmtp_reports_each_recipient_after_bdat_last() -> None:
    server = ChunkingServer(lmtp=True, refuse=frozenset({"z@x.org"}))
    try:
        async with aiosmtp.LMTP("127.0.0.1", server.port, timeout=5) as lmtp:
            result = await lmtp.sendmail("a@x.org", ["b@x.org", "z@x.org", "c@x.org"], b"hi\r\n")
            assert result == {"z@x.org": (550, b"5.1.1 no such user")}
            assert result.reply == (250, b"2.0.0 <c@x.org> delivered")
            assert (await lmtp.noop()).code == 502  # every per-recipient reply was read
    finally:
        server.close()


async def test_streamed_bodies_over_bdat(chunky: ChunkingServer, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(b"Subject: file\n\n" + b"line\n" * 300_000)

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"Subject: stream\r", b"\n\r\n.a\r", b"\nb"):
            yield piece

    seen: list[int] = []
    async with aiosmtp.SMTP("127.0.0.1", chunky.port, timeout=5) as smtp:
        with path.open("rb") as file:
            await smtp.sendmail("a@x.org", ["b@x.org"], file, progress=seen.append)
        await smtp.sendmail("a@x.org", ["b@x.org"], pieces())
    assert chunky.messages[0][1] == path.read_bytes().replace(b"\n", b"\r\n")
    assert chunky.messages[1][1] == b"Subject: stream\r\n\r\n.a\r\nb\r\n"
    assert seen == sorted(seen)
    assert seen[-1] == len(chunky.messages[0][1])
    mail_lines = [line for line in chunky.lines if line.startswith(b"MAIL")]
    assert mail_lines[0] == f"MAIL FROM:<a@x.org> SIZE={path.stat().st_size}\r\n".encode()
    assert mail_lines[1] == b"MAIL FROM:<a@x.org>\r\n"  # unknown length: no SIZE


async def test_streamed_bodies_over_data(smtpd: RunningServer) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"Subject: s\r", b"\n\r\n", b".", b"dot\r", b"\nlast"):
            yield piece

    async with aiosmtp.SMTP(smtpd.host, smtpd.port, timeout=5) as smtp:
        await smtp.sendmail("a@x.org", ["b@x.org"], io.BytesIO(b"Subject: b\n\n..two\n"))
        await smtp.sendmail("a@x.org", ["b@x.org"], pieces())
        with pytest.raises(TypeError, match="binary"):
            await smtp.sendmail("a@x.org", ["b@x.org"], io.StringIO("text"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="must be str, bytes"):
            await smtp.sendmail("a@x.org", ["b@x.org"], 42)  # type: ignore[arg-type]
    assert [m.content for m in smtpd.messages] == [
        b"Subject: b\r\n\r\n..two\r\n",
        b"Subject: s\r\n\r\n.dot\r\nlast\r\n",
    ]


async def test_a_stream_can_be_sent_only_once(smtpd: RunningServer) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"Subject: once\r\n\r\nx\r\n"

    body = pieces()
    async with aiosmtp.SMTP(smtpd.host, smtpd.port, timeout=5) as smtp:
        await smtp.sendmail("a@x.org", ["b@x.org"], body)
        with anyio.fail_after(5):
            await smtp.sendmail("a@x.org", ["b@x.org"], body)
    # The exhausted iterator sent an empty message the second time, never the first again.
    assert smtpd.messages[0].content == b"Subject: once\r\n\r\nx\r\n"
    assert len(smtpd.messages) <= 2
