"""SMTP.login_oauth(): OAUTHBEARER (RFC 7628) and XOAUTH2 against the scripted server,
on both backends: mechanism choice, the error challenge completed as each mechanism
requires, one retry with a fresh token, and tokens kept out of every trace."""

from __future__ import annotations

import base64
import json
import logging

import anyio
import anyio.lowlevel
import pytest

import aiosmtp

from .scripted import (
    CLIENT_NAME,
    MiniSMTP,
    ScriptedServer,
    ScriptedServers,
    call,
    client,
    ehlo_ok,
    expect,
    greet,
    quit_ok,
    send,
)

pytestmark = pytest.mark.anyio

USER = "someuser@example.com"
TOKENS = ["ya29.first-token", "ya29.second-token", "ya29.third-token"]
STATUS = json.dumps(
    {"status": "invalid_token", "scope": "https://mail.example.com/", "schemes": "Bearer"}
).encode()
ERROR_CHALLENGE = b"334 " + base64.b64encode(STATUS) + b"\r\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def oauthbearer_line(server: ScriptedServer, token: str, user: str = USER) -> bytes:
    # RFC 7628 section 3.1, written out here: gs2-header, then kvpairs between ^A.
    escaped = user.replace("=", "=3D").replace(",", "=2C")
    payload = (
        f"n,a={escaped},\x01host={server.host}\x01port={server.port}\x01"
        f"auth=Bearer {token}\x01\x01"
    )
    return f"AUTH OAUTHBEARER {b64(payload.encode())}\r\n".encode()


def xoauth2_line(token: str) -> bytes:
    payload = f"user={USER}\x01auth=Bearer {token}\x01\x01"
    return f"AUTH XOAUTH2 {b64(payload.encode())}\r\n".encode()


class Tokens:
    """An async token source that hands out TOKENS in turn and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        await anyio.lowlevel.checkpoint()
        token = TOKENS[self.calls]
        self.calls += 1
        return token


# -- success and the choice of mechanism ------------------------------------------------------


@pytest.mark.parametrize(
    "offered",
    ["AUTH OAUTHBEARER XOAUTH2 PLAIN", "AUTH XOAUTH2 OAUTHBEARER", "AUTH oauthbearer"],
)
async def test_oauthbearer_preferred(scripted: ScriptedServers, offered: str) -> None:
    server: ScriptedServer = scripted(
        greet(),
        *ehlo_ok(offered),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[0])),
        send(b"235 2.7.0 Accepted\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.login_oauth(USER, TOKENS[0]) == (235, b"2.7.0 Accepted")
            assert smtp.user == USER


async def test_the_user_is_escaped_in_the_gs2_header(scripted: ScriptedServers) -> None:
    user = "a,b=c@example.com"
    server: ScriptedServer = scripted(
        greet(),
        *ehlo_ok("AUTH OAUTHBEARER"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[0], user)),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login_oauth(user, TOKENS[0])).code == 235


async def test_xoauth2_when_oauthbearer_is_not_offered(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH LOGIN PLAIN XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(b"235 2.7.0 Accepted\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login_oauth(USER, Tokens())).code == 235


async def test_the_mechanism_can_be_named(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH OAUTHBEARER XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login_oauth(USER, TOKENS[0], mechanism="xoauth2")).code == 235


@pytest.mark.parametrize(
    ("offered", "mechanism", "error"),
    [
        ("AUTH PLAIN LOGIN SCRAM-SHA-256", None, aiosmtp.SMTPNotSupportedError),
        ("SIZE 1000", None, aiosmtp.SMTPNotSupportedError),
        ("AUTH XOAUTH2", "OAUTHBEARER", aiosmtp.SMTPNotSupportedError),
        ("AUTH XOAUTH2 PLAIN", "PLAIN", ValueError),
    ],
)
async def test_no_usable_mechanism(
    scripted: ScriptedServers, offered: str, mechanism: str | None, error: type[Exception]
) -> None:
    server = scripted(greet(), *ehlo_ok(offered), *quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(error):
                await smtp.login_oauth(USER, TOKENS[0], mechanism=mechanism)


@pytest.mark.parametrize("token", ["", "with space", "ctrl\x01a", "new\r\nline", "caf\u00e9"])
async def test_a_token_that_cannot_be_sent(scripted: ScriptedServers, token: str) -> None:
    server = scripted(greet(), *ehlo_ok("AUTH OAUTHBEARER"), *quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(ValueError, match="OAuth token") as caught:
                await smtp.login_oauth(USER, token)
            if token.strip():
                assert token not in str(caught.value)


# -- the error challenge and the refresh --------------------------------------------------------


async def test_oauthbearer_error_challenge_then_a_fresh_token(scripted: ScriptedServers) -> None:
    server: ScriptedServer = scripted(
        greet(),
        *ehlo_ok("AUTH OAUTHBEARER"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[0])),
        send(ERROR_CHALLENGE),
        # RFC 7628 section 3.2.3: the client answers the error with a single ^A.
        expect(b"AQ==\r\n"),
        send(b"535 5.7.8 Authentication credentials invalid\r\n"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[1])),
        send(b"235 2.7.0 Accepted\r\n"),
        *quit_ok(),
    )
    tokens = Tokens()
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login_oauth(USER, tokens)).code == 235
    assert tokens.calls == 2


async def test_xoauth2_error_challenge_is_answered_with_an_empty_line(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(ERROR_CHALLENGE),
        expect(b"\r\n"),
        send(b"535 5.7.8 Username and Password not accepted\r\n"),
        expect(xoauth2_line(TOKENS[1])),
        send(b"235 2.7.0 Accepted\r\n"),
        *quit_ok(),
    )
    tokens = Tokens()
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login_oauth(USER, tokens)).code == 235
    assert tokens.calls == 2


async def test_a_plain_refusal_also_gets_one_fresh_token(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(b"535 5.7.8 no\r\n"),
        expect(xoauth2_line(TOKENS[1])),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    tokens = Tokens()
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login_oauth(USER, tokens)).code == 235
    assert tokens.calls == 2


async def test_the_refreshed_token_fails_too(scripted: ScriptedServers) -> None:
    server: ScriptedServer = scripted(
        greet(),
        *ehlo_ok("AUTH OAUTHBEARER"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[0])),
        send(ERROR_CHALLENGE),
        expect(b"AQ==\r\n"),
        send(b"535 5.7.8 first refusal\r\n"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[1])),
        send(ERROR_CHALLENGE),
        expect(b"AQ==\r\n"),
        send(b"535 5.7.8 second refusal\r\n"),
        # No third try: the session is still usable.
        expect(b"NOOP\r\n"),
        send(b"250 ok\r\n"),
        *quit_ok(),
    )
    tokens = Tokens()
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login_oauth(USER, tokens)
            assert caught.value.smtp_code == 535
            error = caught.value.smtp_error
            assert isinstance(error, bytes)
            assert error.startswith(b"5.7.8 second refusal")
            assert STATUS in error
            assert caught.value.enhanced_status == "5.7.8"
            assert (await smtp.noop()).code == 250
    assert tokens.calls == 2


async def test_a_static_token_is_not_retried(scripted: ScriptedServers) -> None:
    server: ScriptedServer = scripted(
        greet(),
        *ehlo_ok("AUTH OAUTHBEARER"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[0])),
        send(ERROR_CHALLENGE),
        expect(b"AQ==\r\n"),
        send(b"535 5.7.8 expired\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login_oauth(USER, TOKENS[0])
            assert caught.value.smtp_code == 535
            assert STATUS in caught.value.smtp_error


async def test_no_retry_after_421(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(b"421 4.3.2 shutting down\r\n"),
    )
    tokens = Tokens()
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login_oauth(USER, tokens)
            assert caught.value.smtp_code == 421
            assert smtp.is_closed
    assert tokens.calls == 1


async def test_a_server_that_keeps_challenging_is_cancelled(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(ERROR_CHALLENGE),
        expect(b"\r\n"),
        send(b"334 \r\n"),
        expect(b"*\r\n"),
        send(b"501 5.7.0 cancelled\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login_oauth(USER, TOKENS[0])
            assert caught.value.smtp_code == 501


async def test_a_token_source_must_give_a_str(scripted: ScriptedServers) -> None:
    async def wrong() -> str:
        return b"bytes"  # type: ignore[return-value]

    server = scripted(greet(), *ehlo_ok("AUTH XOAUTH2"), *quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(TypeError):
                await smtp.login_oauth(USER, wrong)


# -- tokens never shown -------------------------------------------------------------------------


async def test_tokens_are_redacted_in_traces(
    scripted: ScriptedServers,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server: ScriptedServer = scripted(
        greet(),
        *ehlo_ok("AUTH OAUTHBEARER"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[0])),
        send(ERROR_CHALLENGE),
        expect(b"AQ==\r\n"),
        send(b"535 5.7.8 no\r\n"),
        expect(lambda line: line + b"\r\n" == oauthbearer_line(server, TOKENS[1])),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    with anyio.fail_after(5):
        async with client(server) as smtp:
            smtp.set_debuglevel(1)
            assert (await smtp.login_oauth(USER, Tokens())).code == 235
    shown = capsys.readouterr().err + caplog.text
    assert "AUTH OAUTHBEARER <redacted>" in shown
    for token in TOKENS[:2]:
        assert token not in shown
        line = oauthbearer_line(server, token).split()[2].decode()
        assert line not in shown


async def test_the_pool_logs_in_with_an_oauth_token(scripted: ScriptedServers) -> None:
    # Each new pool connection asks the token source, and a refreshed token is used
    # where the server refuses the first one.
    mini = MiniSMTP(features=())
    server = scripted(
        greet(),
        *ehlo_ok("AUTH XOAUTH2"),
        expect(xoauth2_line(TOKENS[0])),
        send(ERROR_CHALLENGE),
        expect(b"\r\n"),
        send(b"535 5.7.8 token expired\r\n"),
        expect(xoauth2_line(TOKENS[1])),
        send(b"235 2.7.0 Accepted\r\n"),
        call(mini),
    )
    tokens = Tokens()
    with anyio.fail_after(5):
        async with aiosmtp.SMTPPool(
            server.host,
            server.port,
            tls="none",
            username=USER,
            oauth_token=tokens,
            local_hostname=CLIENT_NAME,
            timeout=2,
        ) as pool:
            assert await pool.sendmail("a@x.org", ["b@x.org"], b"Subject: t\r\n\r\nbody\r\n") == {}
    await server.finished()
    assert len(mini.transactions) == 1


def test_the_pool_takes_a_password_or_a_token() -> None:
    with pytest.raises(ValueError, match="not both"):
        aiosmtp.SMTPPool("localhost", username=USER, password="pw", oauth_token="tok")
    with pytest.raises(ValueError, match="username goes with"):
        aiosmtp.SMTPPool("localhost", oauth_token="tok")
