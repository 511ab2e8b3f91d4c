"""A TCP proxy that adds a fixed delay in each direction and counts round trips.

Theory of operation: every chunk read from one side is forwarded to the other side
``delay`` seconds after it arrived, in order, so the link behaves like a long wire
(pipelined bytes share one delay; they do not queue behind each other). A *round
trip* is a client->server burst followed by server->client data: the proxy notes
that the client has spoken, and the next data from the server closes the turn.
The server's greeting therefore counts for nothing, ``EHLO`` for one, ``QUIT`` for
one, and a message for as many turns as the client waits for replies: 4 with
smtplib (MAIL, RCPT, DATA, the body), 2 with PIPELINING (envelope + DATA, body),
1 with PIPELINING + CHUNKING (envelope + BDAT LAST).

Events are counted where they reach the proxy, before the delay, so the count
describes what each peer did, not how the delay rearranged it.

Run on its own (``benchmarks/run.py`` does this, so that the proxy's CPU time is
nobody's client time)::

    python benchmarks/latency_proxy.py TARGET_PORT [--delay-ms 20] [--port 0]

It prints ``{"listening": PORT}`` once, then one JSON line per finished session:
``{"round_trips": N, "client_bytes": N, "server_bytes": N}``. It stops when its
standard input is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

#: Forwarded as the last item of a direction: the peer closed its side.
_EOF = b""


@dataclass
class SessionStats:
    """What one proxied connection did."""

    round_trips: int = 0
    client_bytes: int = 0
    server_bytes: int = 0


class TurnCounter:
    """Counts client bursts that are answered by the server."""

    def __init__(self) -> None:
        self.stats = SessionStats()
        self._client_spoke = False

    def from_client(self, size: int) -> None:
        self.stats.client_bytes += size
        self._client_spoke = True

    def from_server(self, size: int) -> None:
        self.stats.server_bytes += size
        if self._client_spoke:
            self.stats.round_trips += 1
            self._client_spoke = False


async def _read_side(
    reader: asyncio.StreamReader,
    queue: asyncio.Queue[tuple[float, bytes]],
    delay: float,
    seen: Callable[[int], None],
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while chunk := await reader.read(65536):
            seen(len(chunk))
            queue.put_nowait((loop.time() + delay, chunk))
    except OSError:
        pass  # a reset ends this direction like an EOF
    queue.put_nowait((loop.time() + delay, _EOF))


async def _write_side(
    queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:  # _EOF
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()
    except OSError:
        return


class LatencyProxy:
    """Listens on loopback and forwards every connection to ``target_port``."""

    def __init__(
        self,
        target_port: int,
        delay: float,
        *,
        target_host: str = "127.0.0.1",
        on_session: Callable[[SessionStats], None] | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.sessions: list[SessionStats] = []
        self._on_session = on_session
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            client_writer.close()
            return
        counter = TurnCounter()
        upstream: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        downstream: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        try:
            await asyncio.gather(
                _read_side(client_reader, upstream, self.delay, counter.from_client),
                _write_side(upstream, server_writer),
                _read_side(server_reader, downstream, self.delay, counter.from_server),
                _write_side(downstream, client_writer),
            )
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        self.sessions.append(counter.stats)
        if self._on_session is not None:
            self._on_session(counter.stats)


def _report(stats: SessionStats) -> None:
    print(json.dumps(asdict(stats)), flush=True)


async def _serve(target_port: int, delay_ms: float, port: int) -> None:
    proxy = LatencyProxy(target_port, delay_ms / 1000, on_session=_report)
    bound = await proxy.start(port=port)
    print(json.dumps({"listening": bound}), flush=True)
    loop = asyncio.get_running_loop()
    # Standard input closing (the parent exiting or closing the pipe) stops us.
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    await proxy.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Delaying, round-trip-counting TCP proxy.")
    parser.add_argument("target_port", type=int, help="the server's port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay in each direction")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.target_port, args.delay_ms, args.port))


if __name__ == "__main__":
    main()
