"""A minimal, fast SMTP sink (asyncio) for the rows that need CHUNKING.

Postfix's smtp-sink offers PIPELINING but not CHUNKING; this sink offers both (or
PIPELINING alone with --no-chunking), accepts everything and discards it. It runs
in its own process so that it does not share the client's CPU time.

    python benchmarks/sink.py PORT [--no-chunking]
"""

from __future__ import annotations

import asyncio
import sys


class SinkProtocol(asyncio.Protocol):
    chunking = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = bytearray()
        self.in_data = False
        self.bdat_left = 0
        self.bdat_last = False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        while self._step(out):
            pass
        if out:
            self.transport.write(b"".join(out))

    def _step(self, out: list[bytes]) -> bool:
        buffer = self.buffer
        if self.bdat_left:
            taken = min(self.bdat_left, len(buffer))
            if not taken:
                return False
            del buffer[:taken]
            self.bdat_left -= taken
            if not self.bdat_left:
                out.append(b"250 2.0.0 Ok: queued\r\n" if self.bdat_last else b"250 2.0.0 Ok\r\n")
            return True
        if self.in_data:
            end = buffer.find(b"\r\n.\r\n")
            if end < 0:
                if len(buffer) > 4:
                    del buffer[: len(buffer) - 4]
                return False
            del buffer[: end + 5]
            self.in_data = False
            out.append(b"250 2.0.0 Ok: queued\r\n")
            return True
        end = buffer.find(b"\r\n")
        if end < 0:
            return False
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        verb = line[:4].upper()
        if verb in (b"EHLO", b"LHLO"):
            chunking = b"250-CHUNKING\r\n" if self.chunking else b""
            out.append(
                b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n" + chunking + b"250 SIZE\r\n"
            )
        elif verb == b"DATA":
            out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            self.in_data = True
            buffer[:0] = b"\r\n"  # so that an empty message's "." is found too
        elif verb == b"BDAT":
            words = line.split()
            self.bdat_left = int(words[1])
            self.bdat_last = len(words) > 2
            if not self.bdat_left:
                out.append(b"250 2.0.0 Ok: queued\r\n")
        elif verb == b"QUIT":
            out.append(b"221 2.0.0 Bye\r\n")
            self.transport.write(b"".join(out))
            out.clear()
            self.transport.close()
            return False
        else:
            out.append(b"250 2.0.0 Ok\r\n")
        return True


async def serve(port: int, chunking: bool) -> None:
    SinkProtocol.chunking = chunking
    server = await asyncio.get_running_loop().create_server(SinkProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), "--no-chunking" not in sys.argv))
