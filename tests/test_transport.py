"""Which transport the client runs on, and the asyncio transport's own corners."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

import aiosmtp
from aiosmtp._asyncio_transport import AsyncioTransport
from aiosmtp._transport import AnyioTransport

from .bdat_server import BDATServer

pytestmark = pytest.mark.anyio

NAME = "client.example"


@pytest.fixture
def server() -> Iterator[BDATServer]:
    with BDATServer(chunking=False) as server:
        yield server


async def test_the_transport_follows_the_backend(anyio_backend: str, server: BDATServer) -> None:
    async with aiosmtp.SMTP(server.host, server.port, local_hostname=NAME) as smtp:
        await smtp.sendmail("a@x.org", ["b@x.org"], b"Subject: t\r\n\r\nx\r\n")
        expected = AsyncioTransport if anyio_backend == "asyncio" else AnyioTransport
        assert type(smtp._transport) is expected
    assert len(server.messages) == 1


async def test_the_anyio_transport_can_be_chosen_on_asyncio(
    anyio_backend: str, server: BDATServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOSMTP_TRANSPORT", "anyio")
    async with aiosmtp.SMTP(server.host, server.port, local_hostname=NAME) as smtp:
        await smtp.sendmail("a@x.org", ["b@x.org"], b"Subject: t\r\n\r\nx\r\n")
        assert type(smtp._transport) is AnyioTransport
    assert len(server.messages) == 1


async def test_one_timer_serves_many_waits_and_still_fires(server: BDATServer) -> None:
    async with aiosmtp.SMTP(server.host, server.port, local_hostname=NAME, timeout=0.3) as smtp:
        for number in range(20):
            await smtp.sendmail("a@x.org", ["b@x.org"], f"Subject: {number}\r\n\r\nx\r\n")
        # The deadline of the reply to the dot moved later with every wait; a
        # reply that never comes still times out, after the timeout and not long after.
        server.hold_final_replies()
        started = anyio.current_time()
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError) as caught:
            await smtp.sendmail("a@x.org", ["b@x.org"], b"Subject: late\r\n\r\nx\r\n")
        assert isinstance(caught.value.__cause__, aiosmtp.SMTPTimeoutError)
        assert 0.25 <= anyio.current_time() - started < 5
        assert smtp.is_closed
        server.release_final_replies()
