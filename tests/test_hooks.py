"""Hooks (aiosmtp.hooks) and the logger tree: what they are told, and what never.

Every test runs on asyncio and trio, against aiosmtpd or a scripted server over
loopback. Credentials are checked for everywhere a hook or a logger could see them:
in clear, and base64-encoded as AUTH would carry them.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

import anyio
import pytest

import aiosmtp
from aiosmtp.hooks import message_envelope, message_outcome

from .scripted import (
    CLIENT_NAME,
    ScriptedServers,
    client,
    close,
    ehlo_ok,
    expect,
    greet,
    quit_ok,
    send,
    stop_reading,
)
from .servers import RunningServer

pytestmark = pytest.mark.anyio

USER, PASSWORD = "alice", "correct horse"
MSG = b"Subject: hooks\r\n\r\nbody\r\n"


class Recorder(aiosmtp.Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_connect(self, host: str, port: int, tls: bool, elapsed: float) -> None:
        assert elapsed >= 0
        self.events.append(("connect", host, port, tls))

    def on_tls(self, host: str, elapsed: float) -> None:
        assert elapsed >= 0
        self.events.append(("tls", host))

    def on_command(self, verb: str, line: str) -> None:
        self.events.append(("command", verb, line))

    def on_reply(self, reply: aiosmtp.Reply, elapsed: float) -> None:
        assert elapsed >= 0
        self.events.append(("reply", reply.code, reply.text))

    def on_message(
        self,
        outcome: str,
        sender: str,
        recipients: Sequence[str],
        result: Any,
        elapsed: float,
    ) -> None:
        assert elapsed >= 0
        self.events.append(("message", outcome, sender, list(recipients), result))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]

    def text(self) -> str:
        return repr(self.events)


def secrets_of(user: str, password: str) -> list[str]:
    """Every form in which these credentials could leak: clear, PLAIN, LOGIN."""
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return [
        password,
        plain,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(user.encode()).decode(),
    ]


def assert_no_secrets(text: str) -> None:
    for secret in secrets_of(USER, PASSWORD):
        assert secret not in text


async def test_hooks_see_a_whole_session(
    smtpd_tls: RunningServer, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    hooks = Recorder()
    async with aiosmtp.SMTP(
        smtpd_tls.host, smtpd_tls.port, context=client_context, hooks=hooks, timeout=5
    ) as smtp:
        await smtp.starttls()
        await smtp.login(USER, PASSWORD)
        result = await smtp.sendmail("a@example.com", ["b@example.com"], MSG)
    assert hooks.events[0] == ("connect", smtpd_tls.host, smtpd_tls.port, False)
    assert hooks.events[1][:2] == ("reply", 220)  # the greeting
    verbs = [event[1] for event in hooks.of("command")]
    assert verbs == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", ".", "QUIT"]
    assert ("command", "AUTH", "AUTH PLAIN <redacted>") in hooks.events
    assert ("command", ".", f"<message data, {len(MSG)} bytes>") in hooks.events
    # The TLS event comes right after the 220 to STARTTLS.
    tls_at = hooks.events.index(("tls", smtpd_tls.host))
    assert hooks.events[tls_at - 1][:2] == ("reply", 220)
    # One reply per command, plus the greeting.
    assert len(hooks.of("reply")) == len(verbs) + 1
    [message] = hooks.of("message")
    assert message[:4] == ("message", "accepted", "a@example.com", ["b@example.com"])
    assert message[4] is result
    assert len(smtpd_tls.messages) == 1
    assert_no_secrets(hooks.text())
    assert_no_secrets(caplog.text)
    # The protocol logger saw the same exchange, redacted.
    assert "AUTH PLAIN <redacted>" in caplog.text
    assert any(record.name == "aiosmtp.protocol" for record in caplog.records)


async def test_auth_challenge_responses_are_redacted(
    smtpd_tls: RunningServer, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    hooks = Recorder()
    async with aiosmtp.SMTP(
        smtpd_tls.host, smtpd_tls.port, context=client_context, hooks=hooks, timeout=5
    ) as smtp:
        await smtp.starttls()
        await smtp.ehlo()
        smtp.user, smtp.password = USER, PASSWORD
        reply = await smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        assert reply.code == 235
    commands = [event[1:] for event in hooks.of("command")]
    assert ("AUTH", "AUTH LOGIN") in commands
    # The user name and the password each answered a challenge, as "<redacted>".
    assert commands.count(("AUTH", "<redacted>")) == 2
    assert_no_secrets(hooks.text())
    assert_no_secrets(caplog.text)


async def test_implicit_tls_connect(
    smtpd_implicit_tls: RunningServer, client_context: ssl.SSLContext
) -> None:
    hooks = Recorder()
    server = smtpd_implicit_tls
    async with aiosmtp.SMTP_SSL(
        server.host, server.port, context=client_context, hooks=hooks, timeout=5
    ) as smtp:
        await smtp.noop()
    assert hooks.events[0] == ("connect", server.host, server.port, True)
    assert not hooks.of("tls")


async def test_rejected_outcome(smtpd: RunningServer) -> None:
    smtpd.handler.refuse_rcpt = {"nobody@example.com"}
    hooks = Recorder()
    async with aiosmtp.SMTP(smtpd.host, smtpd.port, hooks=hooks, timeout=5) as smtp:
        with pytest.raises(aiosmtp.SMTPRecipientsRefused) as info:
            await smtp.sendmail("a@example.com", "nobody@example.com", MSG)
        # Partly refused is still accepted; the result names who was refused.
        result = await smtp.sendmail("a@example.com", ["nobody@example.com", "b@x.org"], MSG)
    first, second = hooks.of("message")
    assert first == ("message", "rejected", "a@example.com", ["nobody@example.com"], info.value)
    assert second[1] == "accepted"
    assert second[4] is result
    assert set(result) == {"nobody@example.com"}


async def test_send_message_reports_the_envelope(smtpd: RunningServer) -> None:
    msg = EmailMessage()
    msg["From"] = "Alice <a@example.com>"
    msg["To"] = "b@example.com"
    msg["Bcc"] = "c@example.com"
    msg.set_content("hi")
    hooks = Recorder()
    async with aiosmtp.SMTP(smtpd.host, smtpd.port, hooks=hooks, timeout=5) as smtp:
        await smtp.send_message(msg)
    [message] = hooks.of("message")
    assert message[1:4] == ("accepted", "a@example.com", ["b@example.com", "c@example.com"])


def unknown_script() -> list[Any]:
    return [
        greet(),
        ehlo_ok("PIPELINING"),
        expect(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n"),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        expect(MSG + b".\r\n"),
        close(),
    ]


async def test_unknown_outcome(scripted: ScriptedServers) -> None:
    server = scripted(unknown_script())
    hooks = Recorder()
    with anyio.fail_after(5):
        smtp = client(server, hooks=hooks)
        await smtp.connect(server.host, server.port)
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError) as info:
            await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
    [message] = hooks.of("message")
    assert message == ("message", "unknown", "a@x.org", ["b@x.org"], info.value)


async def test_unknown_outcome_through_the_pool(scripted: ScriptedServers) -> None:
    server = scripted(unknown_script())
    hooks = Recorder()
    with anyio.fail_after(5):
        async with aiosmtp.SMTPPool(
            server.host, server.port, tls="none", local_hostname=CLIENT_NAME, hooks=hooks
        ) as pool:
            with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
                await pool.sendmail("a@x.org", "b@x.org", MSG)
    [message] = hooks.of("message")
    assert message[1:4] == ("unknown", "a@x.org", ["b@x.org"])


async def test_cancelled_outcome(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("PIPELINING"),
        expect(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n"),
        stop_reading(),  # and no reply: the caller gives up
    )
    hooks = Recorder()
    with anyio.fail_after(5):
        smtp = client(server, hooks=hooks, timeout=5)
        await smtp.connect(server.host, server.port)
        await smtp.ehlo()
        with anyio.move_on_after(0.1):
            await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
        await smtp.close()
    [message] = hooks.of("message")
    assert message[1:4] == ("cancelled", "a@x.org", ["b@x.org"])


async def test_failed_outcome_through_send(scripted: ScriptedServers) -> None:
    # A server that does not offer STARTTLS, under the default tls="starttls".
    server = scripted(greet(), ehlo_ok("PIPELINING"))
    hooks = Recorder()
    with anyio.fail_after(5), pytest.raises(aiosmtp.SMTPNotSupportedError):
        await aiosmtp.send(
            MSG, server.host, server.port, from_addr="a@x.org", to_addrs=["b@x.org"],
            local_hostname=CLIENT_NAME, hooks=hooks,
        )  # fmt: skip
    [message] = hooks.of("message")
    assert message[1:4] == ("failed", "a@x.org", ["b@x.org"])
    assert hooks.of("connect")


async def test_pool_reports_each_message_once(
    smtpd: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosmtp.pool")
    hooks = Recorder()
    pool = aiosmtp.SMTPPool(smtpd.host, smtpd.port, tls="none", hooks=hooks)
    async with pool, anyio.create_task_group() as tasks:
        for number in range(5):
            tasks.start_soon(pool.sendmail, "a@x.org", [f"r{number}@x.org"], MSG)
    messages = hooks.of("message")
    assert sorted(message[3][0] for message in messages) == [f"r{n}@x.org" for n in range(5)]
    assert {message[1] for message in messages} == {"accepted"}
    assert len(smtpd.messages) == 5
    assert len(hooks.of("connect")) >= 1
    assert any("opened" in record.getMessage() for record in caplog.records)
    assert {record.name for record in caplog.records} == {"aiosmtp.pool"}


class Broken(aiosmtp.Hooks):
    calls = 0

    def fail(self) -> None:
        self.calls += 1
        raise RuntimeError("a broken hook")

    def on_connect(self, host: str, port: int, tls: bool, elapsed: float) -> None:
        self.fail()

    def on_tls(self, host: str, elapsed: float) -> None:
        self.fail()

    def on_command(self, verb: str, line: str) -> None:
        self.fail()

    def on_reply(self, reply: aiosmtp.Reply, elapsed: float) -> None:
        self.fail()

    def on_message(
        self, outcome: str, sender: str, recipients: Sequence[str], result: Any, elapsed: float
    ) -> None:
        self.fail()


async def test_a_hook_that_raises_is_logged_and_ignored(
    smtpd_tls: RunningServer, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Broken()
    with caplog.at_level(logging.ERROR, logger="aiosmtp.hooks"):
        async with aiosmtp.SMTP(
            smtpd_tls.host, smtpd_tls.port, context=client_context, hooks=hooks, timeout=5
        ) as smtp:
            await smtp.starttls()
            await smtp.login(USER, PASSWORD)
            await smtp.sendmail("a@example.com", ["b@example.com"], MSG)
    assert len(smtpd_tls.messages) == 1
    assert hooks.calls > 10
    assert len(caplog.records) == hooks.calls
    assert all("a broken hook" in record.exc_text for record in caplog.records if record.exc_text)
    assert_no_secrets(caplog.text)


async def test_lmtp_takes_hooks(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok(verb="LHLO"), quit_ok())
    hooks = Recorder()
    with anyio.fail_after(5):
        async with client(server, aiosmtp.LMTP, hooks=hooks) as lmtp:
            await lmtp.ehlo()
    assert [event[1] for event in hooks.of("command")] == ["LHLO", "QUIT"]


def test_outcomes() -> None:
    assert message_outcome(aiosmtp.SMTPDeliveryUnknownError("x")) == "unknown"
    assert message_outcome(aiosmtp.SMTPDataError(554, b"no")) == "rejected"
    assert message_outcome(aiosmtp.SMTPSenderRefused(550, b"no", "a")) == "rejected"
    assert message_outcome(aiosmtp.SMTPRecipientsRefused({})) == "rejected"
    assert message_outcome(aiosmtp.SMTPAuthenticationError(535, b"no")) == "failed"
    assert message_outcome(aiosmtp.SMTPServerDisconnected("x")) == "failed"
    assert message_outcome(KeyboardInterrupt()) == "cancelled"


def test_message_envelope_follows_send_message() -> None:
    msg = EmailMessage()
    msg["From"] = "a@x.org"
    msg["Sender"] = "s@x.org"
    msg["To"] = "b@x.org, c@x.org"
    msg["Cc"] = "d@x.org"
    assert message_envelope(msg, None, None) == ("s@x.org", ["b@x.org", "c@x.org", "d@x.org"])
    assert message_envelope(msg, "z@x.org", "y@x.org") == ("z@x.org", ["y@x.org"])
    msg["Resent-Date"] = "Mon, 1 Jan 2024 00:00:00 +0000"
    msg["Resent-From"] = "r@x.org"
    msg["Resent-To"] = "t@x.org"
    assert message_envelope(msg, None, None) == ("r@x.org", ["t@x.org"])
