"""aiosmtp under trio: the same client code, run by trio instead of asyncio.

python examples/trio_example.py HOST PORT
"""

from __future__ import annotations

import sys

import trio

import aiosmtp


async def main(host: str, port: int) -> aiosmtp.SendResult:
    async with aiosmtp.SMTP(host, port, timeout=10) as smtp:
        with trio.fail_after(30):
            result = await smtp.sendmail(
                "sender@example.com",
                ["a@example.com", "b@example.com"],
                b"Subject: from trio\r\n\r\nSent under trio.\r\n",
            )
    print(f"trio: {result.reply.code} {result.reply.text}")
    return result


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
