"""LMTP (RFC 2033) against scripted servers, over a Unix socket and over TCP."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import aiosmtp

from .scripted import (
    ScriptedServers,
    ServerConnection,
    Step,
    call,
    client,
    close,
    ehlo_ok,
    expect,
    expect_together,
    quit_ok,
    send,
    sleep,
)

pytestmark = pytest.mark.anyio

MSG = b"Subject: lmtp\r\n\r\nHello\r\n"
LMTP_GREETING = b"220 lmtp.example LMTP ready\r\n"
NOOP_OK = b"250 2.0.0 noop-ok\r\n"


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "lmtp.sock"
    if len(str(path)) < 100:
        yield str(path)
        return
    # AF_UNIX paths are limited to about 104 bytes.
    with tempfile.TemporaryDirectory(prefix="lmtp") as directory:
        yield str(Path(directory) / "s")


def lhlo(*features: str) -> list[Step]:
    return [send(LMTP_GREETING), *ehlo_ok(*features, verb="LHLO")]


def lockstep_envelope(refuse: dict[str, bytes]) -> list[Step]:
    steps: list[Step] = [expect(b"MAIL FROM:<a@x.org>\r\n"), send(b"250 2.1.0 ok\r\n")]
    for rcpt in ("b@x.org", "c@x.org", "d@x.org"):
        steps += [
            expect(f"RCPT TO:<{rcpt}>\r\n".encode()),
            send(refuse.get(rcpt, b"250 2.1.5 ok\r\n")),
        ]
    return steps


def optional_rset_then_noop(conn: ServerConnection) -> None:
    """Whether the client says RSET after the refusal is its business; the next
    command read must be answered in step either way."""
    line = conn.read_line()
    if line == b"RSET\r\n":
        conn.send(b"250 2.0.0 flushed\r\n")
        line = conn.read_line()
    if line != b"NOOP\r\n":
        raise AssertionError(f"expected NOOP, got {line!r}")
    conn.send(NOOP_OK)


async def test_lmtp_over_a_unix_socket(scripted: ScriptedServers, socket_path: str) -> None:
    server = scripted(
        lhlo("ENHANCEDSTATUSCODES", "8BITMIME"),
        lockstep_envelope({"c@x.org": b"550 5.1.1 no such user c\r\n"}),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG + b".\r\n"),
        # One reply per accepted recipient (b, then d), not in one packet.
        send(b"250 2.1.5 b delivered\r\n"),
        sleep(0.02),
        send(b"452 4.2.2 d over quota\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
        unix_path=socket_path,
    )
    with anyio.fail_after(5):
        async with client(server, aiosmtp.LMTP) as lmtp:
            result = await lmtp.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], MSG)
            assert result == {
                "c@x.org": (550, b"5.1.1 no such user c"),
                "d@x.org": (452, b"4.2.2 d over quota"),
            }
            assert result.reply == (452, b"4.2.2 d over quota")
            # Every per-recipient reply was read: the next reply is the NOOP's.
            assert await lmtp.noop() == (250, b"2.0.0 noop-ok")
    assert server.transcript.startswith(b"LHLO client.example\r\n")


async def test_lmtp_over_tcp_with_pipelining(scripted: ScriptedServers) -> None:
    server = scripted(
        lhlo("PIPELINING", "SIZE 100000"),
        expect_together(
            f"MAIL FROM:<a@x.org> SIZE={len(MSG)}\r\n".encode()
            + b"RCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\nRCPT TO:<d@x.org>\r\nDATA\r\n"
        ),
        send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no c\r\n250 2.1.5 ok\r\n354 go\r\n"),
        expect(MSG + b".\r\n"),
        send(b"451 4.3.0 b failed\r\n250 2.0.0 d delivered\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
    )
    with anyio.fail_after(5):
        lmtp = client(server, aiosmtp.LMTP)
        assert await lmtp.connect(server.host, server.port) == (220, LMTP_GREETING[4:-2])
        assert (await lmtp.ehlo()).code == 250
        result = await lmtp.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], MSG)
        assert result == {"b@x.org": (451, b"4.3.0 b failed"), "c@x.org": (550, b"5.1.1 no c")}
        assert result.reply == (250, b"2.0.0 d delivered")
        assert await lmtp.noop() == (250, b"2.0.0 noop-ok")
        await lmtp.quit()


async def test_lmtp_every_recipient_refused_after_the_data(
    scripted: ScriptedServers, socket_path: str
) -> None:
    server = scripted(
        lhlo("8BITMIME"),
        lockstep_envelope({"c@x.org": b"550 5.1.1 no c\r\n"}),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG + b".\r\n"),
        send(b"552 5.2.2 b over quota\r\n450 4.2.0 d busy\r\n"),
        call(optional_rset_then_noop),
        quit_ok(),
        unix_path=socket_path,
    )
    with anyio.fail_after(5):
        async with client(server, aiosmtp.LMTP) as lmtp:
            with pytest.raises(aiosmtp.SMTPRecipientsRefused) as info:
                await lmtp.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], MSG)
            assert info.value.recipients == {
                "b@x.org": (552, b"5.2.2 b over quota"),
                "c@x.org": (550, b"5.1.1 no c"),
                "d@x.org": (450, b"4.2.0 d busy"),
            }
            assert await lmtp.noop() == (250, b"2.0.0 noop-ok")


async def test_lmtp_every_recipient_refused_at_rcpt(
    scripted: ScriptedServers, socket_path: str
) -> None:
    refused = {
        "b@x.org": b"550 5.1.1 no b\r\n",
        "c@x.org": b"550 5.1.1 no c\r\n",
        "d@x.org": b"450 4.2.1 d later\r\n",
    }
    server = scripted(
        lhlo("8BITMIME"),
        lockstep_envelope(refused),
        expect(b"RSET\r\n"),
        send(b"250 2.0.0 flushed\r\n"),
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        quit_ok(),
        unix_path=socket_path,
    )
    with anyio.fail_after(5):
        async with client(server, aiosmtp.LMTP) as lmtp:
            with pytest.raises(aiosmtp.SMTPRecipientsRefused) as info:
                await lmtp.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], MSG)
            assert info.value.recipients == {
                "b@x.org": (550, b"5.1.1 no b"),
                "c@x.org": (550, b"5.1.1 no c"),
                "d@x.org": (450, b"4.2.1 d later"),
            }
            assert await lmtp.noop() == (250, b"2.0.0 noop-ok")


async def test_lmtp_connection_lost_between_recipient_replies(
    scripted: ScriptedServers, socket_path: str
) -> None:
    server = scripted(
        lhlo("8BITMIME"),
        lockstep_envelope({}),
        expect(b"DATA\r\n"),
        send(b"354 go\r\n"),
        expect(MSG + b".\r\n"),
        send(b"250 2.0.0 b delivered\r\n"),
        close(),
        unix_path=socket_path,
    )
    with anyio.fail_after(5):
        lmtp = client(server, aiosmtp.LMTP)
        await lmtp.connect(socket_path)
        # b got it, c and d may or may not have: the outcome is unknown.
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
            await lmtp.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], MSG)
        assert lmtp.is_closed


async def test_lmtp_sends_lhlo_never_ehlo(scripted: ScriptedServers) -> None:
    server = scripted(
        send(LMTP_GREETING),
        expect(b"LHLO other.example\r\n"),
        send(b"250-lmtp.example\r\n250 PIPELINING\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with aiosmtp.LMTP(
            server.host, server.port, local_hostname="client.example", timeout=0.3
        ) as lmtp:
            assert await lmtp.ehlo("other.example") == (250, b"lmtp.example\nPIPELINING")
            assert lmtp.does_esmtp
            assert lmtp.has_extn("pipelining")
