"""Send one message: connect, STARTTLS if offered, log in if asked, send, QUIT.

python examples/quickstart.py HOST PORT [--user USER]   (password from $SMTP_PASSWORD)
"""

from __future__ import annotations

import argparse
import os
import ssl
from email.message import EmailMessage

import anyio

import aiosmtp


async def send_one(
    host: str,
    port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    context: ssl.SSLContext | None = None,
) -> aiosmtp.SendResult:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "recipient@example.com"
    msg["Subject"] = "Hello from aiosmtp"
    msg.set_content("It works.\n")

    async with aiosmtp.SMTP(host, port, context=context) as smtp:
        await smtp.ehlo()
        if smtp.has_extn("starttls"):
            await smtp.starttls()  # verifies the certificate and the host name
        if user is not None and password is not None:
            await smtp.login(user, password)
        result = await smtp.send_message(msg)
    print(f"accepted: {result.reply.text}; refused: {dict(result) or 'none'}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--user")
    args = parser.parse_args()
    password = os.environ.get("SMTP_PASSWORD")
    anyio.run(lambda: send_one(args.host, args.port, user=args.user, password=password))


if __name__ == "__main__":
    main()
