"""Many tasks, one client: transactions are serialised, never interleaved, and with
PIPELINING each costs two round trips.

    python examples/concurrent_sends.py HOST PORT [COUNT]
"""

from __future__ import annotations

import sys

import anyio

import aiosmtp


async def send_many(host: str, port: int, count: int = 100) -> int:
    delivered = 0

    async with aiosmtp.SMTP(host, port) as smtp:

        async def send(number: int) -> None:
            nonlocal delivered
            body = f"Subject: message {number}\r\n\r\nbody {number}\r\n".encode()
            recipient = f"user{number}@example.com"
            refused = await smtp.sendmail("sender@example.com", [recipient], body)
            if not refused:
                delivered += 1

        async with anyio.create_task_group() as tasks:
            for number in range(count):
                tasks.start_soon(send, number)
    print(f"{delivered} of {count} messages accepted over one connection")
    return delivered


if __name__ == "__main__":
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    anyio.run(send_many, sys.argv[1], int(sys.argv[2]), count)
