"""The throughput path (one ``SMTPPool``, 16 tasks sharing it) under uvloop.

    python examples/uvloop_bulk.py HOST PORT [COUNT] [CONNECTIONS]

aiosmtp runs on anyio, so it runs unchanged on any asyncio event loop; uvloop
only swaps the loop underneath. Sixteen tasks take messages from a shared counter
and send each through the pool, which overlaps one message's reply with the next
message's commands on each connection. Falls back to the standard loop (and says
so) where uvloop is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
import time
from collections.abc import Callable

import anyio

import aiosmtp

TASKS = 16


async def send_all(host: str, port: int, count: int, connections: int = 4) -> int:
    remaining = count
    accepted = 0

    async with aiosmtp.SMTPPool(
        host,
        port,
        max_connections=connections,
        max_messages_per_connection=1000,
        tls="opportunistic",
        timeout=30,
    ) as pool:

        async def worker() -> None:
            nonlocal remaining, accepted
            while remaining > 0:
                remaining -= 1
                number = count - remaining - 1
                body = f"Subject: bulk {number}\r\n\r\nmessage {number}\r\n".encode()
                await pool.sendmail("bulk@example.com", [f"user{number}@example.com"], body)
                accepted += 1

        async with anyio.create_task_group() as tasks:
            for _ in range(TASKS):
                tasks.start_soon(worker)
    return accepted


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    try:
        import uvloop
    except ImportError:
        return "asyncio (uvloop is not installed)", None
    return f"uvloop {importlib.metadata.version('uvloop')}", uvloop.new_event_loop


def main(host: str, port: int, count: int, connections: int) -> int:
    name, factory = loop_factory()
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=factory) as runner:
        accepted = runner.run(send_all(host, port, count, connections))
        loop = type(runner.get_loop())
    seconds = time.perf_counter() - started
    print(f"{name} ({loop.__module__}.{loop.__qualname__}): {accepted} of {count} accepted")
    print(f"{accepted / seconds:.0f} messages/s with {connections} connections, {TASKS} tasks")
    return accepted


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(
        arguments[0],
        int(arguments[1]),
        int(arguments[2]) if len(arguments) > 2 else 1000,
        int(arguments[3]) if len(arguments) > 3 else 4,
    )
