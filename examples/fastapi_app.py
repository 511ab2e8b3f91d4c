"""A FastAPI app that owns an ``aiosmtp.SMTPPool`` for its whole life.

The pool is opened by the app's lifespan and handed to the request handlers
through the lifespan state, so every request shares its connections, and it is
closed (each connection QUIT) when the server shuts down.

    SMTP_HOST=mail.example.com SMTP_PORT=587 uvicorn examples.fastapi_app:app

Then ``POST /send`` with ``{"to": ["someone@example.com"], "subject": "hi",
"body": "Hello"}``. The handler answers 202 with the Message-ID once the server has
accepted the message, 422 when it refused every recipient, 504 when the outcome is
unknown (the connection was lost after the message had been sent: do not retry
blindly), and 502 for any other SMTP failure.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, TypedDict

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import aiosmtp


class Mail(BaseModel):
    to: list[str]
    subject: str
    body: str


class Sent(BaseModel):
    message_id: str
    refused: list[str]
    reply: str


class State(TypedDict):
    pool: aiosmtp.SMTPPool
    sender: str


def create_app(host: str, port: int, *, sender: str, **pool_options: Any) -> FastAPI:
    """The app, sending through ``host:port``; ``pool_options`` go to ``SMTPPool``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with aiosmtp.SMTPPool(host, port, **pool_options) as pool:
            yield {"pool": pool, "sender": sender}

    app = FastAPI(lifespan=lifespan)

    @app.post("/send", status_code=202)
    async def send(mail: Mail, request: Request) -> Sent:
        pool: aiosmtp.SMTPPool = request.state.pool
        message = EmailMessage()
        message["From"] = request.state.sender
        message["To"] = ", ".join(mail.to)
        message["Subject"] = mail.subject
        message["Message-ID"] = make_msgid(domain=request.state.sender.rpartition("@")[2])
        message.set_content(mail.body)
        try:
            result = await pool.send_message(message)
        except aiosmtp.SMTPRecipientsRefused as exc:
            raise HTTPException(
                422, f"every recipient was refused: {sorted(exc.recipients)}"
            ) from exc
        except aiosmtp.SMTPDeliveryUnknownError as exc:
            raise HTTPException(
                504, f"delivery unknown for {message['Message-ID']}: {exc}"
            ) from exc
        except aiosmtp.SMTPException as exc:
            raise HTTPException(502, f"the mail server failed: {exc}") from exc
        return Sent(
            message_id=message["Message-ID"], refused=sorted(result), reply=result.reply.text
        )

    return app


def _app_from_environment() -> FastAPI:
    return create_app(
        os.environ.get("SMTP_HOST", "localhost"),
        int(os.environ.get("SMTP_PORT", "587")),
        sender=os.environ.get("SMTP_SENDER", "app@example.com"),
        username=os.environ.get("SMTP_USER"),
        password=os.environ.get("SMTP_PASSWORD"),
    )


app = _app_from_environment()
