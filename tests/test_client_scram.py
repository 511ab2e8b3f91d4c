"""SCRAM through SMTP.login() against the scripted server, on both backends.

The server's side of each exchange is ``ReferenceServer`` (tests/protocol/
test_scram.py: RFC 5802's equations with hashlib, independent of the library), run
inside the scripted server's thread; a proof it cannot verify fails the script.
The -PLUS tests compute the tls-server-end-point data from the certificate the
server presents, with cryptography's parser naming its signature hash.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Callable

import anyio
import pytest
import trustme

import aiosmtp

from .protocol.test_scram import ReferenceServer, expected_binding
from .scripted import (
    ScriptedServers,
    ServerConnection,
    Step,
    call,
    client,
    ehlo_ok,
    expect,
    expect_eof,
    greet,
    quit_ok,
    send,
    start_tls,
)

pytestmark = pytest.mark.anyio

USER = "jörg"
PASSWORD = "pässwörd"
ALL = "AUTH LOGIN PLAIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def scram(
    server: ReferenceServer,
    *,
    initial: bool = True,
    server_final: Callable[[bytes], bytes] | None = None,
) -> list[Step]:
    """The server's side of a SCRAM exchange, up to the server-final challenge.

    ``server_final`` may replace the server-final-message computed by the reference
    server (a forged signature, an error).
    """

    def first(conn: ServerConnection) -> None:
        line = conn.read_line()
        assert line.endswith(b"\r\n"), line
        if initial:
            verb, mechanism, response = line[:-2].split(b" ")
            assert (verb, mechanism) == (b"AUTH", server.mechanism.encode()), line
        else:
            assert line == f"AUTH {server.mechanism}\r\n".encode(), line
            conn.send(b"334 \r\n")
            response = conn.read_line()[:-2]
        conn.send(b"334 " + b64(server.first(base64.b64decode(response))) + b"\r\n")

    def final(conn: ServerConnection) -> None:
        line = conn.read_line()
        message = server.final(base64.b64decode(line[:-2]))
        if server_final is not None:
            message = server_final(message)
        conn.send(b"334 " + b64(message) + b"\r\n")

    return [call(first), call(final)]


def accepted() -> list[Step]:
    # RFC 4954: the client answers the server-final challenge with an empty line.
    return [expect(b"\r\n"), send(b"235 2.7.0 Authentication successful\r\n")]


def reference(mechanism: str = "SCRAM-SHA-256", **kwargs: object) -> ReferenceServer:
    return ReferenceServer(mechanism, USER, PASSWORD, **kwargs)  # type: ignore[arg-type]


# -- mechanism choice and success -----------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "mechanism"),
    [
        (ALL, "SCRAM-SHA-256"),
        ("AUTH PLAIN SCRAM-SHA-1 CRAM-MD5", "SCRAM-SHA-1"),
        ("AUTH=LOGIN SCRAM-SHA-1 scram-sha-256", "SCRAM-SHA-256"),
        # -PLUS in plaintext cannot bind: the plain variant, saying "n".
        (ALL + " SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"),
    ],
)
async def test_login_picks_scram_first(
    scripted: ScriptedServers, offered: str, mechanism: str
) -> None:
    peer = reference(mechanism)
    server = scripted(greet(), *ehlo_ok(offered), scram(peer), accepted(), quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            reply = await smtp.login(USER, PASSWORD)
            assert reply == (235, b"2.7.0 Authentication successful")
            assert (smtp.user, smtp.password) == (USER, PASSWORD)
    assert len(peer.proofs_checked) == 1


async def test_without_initial_response(scripted: ScriptedServers) -> None:
    peer = reference()
    server = scripted(
        greet(), *ehlo_ok("AUTH SCRAM-SHA-256"), scram(peer, initial=False), accepted(), quit_ok()
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login(USER, PASSWORD, initial_response_ok=False)).code == 235


async def test_the_password_is_saslprepped(scripted: ScriptedServers) -> None:
    # The server stored "IX"; the user types U+2168 ROMAN NUMERAL NINE.
    peer = ReferenceServer("SCRAM-SHA-256", "user", "IX")
    server = scripted(greet(), *ehlo_ok("AUTH SCRAM-SHA-256"), scram(peer), accepted(), quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login("user", "\u2168")).code == 235


async def test_credentials_scram_cannot_carry_fall_back_to_plain(
    scripted: ScriptedServers,
) -> None:
    password = "bell\x07"  # a control character: SASLprep refuses it, PLAIN does not
    blob = base64.b64encode(f"\0{USER}\0{password}".encode()).decode()
    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256 PLAIN"),
        expect(f"AUTH PLAIN {blob}\r\n".encode()),
        send(b"235 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            assert (await smtp.login(USER, password)).code == 235


async def test_credentials_scram_cannot_carry_and_nothing_else(
    scripted: ScriptedServers,
) -> None:
    server = scripted(greet(), *ehlo_ok("AUTH SCRAM-SHA-256"), quit_ok())
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(ValueError, match="SASLprep"):
                await smtp.login(USER, "bell\x07")
            assert not smtp.is_closed


# -- failures ------------------------------------------------------------------------------


def forged(message: bytes) -> bytes:
    signature = bytearray(base64.b64decode(message[2:]))
    signature[0] ^= 0x80
    return b"v=" + b64(bytes(signature))


@pytest.mark.parametrize(
    "server_final",
    [forged, lambda message: b"v=" + b64(b"\0" * 32), lambda message: b"garbage"],
    ids=["one bit off", "zeros", "malformed"],
)
async def test_a_wrong_server_signature_closes_the_connection(
    scripted: ScriptedServers, server_final: Callable[[bytes], bytes]
) -> None:
    peer = reference()
    server = scripted(
        greet(),
        *ehlo_ok(ALL),
        scram(peer, server_final=server_final),
        # Not a byte more: no empty line, no other mechanism, no QUIT.
        expect_eof(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert b"SCRAM-SHA-256" in caught.value.smtp_error
            assert b"signature" in caught.value.smtp_error
            assert b"connection closed" in caught.value.smtp_error
            assert smtp.is_closed
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.noop()


async def test_acceptance_without_a_server_signature_closes_the_connection(
    scripted: ScriptedServers,
) -> None:
    peer = reference()

    def first(conn: ServerConnection) -> None:
        line = conn.read_line()
        conn.send(b"334 " + b64(peer.first(base64.b64decode(line.split()[2]))) + b"\r\n")

    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256 PLAIN"),
        call(first),
        expect(lambda line: base64.b64decode(line).startswith(b"c=biws,")),
        send(b"235 2.7.0 welcome, whoever you are\r\n"),
        expect_eof(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert caught.value.smtp_code == 235
            assert b"no server signature" in caught.value.smtp_error
            assert smtp.is_closed


async def test_acceptance_before_any_proof_closes_the_connection(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256"),
        expect(lambda line: line.startswith(b"AUTH SCRAM-SHA-256 ")),
        send(b"235 ok\r\n"),
        expect_eof(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError, match="before any proof"):
                await smtp.login(USER, PASSWORD)
            assert smtp.is_closed


async def test_a_server_error_is_raised_with_its_text(scripted: ScriptedServers) -> None:
    peer = reference()
    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256"),
        scram(peer, server_final=lambda message: b"e=invalid-proof"),
        expect(b"\r\n"),
        send(b"535 5.7.8 Authentication credentials invalid\r\n"),
        expect(b"NOOP\r\n"),
        send(b"250 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert caught.value.smtp_code == 535
            error = caught.value.smtp_error
            assert isinstance(error, bytes)
            assert error.startswith(b"5.7.8 Authentication credentials")
            assert b"invalid-proof" in caught.value.smtp_error
            assert caught.value.enhanced_status == "5.7.8"
            # The server ended the exchange: the session is in step and usable.
            assert (await smtp.noop()).code == 250


async def test_a_refused_proof_falls_back_like_smtplib(scripted: ScriptedServers) -> None:
    """A 535 after the proof is an ordinary refusal: the next mechanism is tried,
    and the last error raised (smtplib's login())."""
    peer = reference()

    def final(conn: ServerConnection) -> None:
        conn.read_line()
        conn.send(b"535 5.7.8 no\r\n")

    def first(conn: ServerConnection) -> None:
        line = conn.read_line()
        conn.send(b"334 " + b64(peer.first(base64.b64decode(line.split()[2]))) + b"\r\n")

    blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256 PLAIN"),
        call(first),
        call(final),
        expect(f"AUTH PLAIN {blob}\r\n".encode()),
        send(b"535 5.7.8 still no\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert caught.value.smtp_error == b"5.7.8 still no"


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=not-our-nonce,s=c2FsdA==,i=4096",
        b"r=%(nonce)s-srv,s=c2FsdA==,i=0",
        b"m=required-extension,r=%(nonce)s-srv,s=c2FsdA==,i=4096",
    ],
    ids=["foreign nonce", "zero iterations", "mandatory extension"],
)
async def test_a_bad_server_first_message_cancels_the_exchange(
    scripted: ScriptedServers, server_first: bytes
) -> None:
    def first(conn: ServerConnection) -> None:
        line = conn.read_line()
        client_first = base64.b64decode(line.split()[2])
        nonce = client_first.split(b",r=")[1]
        conn.send(b"334 " + b64(server_first % {b"nonce": nonce}) + b"\r\n")

    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256"),
        call(first),
        expect(b"*\r\n"),  # RFC 4954 section 4: the client cancels
        send(b"501 5.7.0 Authentication cancelled\r\n"),
        expect(b"NOOP\r\n"),
        send(b"250 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert caught.value.smtp_code == 501
            error = caught.value.smtp_error
            assert isinstance(error, bytes)
            assert error.startswith(b"SCRAM-SHA-256: ")
            assert (await smtp.noop()).code == 250


async def test_a_challenge_that_is_not_base64_closes_the_connection(
    scripted: ScriptedServers,
) -> None:
    server = scripted(
        greet(),
        *ehlo_ok("AUTH SCRAM-SHA-256"),
        expect(lambda line: line.startswith(b"AUTH SCRAM-SHA-256 ")),
        send(b"334 abcde\r\n"),  # bad padding
        expect_eof(),
    )
    with anyio.fail_after(5):
        async with client(server) as smtp:
            with pytest.raises(aiosmtp.SMTPResponseException):
                await smtp.login(USER, PASSWORD)
            assert smtp.is_closed


# -- nothing secret in the debug output ------------------------------------------------------


async def test_the_exchange_is_redacted_in_traces(
    scripted: ScriptedServers,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = reference()
    lines: list[bytes] = []

    def first(conn: ServerConnection) -> None:
        line = conn.read_line()
        lines.append(line)
        conn.send(b"334 " + b64(peer.first(base64.b64decode(line.split()[2]))) + b"\r\n")

    def final(conn: ServerConnection) -> None:
        line = conn.read_line()
        lines.append(line)
        conn.send(b"334 " + b64(peer.final(base64.b64decode(line[:-2]))) + b"\r\n")

    server = scripted(
        greet(), *ehlo_ok("AUTH SCRAM-SHA-256"), call(first), call(final), accepted(), quit_ok()
    )
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    with anyio.fail_after(5):
        async with client(server) as smtp:
            smtp.set_debuglevel(2)
            assert (await smtp.login(USER, PASSWORD)).code == 235
    shown = capsys.readouterr().err + caplog.text
    assert "AUTH SCRAM-SHA-256 <redacted>" in shown
    secrets = [lines[0].split()[2].decode(), lines[1][:-2].decode(), PASSWORD]
    for secret in secrets:
        assert secret not in shown


# -- channel binding (-PLUS) over TLS -----------------------------------------------------------


@pytest.fixture(scope="module")
def tls_leaf(ca: trustme.CA) -> tuple[ssl.SSLContext, bytes]:
    """A server context and the DER of its certificate, for the binding data."""
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return context, der


def starttls_steps(context: ssl.SSLContext, offered: str) -> list[Step]:
    return [
        greet(),
        *ehlo_ok("STARTTLS"),
        expect(b"STARTTLS\r\n"),
        send(b"220 2.0.0 go ahead\r\n"),
        start_tls(context),
        *ehlo_ok(offered),
    ]


@pytest.mark.parametrize(
    ("offered", "mechanism"),
    [
        (ALL + " SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS", "SCRAM-SHA-256-PLUS"),
        ("AUTH SCRAM-SHA-1-PLUS SCRAM-SHA-1 SCRAM-SHA-256", "SCRAM-SHA-1-PLUS"),
    ],
)
async def test_plus_over_starttls_binds_to_the_certificate(
    scripted: ScriptedServers,
    tls_leaf: tuple[ssl.SSLContext, bytes],
    client_context: ssl.SSLContext,
    offered: str,
    mechanism: str,
) -> None:
    context, der = tls_leaf
    binding = expected_binding(der)
    assert binding is not None
    peer = reference(mechanism, cbind_input=b"p=tls-server-end-point,," + binding)
    server = scripted(starttls_steps(context, offered), scram(peer), accepted(), quit_ok())
    with anyio.fail_after(5):
        async with client(server, context=client_context) as smtp:
            await smtp.starttls()
            assert (await smtp.login(USER, PASSWORD)).code == 235
    assert len(peer.proofs_checked) == 1


async def test_plus_over_implicit_tls(
    scripted: ScriptedServers,
    tls_leaf: tuple[ssl.SSLContext, bytes],
    client_context: ssl.SSLContext,
) -> None:
    context, der = tls_leaf
    binding = expected_binding(der)
    assert binding is not None
    peer = reference("SCRAM-SHA-256-PLUS", cbind_input=b"p=tls-server-end-point,," + binding)
    server = scripted(
        start_tls(context),
        greet(),
        *ehlo_ok("AUTH PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS"),
        scram(peer),
        accepted(),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server, aiosmtp.SMTP_SSL, context=client_context) as smtp:
            assert (await smtp.login(USER, PASSWORD)).code == 235


async def test_tls_without_plus_says_the_client_could_bind(
    scripted: ScriptedServers,
    tls_leaf: tuple[ssl.SSLContext, bytes],
    client_context: ssl.SSLContext,
) -> None:
    """RFC 5802 section 6: "y" when the client supports binding but the server
    did not offer it, so a server that does support it can detect the downgrade."""
    context, _ = tls_leaf
    peer = reference("SCRAM-SHA-256", cbind_input=b"y,,")
    server = scripted(starttls_steps(context, ALL), scram(peer), accepted(), quit_ok())
    with anyio.fail_after(5):
        async with client(server, context=client_context) as smtp:
            await smtp.starttls()
            assert (await smtp.login(USER, PASSWORD)).code == 235


async def test_a_plus_exchange_bound_to_another_certificate_fails(
    scripted: ScriptedServers,
    tls_leaf: tuple[ssl.SSLContext, bytes],
    ca: trustme.CA,
    client_context: ssl.SSLContext,
) -> None:
    """What a man in the middle with a trusted certificate of its own looks like to
    the real server: the binding data differ, the server refuses (and the client
    does not retry the same password over the plain SCRAM variants)."""
    context, _ = tls_leaf
    other = ca.issue_cert("localhost", "127.0.0.1")
    other_der = ssl.PEM_cert_to_DER_cert(other.cert_chain_pems[0].bytes().decode())
    other_binding = expected_binding(other_der)
    assert other_binding is not None
    peer = reference("SCRAM-SHA-256-PLUS", cbind_input=b"p=tls-server-end-point,," + other_binding)

    def first(conn: ServerConnection) -> None:
        line = conn.read_line()
        conn.send(b"334 " + b64(peer.first(base64.b64decode(line.split()[2]))) + b"\r\n")

    def final(conn: ServerConnection) -> None:
        line = conn.read_line()
        try:
            peer.final(base64.b64decode(line[:-2]))
        except AssertionError:
            conn.send(b"334 " + b64(b"e=channel-bindings-dont-match") + b"\r\n")
        else:
            raise AssertionError("the server accepted binding data of another certificate")

    server = scripted(
        starttls_steps(context, "AUTH SCRAM-SHA-256 SCRAM-SHA-256-PLUS"),
        call(first),
        call(final),
        expect(b"\r\n"),
        send(b"535 5.7.8 no\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(5):
        async with client(server, context=client_context) as smtp:
            await smtp.starttls()
            with pytest.raises(aiosmtp.SMTPAuthenticationError) as caught:
                await smtp.login(USER, PASSWORD)
            assert b"channel-bindings-dont-match" in caught.value.smtp_error
