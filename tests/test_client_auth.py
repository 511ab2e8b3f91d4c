"""AUTH (RFC 4954) on the wire: mechanism choice, every exchange shape, and failures
that must leave the session usable or closed, never out of step."""

from __future__ import annotations

import base64
import hashlib
import hmac

import anyio
import pytest

import aiosmtp

from .scripted import (
    ScriptedServers,
    client,
    ehlo_ok,
    expect,
    greet,
    quit_ok,
    send,
)

pytestmark = pytest.mark.anyio

USER = "jörg"
PASSWORD = "pässwörd"
CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
PLAIN_BLOB = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def cram_md5_answer(user: str, password: str, challenge: bytes) -> str:
    # Computed here from RFC 2195's definition, independently of the library.
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return b64(f"{user} {digest}")


async def test_login_prefers_cram_md5(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH LOGIN PLAIN CRAM-MD5"),
        expect(b"AUTH CRAM-MD5\r\n"),
        send(f"334 {b64(CHALLENGE)}\r\n".encode()),
        expect(f"{cram_md5_answer(USER, PASSWORD, CHALLENGE)}\r\n".encode()),
        send(b"235 2.7.0 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert await smtp.login(USER, PASSWORD) == (235, b"2.7.0 ok")
            assert (smtp.user, smtp.password) == (USER, PASSWORD)


async def test_rfc2195_example(scripted: ScriptedServers) -> None:
    answer = b64("tim b913a602c7eda7a495b4e6e7334d3890")
    server = scripted(
        greet(),
        *ehlo_ok("AUTH CRAM-MD5"),
        expect(b"AUTH CRAM-MD5\r\n"),
        send(f"334 {b64(CHALLENGE)}\r\n".encode()),
        expect(f"{answer}\r\n".encode()),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login("tim", "tanstaaftanstaaf")).code == 235


async def test_login_falls_back_to_the_next_mechanism_and_raises_the_last_error(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH PLAIN LOGIN"),
        expect(f"AUTH PLAIN {PLAIN_BLOB}\r\n".encode()),
        send(b"535 5.7.8 bad credentials\r\n"),
        expect(f"AUTH LOGIN {b64(USER)}\r\n".encode()),
        send(b"334 UGFzc3dvcmQ6\r\n"),
        expect(f"{b64(PASSWORD)}\r\n".encode()),
        send(b"535 5.7.8 still bad\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert caught.value.smtp_code == 535
            assert caught.value.smtp_error == b"5.7.8 still bad"
            assert caught.value.enhanced_status == "5.7.8"


async def test_plain_without_initial_response(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH PLAIN"),
        expect(b"AUTH PLAIN\r\n"),
        send(b"334 \r\n"),
        expect(f"{PLAIN_BLOB}\r\n".encode()),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            reply = await smtp.login(USER, PASSWORD, initial_response_ok=False)
            assert reply.code == 235


async def test_already_authenticated_503_is_returned(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH PLAIN"),
        expect(f"AUTH PLAIN {PLAIN_BLOB}\r\n".encode()),
        send(b"503 5.5.1 already authenticated\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login(USER, PASSWORD)).code == 503


async def test_no_auth_advertised(scripted: ScriptedServers) -> None:
    server = scripted(greet(), *ehlo_ok("8BITMIME"), *quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPNotSupportedError):
                await smtp.login(USER, PASSWORD)


async def test_no_known_mechanism(scripted: ScriptedServers) -> None:
    server = scripted(greet(), *ehlo_ok("AUTH GSSAPI NTLM"), *quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPException, match="GSSAPI NTLM"):
                await smtp.login(USER, PASSWORD)


async def test_auth_with_a_custom_authobject(scripted: ScriptedServers) -> None:
    seen: list[bytes | None] = []

    def authobject(challenge: bytes | None = None) -> str | None:
        seen.append(challenge)
        return None if challenge is None else "token-" + challenge.decode()

    server = scripted(
        greet(),
        *ehlo_ok("AUTH X-CUSTOM"),
        expect(b"AUTH X-CUSTOM\r\n"),
        send(f"334 {b64('one')}\r\n".encode()),
        expect(f"{b64('token-one')}\r\n".encode()),
        send(f"334 {b64('two')}\r\n".encode()),
        expect(f"{b64('token-two')}\r\n".encode()),
        send(b"235 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            assert (await smtp.auth("x-custom", authobject)).code == 235
    assert seen == [None, b"one", b"two"]


async def test_endless_challenges_are_cancelled_with_a_star(scripted: ScriptedServers) -> None:
    steps = [greet(), *ehlo_ok("AUTH X-LOOP"), expect(b"AUTH X-LOOP\r\n")]
    for _ in range(5):
        steps += [send(f"334 {b64('again')}\r\n".encode()), expect(f"{b64('x')}\r\n".encode())]
    steps += [
        send(f"334 {b64('again')}\r\n".encode()),
        expect(b"*\r\n"),
        send(b"501 5.7.0 cancelled\r\n"),
        expect(b"NOOP\r\n"),
        send(b"250 still in step\r\n"),
        *quit_ok(),
    ]
    server = scripted(*steps)
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            with pytest.raises(aiosmtp.SMTPException, match="infinite loop"):
                await smtp.auth(
                    "X-LOOP", lambda challenge=None: None if challenge is None else "x"
                )
            assert await smtp.noop() == (250, b"still in step")


async def test_a_failing_authobject_cancels_the_exchange(scripted: ScriptedServers) -> None:
    def authobject(challenge: bytes | None = None) -> str | None:
        if challenge is None:
            return None
        raise RuntimeError("the token store is down")

    server = scripted(
        greet(),
        *ehlo_ok("AUTH X-TOKEN"),
        expect(b"AUTH X-TOKEN\r\n"),
        send(f"334 {b64('go')}\r\n".encode()),
        expect(b"*\r\n"),
        send(b"501 cancelled\r\n"),
        expect(b"NOOP\r\n"),
        send(b"250 ok\r\n"),
        *quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            await smtp.ehlo()
            with pytest.raises(RuntimeError, match="token store"):
                await smtp.auth("X-TOKEN", authobject)
            assert (await smtp.noop()).code == 250


async def test_a_challenge_that_is_not_base64_closes_the_connection(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH LOGIN"),
        expect(f"AUTH LOGIN {b64(USER)}\r\n".encode()),
        send(b"334 this is not base64!\r\n"),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPResponseException, match="not base64"):
                await smtp.login(USER, PASSWORD)
            assert smtp.is_closed
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.noop()


def test_authobjects_compute_like_smtplib() -> None:
    import smtplib

    ours = aiosmtp.SMTP()
    theirs = smtplib.SMTP()
    ours.user = theirs.user = "alice"
    ours.password = theirs.password = "secret"
    assert ours.auth_plain() == theirs.auth_plain()
    assert ours.auth_cram_md5(CHALLENGE) == theirs.auth_cram_md5(CHALLENGE)
    assert ours.auth_cram_md5() is None
    ours._auth_challenge_count = 1
    theirs._auth_challenge_count = 1  # type: ignore[attr-defined]
    assert ours.auth_login() == theirs.auth_login()
    ours._auth_challenge_count = 2
    theirs._auth_challenge_count = 2  # type: ignore[attr-defined]
    assert ours.auth_login(b"Password:") == theirs.auth_login(b"Password:")
