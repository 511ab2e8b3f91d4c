"""A TCP proxy that delays each direction by a fixed latency and counts round trips.

A round trip is counted each time the client sends after having heard from the
server: in a lock-step protocol the client cannot go on before the reply, so that
is one wait for the network. Run in its own process:

    python benchmarks/latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS COUNT_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


class Counter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.round_trips = 0

    def save(self) -> None:
        self.path.write_text(str(self.round_trips))


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    on_data: object,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            if callable(on_data):
                on_data()
            # Each piece leaves ``delay`` after it arrived, in order.
            loop.call_later(delay, writer.write, data)
        await asyncio.sleep(delay)
    finally:
        await asyncio.sleep(delay)
        writer.close()


async def main(listen: int, target: int, delay_ms: float, count_file: Path) -> None:
    delay = delay_ms / 1000
    counter = Counter(count_file)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        heard_from_server = True  # the greeting is awaited before anything is sent

        def client_sent() -> None:
            nonlocal heard_from_server
            if heard_from_server:
                counter.round_trips += 1
                counter.save()
                heard_from_server = False

        def server_sent() -> None:
            nonlocal heard_from_server
            heard_from_server = True

        await asyncio.gather(
            pipe(client_r, server_w, delay, client_sent),
            pipe(server_r, client_w, delay, server_sent),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    counter.save()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])))
