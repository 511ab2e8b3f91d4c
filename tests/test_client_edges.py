"""Corners of the client that the larger suites do not reach."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import pytest

import aiosmtp
from aiosmtp import client as client_module

from .scripted import ScriptedServers, client, ehlo_ok, expect, greet, quit_ok, send
from .servers import RunningServer

pytestmark = pytest.mark.anyio


async def test_repr_and_connection_state(smtpd: RunningServer) -> None:
    smtp = aiosmtp.SMTP(smtpd.host, smtpd.port, timeout=5)
    assert "not connected" in repr(smtp)
    assert smtp.has_unsolicited_input()
    async with smtp:
        assert "READY" in repr(smtp)
        assert not smtp.has_unsolicited_input()
        assert not smtp.is_tls
    assert smtp.is_closed


async def test_leaving_the_block_raises_on_a_refused_quit(scripted: ScriptedServers) -> None:
    server = scripted(greet(), expect(b"QUIT\r\n"), send(b"500 5.5.1 no quitting\r\n"))
    with anyio.fail_after(5):
        smtp = client(server)
        with pytest.raises(aiosmtp.SMTPResponseException) as caught:
            async with smtp:
                pass
        assert caught.value.smtp_code == 500
        assert smtp.is_closed


async def test_leaving_the_block_mid_data_keeps_the_callers_exception(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("8BITMIME"),
        expect(b"DATA\r\n"),
        send(b"354 go on\r\n"),
    )
    smtp = client(server)

    async def session() -> None:
        async with smtp:
            await smtp.ehlo()
            assert (await smtp.docmd("DATA")).code == 354
            # In the data phase no command may be sent: a clear error, nothing sent.
            with pytest.raises(aiosmtp.SMTPException, match="cannot send"):
                await smtp.noop()
            raise KeyError("the caller's")

    with anyio.fail_after(5), pytest.raises(KeyError, match="the caller's"):
        await session()
    assert smtp.is_closed


async def test_a_refused_starttls_raises(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("STARTTLS"),
        expect(b"STARTTLS\r\n"),
        send(b"454 4.7.0 TLS not available\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPResponseException) as caught:
                await smtp.starttls()
            assert caught.value.smtp_code == 454
            assert caught.value.enhanced_status == "4.7.0"


async def test_bdat_trace_in_debug_output(
    scripted: ScriptedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("CHUNKING"),
        expect(b"MAIL FROM:<a@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@x.org>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"BDAT 4 LAST\r\nhi\r\n"),
        send(b"250 queued\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            smtp.set_debuglevel(1)
            await smtp.sendmail("a@x.org", ["b@x.org"], b"hi")
    err = capsys.readouterr().err
    assert "BDAT 4 LAST" in err
    assert "<message data in BDAT chunks, 4 bytes>" in err


async def test_many_small_pieces_are_gathered_into_large_writes(smtpd: RunningServer) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"Subject: pieces\r\n\r\n"
        for _ in range(20_000):
            yield b"0123456789\r\n"

    async with aiosmtp.SMTP(smtpd.host, smtpd.port, timeout=5) as smtp:
        await smtp.sendmail("a@x.org", ["b@x.org"], pieces())
    assert smtpd.messages[0].content.count(b"0123456789\r\n") == 20_000


def test_the_local_hostname_falls_back_to_an_address_literal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda: "localhost")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "192.0.2.7")
    assert client_module._local_hostname() == "[192.0.2.7]"

    def unresolvable(name: str) -> str:
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "gethostbyname", unresolvable)
    assert client_module._local_hostname() == "[127.0.0.1]"
    monkeypatch.setattr(socket, "getfqdn", lambda: "mx.example.com")
    assert client_module._local_hostname() == "mx.example.com"


async def test_the_single_chunk_iterator_ends() -> None:
    chunks = client_module._SingleChunk(b"data")
    assert chunks.__aiter__() is chunks
    assert await anext(chunks) == (b"data", True)
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)
