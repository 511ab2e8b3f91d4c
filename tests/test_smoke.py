from __future__ import annotations

import ssl
from email.message import EmailMessage

import pytest

import aiosmtp

from .servers import RunningServer

pytestmark = pytest.mark.anyio


async def test_send_message_over_starttls_with_login(
    smtpd_tls: RunningServer, client_context: ssl.SSLContext
) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "smoke"
    msg.set_content("hello\n")
    async with aiosmtp.SMTP(smtpd_tls.host, smtpd_tls.port, context=client_context) as smtp:
        await smtp.starttls()
        assert (await smtp.login("alice", "correct horse")).code == 235
        result = await smtp.send_message(msg)
    assert result == {}
    assert result.reply.code == 250
    [received] = smtpd_tls.messages
    assert received.rcpt_tos == ["bob@example.com"]
    assert received.content.endswith(b"\r\n\r\nhello\r\n")
