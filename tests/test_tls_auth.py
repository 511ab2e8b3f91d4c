"""STARTTLS, implicit TLS and AUTH against aiosmtpd, with smtplib parity where smtplib
behaves the same, and the redaction of secrets from logs and debug output."""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage

import anyio
import pytest

import aiosmtp

from .servers import (
    USERS,
    Call,
    Client,
    CramMD5Handler,
    EventRecordingHandler,
    OddMechanismHandler,
    RunningServer,
    aiosmtpd_server,
    attribute,
    call,
    parity,
)

pytestmark = pytest.mark.anyio

CLIENT_NAME = "client.example"
AUTH_OK = (235, b"2.7.0 Authentication successful")
AUTH_INVALID = (535, b"5.7.8 Authentication credentials invalid")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def note() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "over TLS"
    msg.set_content("secret stuff\n")
    return msg


class Handlers:
    """A handler factory for ``parity`` that keeps what it made: [smtplib's, ours]."""

    def __init__(self, kind: Callable[[], EventRecordingHandler] = EventRecordingHandler):
        self.kind = kind
        self.made: list[EventRecordingHandler] = []

    def __call__(self) -> EventRecordingHandler:
        handler = self.kind()
        self.made.append(handler)
        return handler


@pytest.fixture
def tls_server(server_context: ssl.SSLContext) -> Iterator[RunningServer]:
    """STARTTLS and AUTH PLAIN/LOGIN, recording EHLOs and AUTHs."""
    with aiosmtpd_server(
        handler=EventRecordingHandler(), starttls_context=server_context, auth=True
    ) as server:
        yield server


def events(server: RunningServer) -> EventRecordingHandler:
    handler = server.handler
    assert isinstance(handler, EventRecordingHandler)
    return handler


# -- STARTTLS -------------------------------------------------------------------------


async def test_starttls_with_the_constructor_context_then_ehlo_is_redone(
    tls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(
            tls_server.host, tls_server.port, CLIENT_NAME, context=client_context
        ) as smtp:
            reply = await smtp.starttls()
            assert reply == (220, b"Ready to start TLS")
            assert smtp.is_tls
            # RFC 3207 section 4.2: everything learnt before TLS is forgotten.
            assert smtp.esmtp_features == {}
            assert smtp.ehlo_resp is None
            assert smtp.helo_resp is None
            assert not smtp.does_esmtp
            assert not smtp.has_extn("starttls")
            assert await smtp.send_message(note()) == {}
            # The implicit EHLO of the send came from the server under TLS.
            assert smtp.has_extn("auth")
            assert not smtp.has_extn("starttls")
    assert events(tls_server).ehlos == [(CLIENT_NAME, False), (CLIENT_NAME, True)]
    [stored] = tls_server.messages
    assert stored.rcpt_tos == ["bob@example.com"]
    assert stored.content.endswith(b"\r\n\r\nsecret stuff\r\n")


async def test_starttls_with_a_context_argument_then_login(
    tls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(tls_server.host, tls_server.port, CLIENT_NAME) as smtp:
            assert await smtp.ehlo() == (250, smtp.ehlo_resp)
            assert smtp.has_extn("starttls")
            assert (await smtp.starttls(context=client_context)).code == 220
            assert smtp.is_tls
            assert await smtp.login("alice", USERS["alice"]) == AUTH_OK
    assert events(tls_server).ehlos == [(CLIENT_NAME, False), (CLIENT_NAME, True)]
    assert events(tls_server).auths == [("PLAIN", True)]


async def test_starttls_then_login_matches_smtplib(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    handlers = Handlers()
    _, ours = await parity(
        [
            call("starttls", context=client_context),
            call("login", "alice", USERS["alice"]),
            call("send_message", note()),
        ],
        handler=handlers,
        starttls_context=server_context,
        auth=True,
    )
    assert ours.values[:2] == [(220, b"Ready to start TLS"), AUTH_OK]
    assert [ehlo_tls for _, ehlo_tls in handlers.made[1].ehlos] == [False, True]
    assert handlers.made[0].auths == handlers.made[1].auths == [("PLAIN", True)]


STATE = ("helo_resp", "ehlo_resp", "does_esmtp", "esmtp_features")


async def test_ehlo_state_before_and_after_starttls_matches_smtplib(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    _, ours = await parity(
        [
            *[attribute(name) for name in STATE],
            call("ehlo", CLIENT_NAME),
            *[attribute(name) for name in STATE],
            call("starttls", context=client_context),
            *[attribute(name) for name in STATE],
            call("ehlo", CLIENT_NAME),
            *[attribute(name) for name in STATE],
            call("helo", CLIENT_NAME),
            attribute("helo_resp"),
            call("login", "alice", USERS["alice"]),
            attribute("user"),
            attribute("password"),
        ],
        starttls_context=server_context,
        auth=True,
    )
    results = ours.results
    assert results[:4] == [None, None, False, {}]
    features = results[8]
    assert isinstance(features, dict)
    assert "starttls" in features
    assert results[10:14] == [None, None, False, {}]
    features = results[18]
    assert isinstance(features, dict)
    assert "starttls" not in features
    assert "auth" in features
    assert results[-2:] == ["alice", USERS["alice"]]


async def test_the_default_context_refuses_an_untrusted_certificate(
    tls_server: RunningServer,
) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(tls_server.host, tls_server.port, CLIENT_NAME) as smtp:
            with pytest.raises(aiosmtp.SMTPCertificateError) as info:
                await smtp.starttls()
            assert smtp.is_closed
            with pytest.raises(aiosmtp.SMTPServerDisconnected):
                await smtp.noop()
    assert isinstance(info.value, aiosmtp.SMTPException)
    assert isinstance(info.value, smtplib.SMTPException)
    assert isinstance(info.value, ssl.SSLCertVerificationError)
    assert tls_server.messages == []


async def test_after_a_refused_certificate_a_new_connection_works(
    tls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    smtp = aiosmtp.SMTP(tls_server.host, tls_server.port, CLIENT_NAME, timeout=5)
    with anyio.fail_after(10):
        async with smtp:
            with pytest.raises(aiosmtp.SMTPCertificateError):
                await smtp.starttls()
            assert (await smtp.connect(tls_server.host, tls_server.port)).code == 220
            assert smtp.esmtp_features == {}
            assert not smtp.is_tls
            await smtp.starttls(context=client_context)
            assert smtp.is_tls
            assert await smtp.send_message(note()) == {}
    assert len(tls_server.messages) == 1
    assert events(tls_server).quits == 1


async def test_a_server_hostname_that_the_certificate_does_not_name_fails(
    tls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(tls_server.host, tls_server.port, CLIENT_NAME) as smtp:
            with pytest.raises(aiosmtp.SMTPCertificateError) as info:
                await smtp.starttls(context=client_context, server_hostname="mail.example.org")
            assert smtp.is_closed
    assert isinstance(info.value, ssl.SSLCertVerificationError)


async def test_a_server_hostname_that_the_certificate_names_succeeds(
    tls_server: RunningServer, client_context: ssl.SSLContext
) -> None:
    with anyio.fail_after(10):
        async with aiosmtp.SMTP(tls_server.host, tls_server.port, CLIENT_NAME) as smtp:
            await smtp.starttls(context=client_context, server_hostname="localhost")
            assert smtp.is_tls
            assert (await smtp.noop()).code == 250


async def test_starttls_without_server_support_is_not_supported_like_smtplib() -> None:
    _, ours = await parity([call("starttls")])
    assert isinstance(ours.error, aiosmtp.SMTPNotSupportedError)


# -- implicit TLS ----------------------------------------------------------------------


async def test_smtp_ssl_with_the_test_ca(
    smtpd_implicit_tls: RunningServer, client_context: ssl.SSLContext
) -> None:
    server = smtpd_implicit_tls
    with anyio.fail_after(10):
        async with aiosmtp.SMTP_SSL(server.host, server.port, context=client_context) as smtp:
            assert smtp.is_tls
            assert await smtp.login("bob", USERS["bob"]) == AUTH_OK
            assert not smtp.has_extn("starttls")
            result = await smtp.send_message(note())
            assert result == {}
            assert result.reply == (250, b"2.0.0 Ok: queued as TEST")
    [stored] = server.messages
    assert stored.mail_from == "alice@example.com"


async def test_smtp_ssl_default_context_rejects_the_untrusted_certificate(
    smtpd_implicit_tls: RunningServer,
) -> None:
    server = smtpd_implicit_tls
    smtp = aiosmtp.SMTP_SSL(server.host, server.port, timeout=5)
    with anyio.fail_after(10), pytest.raises(aiosmtp.SMTPCertificateError) as info:
        async with smtp:
            pytest.fail("the block must not run")
    assert isinstance(info.value, ssl.SSLCertVerificationError)
    assert isinstance(info.value, aiosmtp.SMTPException)
    assert smtp.is_closed


async def test_smtp_ssl_to_a_plaintext_server_fails_with_a_tls_error(
    smtpd: RunningServer, client_context: ssl.SSLContext
) -> None:
    smtp = aiosmtp.SMTP_SSL(smtpd.host, smtpd.port, CLIENT_NAME, timeout=5, context=client_context)
    with anyio.fail_after(10), pytest.raises(aiosmtp.SMTPServerDisconnected) as info:
        await smtp.connect(smtpd.host, smtpd.port)
    assert isinstance(info.value, ssl.SSLError)
    assert isinstance(info.value, smtplib.SMTPException)
    assert smtp.is_closed


async def test_smtp_ssl_connect_with_a_context_returns_the_greeting(
    smtpd_implicit_tls: RunningServer, client_context: ssl.SSLContext
) -> None:
    server = smtpd_implicit_tls
    smtp = aiosmtp.SMTP_SSL(context=client_context, timeout=5)
    with anyio.fail_after(10):
        reply = await smtp.connect(server.host, server.port)
        assert reply.code == 220
        assert smtp.is_tls
        assert (await smtp.quit()).code == 221
    assert smtp.is_closed


# -- AUTH ------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_login_with_each_builtin_mechanism_matches_smtplib(mechanism: str) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    handlers = Handlers()
    _, ours = await parity(
        [call("login", "alice", USERS["alice"]), call("noop")],
        handler=handlers,
        auth=True,
        auth_exclude_mechanism=[other],
    )
    assert ours.values[0] == AUTH_OK
    assert handlers.made[0].auths == handlers.made[1].auths == [(mechanism, True)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_login_without_an_initial_response_matches_smtplib(mechanism: str) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    handlers = Handlers()
    _, ours = await parity(
        [call("login", "alice", USERS["alice"], initial_response_ok=False)],
        handler=handlers,
        auth=True,
        auth_exclude_mechanism=[other],
    )
    assert ours.values == [AUTH_OK]
    assert handlers.made[0].auths == handlers.made[1].auths == [(mechanism, False)]


async def test_login_with_cram_md5_matches_smtplib() -> None:
    handlers = Handlers(CramMD5Handler)
    _, ours = await parity(
        [call("login", "alice", USERS["alice"])],
        handler=handlers,
        auth=True,
    )
    assert ours.values == [AUTH_OK]
    for handler in handlers.made:
        # Preferred over PLAIN and LOGIN, which the server also offers.
        assert handler.auths == [("CRAM-MD5", False)]
        assert isinstance(handler, CramMD5Handler)
        assert handler.verified == ["alice"]


async def test_cram_md5_with_a_wrong_password_is_refused() -> None:
    handler = CramMD5Handler()
    with aiosmtpd_server(
        handler=handler, auth=True, auth_exclude_mechanism=["PLAIN", "LOGIN"]
    ) as server:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
                assert smtp.esmtp_features == {}
                await smtp.ehlo()
                assert smtp.esmtp_features["auth"].split() == ["CRAM-MD5"]
                with pytest.raises(aiosmtp.SMTPAuthenticationError) as info:
                    await smtp.login("alice", "wrong")
                assert (info.value.smtp_code, info.value.smtp_error) == AUTH_INVALID
                # The session goes on: the right password works next.
                assert await smtp.login("alice", USERS["alice"]) == AUTH_OK
    assert handler.verified == ["alice"]
    assert len(handler.challenges) == 2


async def test_wrong_password_raises_535_like_smtplib() -> None:
    handlers = Handlers()
    _, ours = await parity(
        [call("login", "alice", "not the password")], handler=handlers, auth=True
    )
    assert isinstance(ours.error, aiosmtp.SMTPAuthenticationError)
    assert isinstance(ours.error, smtplib.SMTPAuthenticationError)
    assert (ours.error.smtp_code, ours.error.smtp_error) == AUTH_INVALID
    # Both try every mechanism before giving up, in the same order.
    assert handlers.made[0].auths == handlers.made[1].auths == [("PLAIN", True), ("LOGIN", True)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
@pytest.mark.parametrize("initial_response_ok", [True, False])
async def test_non_ascii_credentials_are_sent_as_utf8(
    mechanism: str, initial_response_ok: bool
) -> None:
    handler = CramMD5Handler()
    excluded = [name for name in ("PLAIN", "LOGIN", "CRAM-MD5") if name != mechanism]
    with aiosmtpd_server(handler=handler, auth=True, auth_exclude_mechanism=excluded) as server:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
                reply = await smtp.login(
                    "jörg", USERS["jörg"], initial_response_ok=initial_response_ok
                )
                assert reply == AUTH_OK
                assert (smtp.user, smtp.password) == ("jörg", USERS["jörg"])
    [(used, _)] = handler.auths
    assert used == mechanism
    if mechanism == "CRAM-MD5":
        assert handler.verified == ["jörg"]


async def test_login_without_auth_advertised_is_not_supported_like_smtplib() -> None:
    # Without an authenticator aiosmtpd keeps AUTH for TLS sessions only.
    _, ours = await parity([call("login", "alice", USERS["alice"])])
    assert isinstance(ours.error, aiosmtp.SMTPNotSupportedError)


async def test_auth_offered_only_after_starttls_is_found_by_the_new_ehlo(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    handler = EventRecordingHandler()
    with aiosmtpd_server(
        handler=handler, starttls_context=server_context, auth=True, auth_require_tls=True
    ) as server:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(
                server.host, server.port, CLIENT_NAME, context=client_context
            ) as smtp:
                with pytest.raises(aiosmtp.SMTPNotSupportedError):
                    await smtp.login("alice", USERS["alice"])
                await smtp.starttls()
                assert await smtp.login("alice", USERS["alice"]) == AUTH_OK
    assert handler.ehlos == [(CLIENT_NAME, False), (CLIENT_NAME, True)]
    assert handler.auths == [("PLAIN", True)]


async def test_login_with_no_mechanism_in_common_like_smtplib() -> None:
    handlers = Handlers(OddMechanismHandler)
    _, ours = await parity(
        [call("ehlo", CLIENT_NAME), call("login", "alice", USERS["alice"]), call("noop")],
        handler=handlers,
        auth=True,
        auth_exclude_mechanism=["PLAIN", "LOGIN"],
    )
    error = ours.results[1]
    assert type(error) is aiosmtp.SMTPException
    assert ours.results[2] == (250, b"2.0.0 OK")
    # Nothing was tried.
    assert handlers.made[0].auths == handlers.made[1].auths == []


def credentials(user: str, password: str) -> list[Call]:
    """Set ``user`` and ``password`` on the client the smtplib way (as login() would)."""
    return [call("__setattr__", "user", user), call("__setattr__", "password", password)]


@pytest.mark.parametrize(
    ("mechanism", "authobject", "initial_response_ok", "initial_response"),
    [
        ("PLAIN", "auth_plain", True, True),
        ("PLAIN", "auth_plain", False, False),
        ("LOGIN", "auth_login", True, True),
        ("LOGIN", "auth_login", False, False),
        ("CRAM-MD5", "auth_cram_md5", True, False),
    ],
)
async def test_auth_with_an_authobject_the_smtplib_way(
    mechanism: str, authobject: str, initial_response_ok: bool, initial_response: bool
) -> None:
    handlers = Handlers(CramMD5Handler)
    _, ours = await parity(
        [
            call("ehlo", CLIENT_NAME),
            *credentials("bob", USERS["bob"]),
            call("auth", mechanism, Client(authobject), initial_response_ok=initial_response_ok),
        ],
        handler=handlers,
        auth=True,
    )
    assert ours.values[-1] == AUTH_OK
    assert handlers.made[0].auths == handlers.made[1].auths == [(mechanism, initial_response)]


async def test_auth_with_an_authobject_and_a_wrong_password_like_smtplib() -> None:
    _, ours = await parity(
        [
            call("ehlo", CLIENT_NAME),
            *credentials("bob", "wrong"),
            call("auth", "PLAIN", Client("auth_plain")),
        ],
        auth=True,
    )
    assert isinstance(ours.error, aiosmtp.SMTPAuthenticationError)
    assert ours.error.smtp_code == 535


# -- secrets stay out of logs and debug output ----------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response_ok", [True, False])
async def test_credentials_never_reach_logs_or_debug_output(
    mechanism: str,
    initial_response_ok: bool,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user, password = "alice", USERS["alice"]
    secrets = [
        password,
        b64(f"\0{user}\0{password}"),
        b64(f"{user}\0{password}"),
        b64(password),
    ]
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    caplog.set_level(logging.DEBUG, logger="aiosmtp")
    with aiosmtpd_server(auth=True, auth_exclude_mechanism=[other]) as server:
        with anyio.fail_after(10):
            async with aiosmtp.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
                smtp.set_debuglevel(2)
                reply = await smtp.login(user, password, initial_response_ok=initial_response_ok)
                assert reply == AUTH_OK
                await smtp.send_message(note())
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if record.name.startswith("aiosmtp")
    )
    stderr = capsys.readouterr().err
    # Both traces are there, and hold the exchange (so the test sees what it checks).
    for trace in (logged, stderr):
        assert f"AUTH {mechanism}" in trace
        assert "MAIL FROM:<alice@example.com>" in trace
        assert "235" in trace
    for secret in secrets:
        assert secret not in logged, secret
        assert secret not in stderr, secret
