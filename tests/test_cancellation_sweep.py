"""Systematic cancellation: a send cancelled at every transport operation in turn.

Theory of operation: a first run of the send counts its transport operations
(``TransportOps``, the one hook into the client's internals; the socket stays
real). Then, for every k, a fresh send is cancelled just before, or just after,
its k-th operation, and the client must be either closed (a NOOP refused locally,
then a new ``connect()``) or in step with the server (NOOP and RSET answered as
such). Either way the next transaction must deliver exactly one message, and the
server (tests/bdat_server.py, which records every connection, reply and message)
must never have had to answer nonsense: an out-of-step client shows as a 4xx or
5xx reply, or as a message stored twice or not at all.

The cancelled message itself may have reached the server only if the last write
of its data had completed before the cancellation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import anyio
import pytest

import aiosmtp
from aiosmtp._body import CHUNK_SIZE

from .bdat_server import BDATServer, normalised
from .faults_server import TransportOps

pytestmark = pytest.mark.anyio

NAME = "client.example"
#: No timeout is meant to fire here; it only bounds a broken run.
TIMEOUT = 5.0
LIMIT = 60

#: Large enough for two writes of data (the body, then the final dot).
DATA_MESSAGE = b"Subject: sweep\r\n\r\n" + b"".join([b"d" * 98 + b"\r\n"] * 1000)
#: Two BDAT chunks.
BDAT_MESSAGE = b"Subject: sweep\r\n\r\n" + b"".join(
    [b"c" * 98 + b"\r\n"] * (CHUNK_SIZE // 100 + 10)
)


@dataclass(frozen=True)
class Scenario:
    name: str
    chunking: bool
    pipelining: bool
    message: bytes


SCENARIOS = [
    Scenario("DATA-pipelined", chunking=False, pipelining=True, message=DATA_MESSAGE),
    Scenario("DATA-lockstep", chunking=False, pipelining=False, message=DATA_MESSAGE),
    Scenario("BDAT-pipelined", chunking=True, pipelining=True, message=BDAT_MESSAGE),
]

Target = Literal["sendmail", "pool"]


@pytest.fixture(params=SCENARIOS, ids=[scenario.name for scenario in SCENARIOS])
def scenario(request: pytest.FixtureRequest) -> Scenario:
    value: Scenario = request.param
    return value


@pytest.fixture
def server(scenario: Scenario) -> Iterator[BDATServer]:
    with BDATServer(chunking=scenario.chunking, pipelining=scenario.pipelining) as server:
        yield server


@pytest.fixture
def ops() -> Iterator[TransportOps]:
    with TransportOps().installed() as ops:
        yield ops


def _client(server: BDATServer) -> aiosmtp.SMTP:
    return aiosmtp.SMTP(server.host, server.port, local_hostname=NAME, timeout=TIMEOUT)


def _pool(server: BDATServer) -> aiosmtp.SMTPPool:
    return aiosmtp.SMTPPool(
        server.host, server.port, tls="none", timeout=TIMEOUT, local_hostname=NAME
    )


def _stored(server: BDATServer, recipient: str) -> list[bytes]:
    return [message.data for message in server.messages if message.recipients == [recipient]]


async def _send_cancelled(
    target: Target,
    server: BDATServer,
    scenario: Scenario,
    ops: TransportOps,
    recipient: str,
    cancel_at: int | None,
    mode: str,
) -> tuple[bool, int, int]:
    """Send once, cancelled at ``cancel_at`` (None: not at all), then send another
    message and check what the server got. Returns (cancelled, operations counted,
    writes completed before the cancellation)."""
    after = f"after-{recipient}"
    scope = anyio.CancelScope()
    if target == "sendmail":
        smtp = _client(server)
        await smtp.connect(server.host, server.port)
        # The EHLO is part of what is swept: sendmail says it.
        with scope:
            ops.arm(scope, cancel_at, mode)
            await smtp.sendmail("a@x.org", [recipient], scenario.message)
        ops.disarm()
        if smtp.is_closed:
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.noop()
            await smtp.connect(server.host, server.port)
        else:
            # In step: each reply is the one to its own command.
            assert await smtp.noop() == (250, b"2.0.0 Ok")
            assert await smtp.rset() == (250, b"2.0.0 Ok")
        result = await smtp.sendmail("a@x.org", [after], scenario.message)
        await smtp.quit()
    else:
        async with _pool(server) as pool:
            with scope:
                ops.arm(scope, cancel_at, mode)
                await pool.sendmail("a@x.org", [recipient], scenario.message)
            ops.disarm()
            result = await pool.sendmail("a@x.org", [after], scenario.message)
    assert result == {}
    assert result.reply.code == 250
    # Exactly one copy of the next message, whole.
    assert _stored(server, after) == [normalised(scenario.message)]
    return scope.cancelled_caught, ops.count, ops.completed_sends


@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("target", ["sendmail", "pool"])
async def test_cancel_at_every_operation(
    server: BDATServer, scenario: Scenario, ops: TransportOps, target: Target, mode: str
) -> None:
    with anyio.fail_after(LIMIT):
        cancelled, count, sends = await _send_cancelled(
            target, server, scenario, ops, "counting@x.org", None, mode
        )
        assert not cancelled
        assert _stored(server, "counting@x.org") == [normalised(scenario.message)]
        assert "send" in ops.kinds
        assert "receive" in ops.kinds
        outcomes = set()
        for k in range(count):
            recipient = f"k{k}@x.org"
            cancelled, _, sends_done = await _send_cancelled(
                target, server, scenario, ops, recipient, k, mode
            )
            # Fewer operations this time (replies read together) may end it early.
            outcomes.add("cancelled" if cancelled else "sent")
            stored = _stored(server, recipient)
            if cancelled and sends_done < sends:
                # The last write of the data never completed: nothing was delivered.
                assert stored == [], f"k={k}"
            else:
                assert stored in ([], [normalised(scenario.message)]), f"k={k}"
    assert "cancelled" in outcomes
    # Never out of step: the server never had to refuse anything.
    for connection in server.connections:
        replies = [data for side, data in connection.transcript if side == "S"]
        odd = [reply for reply in replies if reply[:1] in (b"4", b"5")]
        assert odd == [], (connection.number, odd)
    await _all_closed(server)


async def _all_closed(server: BDATServer) -> None:
    with anyio.fail_after(5):
        while server.open_now:  # noqa: ASYNC110 (set by the server's threads)
            await anyio.sleep(0.005)
