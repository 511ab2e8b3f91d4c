"""SCRAM against a real server: Postfix submission with Dovecot SASL.

Dovecot 2.3 (Debian 12) offers SCRAM-SHA-1 and SCRAM-SHA-256, computing the keys
from the passwd-file's {PLAIN} passwords, and no -PLUS variant (those are tested
against the scripted server, tests/test_client_scram.py). Two private Postfix
instances: one offering every mechanism (login() must pick SCRAM-SHA-256), one
offering SCRAM-SHA-1 as its strongest. Over TLS the client can bind but the server
does not offer -PLUS, so the GS2 header says "y" (RFC 5802 section 6): Dovecot must
accept that.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import aiosmtp

from ._base import MailServer
from ._common import Unavailable
from ._dovecot import AUTH_MECHANISMS
from ._postfix import postfix_unavailable, run_postfix
from .test_matrix import (
    assert_stored,
    client,
    implicit_tls_client,
    make_message,
    protocol_log,
    secure,
    wire_bytes,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

OFFERS = {
    "SCRAM-SHA-256": AUTH_MECHANISMS + " scram-sha-1 scram-sha-256",
    "SCRAM-SHA-1": AUTH_MECHANISMS + " scram-sha-1",
}


@pytest.fixture(scope="module", params=list(OFFERS))
def scram_postfix(
    request: pytest.FixtureRequest, interop_root: Path, ca: trustme.CA
) -> Iterator[tuple[MailServer, str]]:
    """A private Postfix whose Dovecot offers SCRAM; and the mechanism login() picks."""
    reason = postfix_unavailable()
    if reason is not None:
        pytest.skip(reason)
    strongest: str = request.param
    workdir = Path(tempfile.mkdtemp(prefix="postfix-scram-", dir=interop_root))
    workdir.chmod(0o755)
    try:
        with run_postfix(workdir, ca, auth_mechanisms=OFFERS[strongest]) as server:
            yield server, strongest
    except Unavailable as exc:  # pragma: no cover - a start failure is shown, not hidden
        raise AssertionError(f"postfix with SCRAM did not start: {exc}") from exc


@pytest.mark.parametrize("user", ["alice", "jörg"])
async def test_login_uses_scram_then_sends(
    scram_postfix: tuple[MailServer, str], client_context: ssl.SSLContext, user: str
) -> None:
    server, strongest = scram_postfix
    async with client(server) as smtp:
        await secure(smtp, server, client_context)
        offered = smtp.esmtp_features["auth"].upper().split()
        assert strongest in offered
        assert not any(name.endswith("-PLUS") for name in offered)
        with protocol_log() as log:
            reply = await smtp.login(user, server.users[user])
        assert reply.code == 235, reply
        # One exchange: the AUTH, the proof, the empty answer to the server signature.
        assert log[0].startswith(f">> AUTH {strongest} <redacted>"), log
        expected = [">> AUTH", "<< 334", ">> <redacted>", "<< 334", ">> <redacted>", "<< 235"]
        assert len(log) == len(expected), log
        assert [line[: len(start)] for line, start in zip(log, expected, strict=True)] == expected
        msg = make_message(server, f"after {strongest}")
        assert await smtp.send_message(msg) == {}
    await assert_stored(server, msg["Message-ID"], wire_bytes(msg))


async def test_a_wrong_password_is_refused_and_the_session_goes_on(
    scram_postfix: tuple[MailServer, str], client_context: ssl.SSLContext
) -> None:
    server, strongest = scram_postfix
    user, password = "alice", server.users["alice"]
    async with client(server) as smtp:
        await secure(smtp, server, client_context)
        with protocol_log() as log, pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
            await smtp.login(user, password + "-wrong")
        assert caught.value.smtp_code == 535
        # smtplib's order: every mechanism tried, SCRAM first.
        tried = [line.split()[2] for line in log if line.startswith(">> AUTH")]
        assert tried[0] == strongest, tried
        assert tried[-2:] == ["PLAIN", "LOGIN"], tried
        assert not smtp.is_closed
        assert (await smtp.login(user, password)).code == 235


async def test_scram_over_implicit_tls(
    scram_postfix: tuple[MailServer, str], client_context: ssl.SSLContext
) -> None:
    server, strongest = scram_postfix
    async with implicit_tls_client(server, client_context) as smtp:
        await smtp.ehlo()
        with protocol_log() as log:
            assert (await smtp.login("bob", server.users["bob"])).code == 235
        assert log[0].startswith(f">> AUTH {strongest}"), log
