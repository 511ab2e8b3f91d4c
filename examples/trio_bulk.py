"""Bulk sending under trio: one nursery, one task per message, a
``trio.CapacityLimiter`` bounding how many are in flight, and an
``aiosmtp.SMTPPool`` sharing a few connections among them.

    python examples/trio_bulk.py HOST PORT [COUNT] [CONCURRENCY]

The pool opens at most CONCURRENCY connections; the limiter keeps the number of
messages built and waiting for a connection at CONCURRENCY too, so memory stays
flat however large COUNT is. Each message's outcome is counted; nothing is retried.
"""

from __future__ import annotations

import sys
from collections import Counter
from email.message import EmailMessage

import trio

import aiosmtp


def build(number: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "bulk@example.com"
    message["To"] = f"user{number}@example.com"
    message["Subject"] = f"newsletter {number}"
    message["Message-ID"] = f"<bulk-{number}@example.com>"
    message.set_content(f"Hello user {number}.\n")
    return message


async def send_bulk(host: str, port: int, count: int, concurrency: int = 8) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    limiter = trio.CapacityLimiter(concurrency)

    async with aiosmtp.SMTPPool(
        host, port, max_connections=concurrency, tls="opportunistic", timeout=30
    ) as pool:

        async def send_one(number: int) -> None:
            async with limiter:
                try:
                    await pool.send_message(build(number))
                except aiosmtp.SMTPDeliveryUnknownError:
                    outcomes["unknown"] += 1
                except aiosmtp.SMTPException:
                    outcomes["failed"] += 1
                else:
                    outcomes["accepted"] += 1

        async with trio.open_nursery() as nursery:
            for number in range(count):
                nursery.start_soon(send_one, number)
    return outcomes


async def main(host: str, port: int, count: int, concurrency: int) -> None:
    outcomes = await send_bulk(host, port, count, concurrency)
    print(
        f"trio bulk: {outcomes['accepted']} of {count} accepted, "
        f"{outcomes['failed']} failed, {outcomes['unknown']} unknown"
    )


if __name__ == "__main__":
    arguments = sys.argv[1:]
    trio.run(
        main,
        arguments[0],
        int(arguments[1]),
        int(arguments[2]) if len(arguments) > 2 else 100,
        int(arguments[3]) if len(arguments) > 3 else 8,
    )
