"""Security checks over real sockets: secrets stay out of logs, TLS verifies by
default everywhere, and the high-level API neither sends credentials in plaintext
nor lets STARTTLS be stripped.

1. Secrets. Every log record of every logger at DEBUG, and the ``set_debuglevel``
   trace on stderr, are searched for the password, the AUTH payloads (PLAIN blob,
   LOGIN lines, the CRAM-MD5 answer, which allows an offline guess of the
   password) in plain, base64 and repr-escaped forms: through successful logins
   with PLAIN, LOGIN and CRAM-MD5 (with and without an initial response), a failed
   login that tries all three, the exception it raises, and a pool that logs in.
   The traces are checked to hold the exchange, so the search is not vacuous.
2. TLS. The library's own default context (built while the test CA is the
   system's trust store, via SSL_CERT_FILE) refuses an unknown CA, a wrong host
   name, an expired and a self-signed certificate with SMTPCertificateError, for
   SMTP.starttls(), SMTP_SSL, SMTPPool (STARTTLS and implicit) and aiosmtp.send;
   a good certificate passes through the same paths (the control).
3. Credentials in plaintext. SMTPPool and aiosmtp.send log in over an
   unencrypted connection only to loopback literals, "localhost" and Unix
   sockets, or with ``allow_insecure_auth=True``; a host that merely resolves to
   loopback ("0.0.0.0", "::ffff:127.0.0.1", this machine's host name) counts as
   remote, which is the safe side. SMTP.login keeps smtplib's behaviour.
4. Stripping. With tls="starttls" (the default), a server that does not offer
   STARTTLS, one whose STARTTLS line a middlebox mangled, and one that refuses
   the STARTTLS command all end the attempt before MAIL or AUTH; "opportunistic"
   never falls back to plaintext after a failed certificate check; an LMTP pool
   over TCP keeps its TLS policy too (and refuses tls="implicit", which LMTP lacks).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

import aiosmtp
import aiosmtp.client

from . import hypothesis_profiles  # noqa: F401  (registers and loads the profiles)
from .scripted import (
    CLIENT_NAME,
    MiniSMTP,
    ScriptedServers,
    ScriptError,
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
from .servers import RecordingHandler, aiosmtpd_server

pytestmark = pytest.mark.anyio

#: Bounds each test as a whole; never reached when it passes.
LIMIT = 10
USER = "alice"
#: Non-ASCII, so that UTF-8, base64 and repr-escaped forms all differ.
PASSWORD = "correct-horse-b\u00e4ttery-st\u00e4ple"
WRONG = "wrong-h\u00f6rse-guess"
CHALLENGE = b"<1896.697170952@postoffice.example.net>"
BODY = b"Subject: s\r\n\r\nbody\r\n"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def cram(password: str, challenge: bytes = CHALLENGE) -> str:
    return hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()


def secrets_of(password: str, challenges: list[bytes] | None = None) -> list[str]:
    """Every form in which ``password`` or an AUTH payload made from it could leak."""
    forms = [
        password,
        password.encode().decode("latin-1"),
        repr(password)[1:-1],
        repr(password.encode())[2:-1],
        password.encode().hex(),
        "horse",  # a distinctive piece, for partial leaks
        b64(password),
        b64(f"\0{USER}\0{password}"),
        b64(f"{USER}\0{password}"),
        repr(f"\0{USER}\0{password}")[1:-1],
    ]
    for challenge in challenges or [CHALLENGE]:
        digest = cram(password, challenge)
        forms += [digest, b64(f"{USER} {digest}")]
    return forms


def everything_logged(caplog: pytest.LogCaptureFixture, *, skip: tuple[str, ...] = ()) -> str:
    """Every record of every logger, message, arguments and traceback included."""
    formatter = logging.Formatter()
    parts = []
    for record in caplog.records:
        if record.name.startswith(skip):
            continue
        parts.append(f"{record.name} {record.getMessage()} {record.args!r}")
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
    return "\n".join(parts)


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked"


# -- 1. secrets in logs and debug output --------------------------------------------------


def auth_exchange(mechanism: str, password: str, initial: bool, verdict: bytes) -> list[Step]:
    """The server's side of one AUTH exchange, byte for byte."""
    if mechanism == "PLAIN":
        blob = b64(f"\0{USER}\0{password}").encode()
        if initial:
            return [expect(b"AUTH PLAIN " + blob + b"\r\n"), send(verdict)]
        return [
            expect(b"AUTH PLAIN\r\n"),
            send(b"334 \r\n"),
            expect(blob + b"\r\n"),
            send(verdict),
        ]
    if mechanism == "LOGIN":
        first = [expect(b"AUTH LOGIN " + b64(USER).encode() + b"\r\n")]
        if not initial:
            first = [
                expect(b"AUTH LOGIN\r\n"),
                send(b"334 VXNlcm5hbWU6\r\n"),
                expect(b64(USER).encode() + b"\r\n"),
            ]
        return [
            *first,
            send(b"334 UGFzc3dvcmQ6\r\n"),
            expect(b64(password).encode() + b"\r\n"),
            send(verdict),
        ]
    assert mechanism == "CRAM-MD5"
    return [
        expect(b"AUTH CRAM-MD5\r\n"),
        send(b"334 " + b64(CHALLENGE).encode() + b"\r\n"),
        expect(b64(f"{USER} {cram(password)}").encode() + b"\r\n"),
        send(verdict),
    ]


OK = b"235 2.7.0 Authentication successful\r\n"
REFUSED = b"535 5.7.8 Authentication credentials invalid\r\n"


@pytest.mark.parametrize("debuglevel", [1, 2])
@pytest.mark.parametrize("initial", [True, False], ids=["initial", "no-initial"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_a_login_leaves_no_secret_in_logs_or_debug_output(
    scripted: ScriptedServers,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    mechanism: str,
    initial: bool,
    debuglevel: int,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root: every logger
    server = scripted(
        greet(),
        ehlo_ok(f"AUTH {mechanism}"),
        auth_exchange(mechanism, PASSWORD, initial, OK),
        quit_ok(),
    )
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            smtp.set_debuglevel(debuglevel)
            assert (await smtp.login(USER, PASSWORD, initial_response_ok=initial)).code == 235
            shown = f"{smtp!r} {smtp!s}"
    await server.finished()
    logged, stderr = everything_logged(caplog), capsys.readouterr().err
    for trace in (logged, stderr):
        assert f"AUTH {mechanism}" in trace  # the exchange is there...
        assert "235" in trace
        assert "QUIT" in trace
    for text in (logged, stderr, shown):
        assert_no_secret(text, secrets_of(PASSWORD))  # ...its secrets are not


@pytest.mark.parametrize("initial", [True, False], ids=["initial", "no-initial"])
async def test_a_failed_login_leaves_no_secret_anywhere(
    scripted: ScriptedServers,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    initial: bool,
) -> None:
    # login() tries every mechanism both sides know, strongest first: three refusals.
    caplog.set_level(logging.DEBUG)
    server = scripted(
        greet(),
        ehlo_ok("AUTH LOGIN PLAIN CRAM-MD5"),
        [
            step
            for name in ("CRAM-MD5", "PLAIN", "LOGIN")
            for step in auth_exchange(name, WRONG, initial, REFUSED)
        ],
        quit_ok(),
    )
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            smtp.set_debuglevel(2)
            error: aiosmtp.SMTPAuthenticationError | None = None
            try:
                await smtp.login(USER, WRONG, initial_response_ok=initial)
            except aiosmtp.SMTPAuthenticationError as exc:
                error = exc
                logging.getLogger("app").exception("login failed")  # as an application would
    await server.finished()
    assert error is not None
    assert error.smtp_code == 535
    raised = f"{error!s} {error!r} {error.args!r} {error.smtp_error!r}"
    logged, stderr = everything_logged(caplog), capsys.readouterr().err
    for trace in (logged, stderr):
        for name in ("CRAM-MD5", "PLAIN", "LOGIN"):
            assert f"AUTH {name}" in trace
        assert "535" in trace
    assert "SMTPAuthenticationError" in logged  # the traceback was logged
    for text in (logged, stderr, raised):
        assert_no_secret(text, secrets_of(WRONG))


async def test_a_pool_that_logs_in_logs_no_secret(
    caplog: pytest.LogCaptureFixture,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    from .servers import USERS, CramMD5Handler

    caplog.set_level(logging.DEBUG)
    handler = CramMD5Handler()
    password = USERS["j\u00f6rg"]
    with aiosmtpd_server(handler=handler, starttls_context=server_context, auth=True) as smtpd:
        with anyio.fail_after(LIMIT):
            async with aiosmtp.SMTPPool(
                smtpd.host,
                smtpd.port,
                context=client_context,
                username="j\u00f6rg",
                password=password,
                local_hostname=CLIENT_NAME,
                timeout=5,
            ) as pool:
                assert await pool.sendmail("a@example.org", ["b@example.org"], BODY) == {}
                shown = repr(pool)
    assert handler.verified == ["j\u00f6rg"]  # CRAM-MD5, the strongest, was used
    # aiosmtpd logs what it receives ("mail.log"): the server is not under test.
    logged = everything_logged(caplog, skip=("mail.log",))
    assert "AUTH CRAM-MD5" in logged
    assert "STARTTLS" in logged
    user = "j\u00f6rg"
    secrets = [
        password,
        b64(password),
        *(cram(password, c) for c in handler.challenges),
        *(b64(f"{user} {cram(password, c)}") for c in handler.challenges),
    ]
    assert_no_secret(logged, secrets)
    assert_no_secret(shown, secrets)


# -- 2. certificate and host name verification by default --------------------------------------


def _self_signed(*names: str) -> tuple[bytes, bytes]:
    """A certificate signed by its own key, naming ``names``: (cert PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context_for(problem: str, ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    names = ("localhost", "127.0.0.1")
    if problem == "good":
        ca.issue_cert(*names).configure_cert(context)
    elif problem == "unknown CA":
        trustme.CA().issue_cert(*names).configure_cert(context)
    elif problem == "wrong host name":
        ca.issue_cert("mail.example.org").configure_cert(context)
    elif problem == "expired":
        now = datetime.datetime.now(datetime.UTC)
        ca.issue_cert(
            *names,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ).configure_cert(context)
    else:
        assert problem == "self-signed"
        cert, key = _self_signed(*names)
        (tmp_path / "self.pem").write_bytes(cert + key)
        context.load_cert_chain(tmp_path / "self.pem")
    return context


#: What OpenSSL says for each problem (its wording for self-signed changed in 3.0).
REASONS = {
    "unknown CA": r"unable to get local issuer certificate",
    "wrong host name": r"mismatch",
    "expired": r"certificate has expired",
    "self-signed": r"self[- ]signed certificate",
}
PROBLEMS = ["good", *REASONS]
ENTRY_POINTS = ["SMTP.starttls()", "SMTP_SSL", "SMTPPool starttls", "SMTPPool implicit", "send()"]


@pytest.fixture
def ca_is_the_system_store(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library builds its default context afresh, and it finds the test CA where
    the system's CAs would be: what is tested is the library's own default."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    # monkeypatch puts the cached context back as it was afterwards.
    monkeypatch.setattr(aiosmtp.client, "_default_context", None)


@pytest.mark.usefixtures("ca_is_the_system_store")
@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
async def test_certificates_are_verified_by_default(
    scripted: ScriptedServers, ca: trustme.CA, tmp_path: Path, entry: str, problem: str
) -> None:
    context = _server_context_for(problem, ca, tmp_path)
    good = problem == "good"
    implicit = entry in ("SMTP_SSL", "SMTPPool implicit")
    steps: list[Step | list[Step]] = []
    if not implicit:
        steps += [greet(), ehlo_ok("STARTTLS"), expect(b"STARTTLS\r\n"), send(b"220 go\r\n")]
    steps.append(start_tls(context, expect_failure=not good))
    if good:
        # The session goes on over TLS: a greeting first on implicit TLS, then
        # whatever the entry point does.
        steps += [greet()] if implicit else []
        steps.append(call(MiniSMTP(features=())))
    server = scripted(*steps)
    host, port = server.host, server.port
    common: dict[str, Any] = {"local_hostname": CLIENT_NAME, "timeout": 5}

    async def attempt() -> None:
        if entry == "SMTP.starttls()":
            async with aiosmtp.SMTP(host, port, **common) as smtp:
                await smtp.starttls()
                assert smtp.is_tls
        elif entry == "SMTP_SSL":
            async with aiosmtp.SMTP_SSL(host, port, **common) as smtp:
                assert smtp.is_tls
                await smtp.ehlo()
        elif entry == "send()":
            await aiosmtp.send(
                BODY, host, port, from_addr="a@x.org", to_addrs=["b@x.org"], **common
            )
        else:
            tls: aiosmtp.pool.TLSMode = "implicit" if implicit else "starttls"
            async with aiosmtp.SMTPPool(host, port, tls=tls, **common) as pool:
                await pool.sendmail("a@x.org", ["b@x.org"], BODY)

    with anyio.fail_after(LIMIT):
        if good:
            await attempt()
        else:
            with pytest.raises(aiosmtp.SMTPCertificateError, match=REASONS[problem]) as info:
                await attempt()
            assert isinstance(info.value, ssl.SSLCertVerificationError)
    await server.finished()
    if not good:
        assert server.tls_error is not None  # the server saw the client abort


# -- 3. credentials in plaintext: loopback, remote, opt-in ------------------------------------


class RecordingAuthenticator:
    """aiosmtpd's authenticator, noting each attempt and whether it came over TLS."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, bool]] = []

    def __call__(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.attempts.append((data.login.decode(), session.ssl is not None))
            return AuthResult(success=data.password == PASSWORD.encode())
        return AuthResult(success=False, handled=False)


def _resolves_to_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(name)).is_loopback
    except OSError:
        return False


def _loopback_in_disguise() -> list[Any]:
    """Names and addresses that reach 127.0.0.1 without being loopback literals."""
    routes = [
        pytest.param("0.0.0.0", id="unspecified"),
        pytest.param("::ffff:127.0.0.1", id="v4-mapped"),
    ]
    name = socket.gethostname()
    if name != "localhost" and _resolves_to_loopback(name):
        routes.append(pytest.param(name, id="host name"))
    return routes


def _is_loopback_literal(host: str) -> bool:
    # Python 3.13 counts IPv4-mapped loopback as loopback; 3.11 and 3.12 do not.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(params=_loopback_in_disguise())
def disguised(request: pytest.FixtureRequest) -> str:
    route: str = request.param
    try:
        with socket.create_connection((route, 9), timeout=1):
            pass
    except ConnectionRefusedError:
        pass  # reachable: nothing listens on port 9
    except OSError as exc:
        pytest.skip(f"{route} cannot be dialled here: {exc}")
    return route


@pytest.mark.parametrize("api", ["SMTPPool", "send()"])
async def test_no_plaintext_auth_to_a_host_that_is_not_a_loopback_literal(
    disguised: str, api: str
) -> None:
    authenticator = RecordingAuthenticator()
    handler = RecordingHandler()
    with aiosmtpd_server(handler=handler, auth=True, authenticator=authenticator) as smtpd:
        options: dict[str, Any] = {
            "username": USER,
            "password": PASSWORD,
            "tls": "none",
            "local_hostname": CLIENT_NAME,
            "timeout": 5,
        }

        async def deliver(**extra: Any) -> aiosmtp.SendResult:
            if api == "send()":
                return await aiosmtp.send(
                    BODY,
                    disguised,
                    smtpd.port,
                    from_addr="a@x.org",
                    to_addrs=["b@x.org"],
                    **options,
                    **extra,
                )
            async with aiosmtp.SMTPPool(disguised, smtpd.port, **options, **extra) as pool:
                return await pool.sendmail("a@x.org", ["b@x.org"], BODY)

        with anyio.fail_after(LIMIT):
            if _is_loopback_literal(disguised):
                assert await deliver() == {}  # a newer Python knows it for loopback
            else:
                with pytest.raises(aiosmtp.SMTPNotSupportedError, match="not encrypted"):
                    await deliver()
                assert authenticator.attempts == []
                assert handler.messages == []
                # The explicit opt-in sends them, in plaintext.
                assert await deliver(allow_insecure_auth=True) == {}
    assert authenticator.attempts == [(USER, False)]
    assert len(handler.messages) == 1


@pytest.mark.parametrize("api", ["SMTPPool", "send()"])
async def test_a_second_loopback_address_counts_as_loopback(api: str) -> None:
    # 127.0.0.0/8 is loopback whatever the last three bytes: credentials may go.
    authenticator = RecordingAuthenticator()
    try:
        probe = socket.create_server(("127.0.0.2", 0))
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.0.0.2 here: {exc}")
    probe.close()
    with aiosmtpd_server(auth=True, authenticator=authenticator, hostname="127.0.0.2") as smtpd:
        options: dict[str, Any] = {"username": USER, "password": PASSWORD, "tls": "none"}
        with anyio.fail_after(LIMIT):
            if api == "send()":
                result = await aiosmtp.send(
                    BODY,
                    "127.0.0.2",
                    smtpd.port,
                    from_addr="a@x.org",
                    to_addrs="b@x.org",
                    **options,
                )
            else:
                async with aiosmtp.SMTPPool("127.0.0.2", smtpd.port, **options) as pool:
                    result = await pool.sendmail("a@x.org", "b@x.org", BODY)
    assert result == {}
    assert authenticator.attempts == [(USER, False)]


async def test_an_lmtp_pool_over_a_unix_socket_may_log_in(
    scripted: ScriptedServers, tmp_path: Path
) -> None:
    path = str(tmp_path / "lmtp.sock")
    blob = b64(f"\0{USER}\0{PASSWORD}").encode()
    mini = MiniSMTP(features=(), lmtp=True)
    server = scripted(
        greet(),
        ehlo_ok("AUTH PLAIN", verb="LHLO"),
        expect(b"AUTH PLAIN " + blob + b"\r\n"),
        send(OK),
        call(mini),
        unix_path=path,
    )
    with anyio.fail_after(LIMIT):
        async with aiosmtp.SMTPPool(
            path,
            lmtp=True,
            username=USER,
            password=PASSWORD,
            local_hostname=CLIENT_NAME,
            timeout=5,
        ) as pool:
            assert await pool.sendmail("a@x.org", ["b@x.org"], BODY) == {}
    await server.finished()
    assert mini.state == "quit"
    assert len(mini.transactions) == 1


async def test_smtp_login_keeps_smtplibs_behaviour_in_plaintext(
    scripted: ScriptedServers, disguised: str
) -> None:
    # No policy at this level: smtplib logs in over whatever the caller connected,
    # even to a host that the pool would count as remote.
    route = disguised
    server = scripted(
        greet(),
        ehlo_ok("AUTH PLAIN"),
        auth_exchange("PLAIN", PASSWORD, True, OK),
        quit_ok(),
    )
    with anyio.fail_after(LIMIT):
        async with aiosmtp.SMTP(route, server.port, CLIENT_NAME, timeout=5) as smtp:
            assert not smtp.is_tls
            assert (await smtp.login(USER, PASSWORD)).code == 235
    await server.finished()


# -- 4. STARTTLS required: stripping ----------------------------------------------------------

STRIPPED = {
    # A server that does not offer it at all.
    "not offered": [ehlo_ok("AUTH PLAIN", "8BITMIME")],
    # A middlebox that overwrote the keyword in the EHLO reply (as some firewalls'
    # "ESMTP inspection" does), so that the client cannot see it.
    "mangled by a middlebox": [ehlo_ok("AUTH PLAIN", "XXXXXXXA", "8BITMIME")],
    # A server (or a man in the middle) that lists it but refuses the command.
    "refused when asked": [
        ehlo_ok("STARTTLS", "AUTH PLAIN"),
        expect(b"STARTTLS\r\n"),
        send(b"454 4.7.0 TLS not available due to temporary reason\r\n"),
    ],
    "refused as unknown": [
        ehlo_ok("STARTTLS", "AUTH PLAIN"),
        expect(b"STARTTLS\r\n"),
        send(b"502 5.5.1 Command not implemented\r\n"),
    ],
}


@pytest.mark.parametrize("api", ["SMTPPool", "send()"])
@pytest.mark.parametrize("how", STRIPPED.values(), ids=STRIPPED.keys())
async def test_stripped_starttls_stops_before_mail_or_auth(
    scripted: ScriptedServers, how: list[Step], api: str
) -> None:
    # Credentials are given and the host is loopback: only STARTTLS stands between
    # the client and a plaintext login, and it must hold. After the refusal the
    # client says nothing more: the server sees the connection close.
    server = scripted(greet(), how, expect_eof())
    options: dict[str, Any] = {
        "username": USER,
        "password": PASSWORD,
        "local_hostname": CLIENT_NAME,
        "timeout": 5,
    }
    expected: type[aiosmtp.SMTPException] = (
        aiosmtp.SMTPResponseException if len(how) > 1 else aiosmtp.SMTPNotSupportedError
    )

    async def attempt() -> None:
        if api == "send()":
            await aiosmtp.send(
                BODY, server.host, server.port, from_addr="a@x.org", to_addrs="b@x.org", **options
            )
        else:
            async with aiosmtp.SMTPPool(server.host, server.port, **options) as pool:
                await pool.sendmail("a@x.org", "b@x.org", BODY)

    with anyio.fail_after(LIMIT), pytest.raises(expected) as info:
        await attempt()
    if expected is aiosmtp.SMTPNotSupportedError:
        assert "STARTTLS" in str(info.value)
    await server.finished()
    assert b"AUTH" not in server.transcript
    assert b"MAIL" not in server.transcript


async def test_opportunistic_tls_still_refuses_a_bad_certificate(
    scripted: ScriptedServers, ca: trustme.CA, tmp_path: Path, client_context: ssl.SSLContext
) -> None:
    # "opportunistic" goes on in plaintext only where STARTTLS is not offered; a
    # STARTTLS whose certificate fails is an attack, not a reason to fall back.
    context = _server_context_for("wrong host name", ca, tmp_path)
    server = scripted(
        greet(),
        ehlo_ok("STARTTLS"),
        expect(b"STARTTLS\r\n"),
        send(b"220 go\r\n"),
        start_tls(context, expect_failure=True),
    )
    with anyio.fail_after(LIMIT), pytest.raises(aiosmtp.SMTPCertificateError):
        async with aiosmtp.SMTPPool(
            server.host,
            server.port,
            tls="opportunistic",
            context=client_context,
            local_hostname=CLIENT_NAME,
            timeout=5,
        ) as pool:
            await pool.sendmail("a@x.org", "b@x.org", BODY)
    await server.finished()


def _tolerant(mini: MiniSMTP) -> Step:
    """MiniSMTP that also puts up with a client that hangs up mid-line (a TLS
    ClientHello that got a plaintext greeting): the verdict is the test's own."""

    def run(conn: ServerConnection) -> None:
        with contextlib.suppress(ScriptError):
            mini(conn)

    return call(run)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_an_lmtp_pool_over_tcp_keeps_its_tls_policy(
    scripted: ScriptedServers, tls: aiosmtp.pool.TLSMode
) -> None:
    # An LMTP server on TCP that offers no STARTTLS and speaks plaintext: with TLS
    # required, not a byte of the transaction may reach it.
    mini = MiniSMTP(features=(), lmtp=True)
    server = scripted(greet(), _tolerant(mini))
    refused: BaseException | None = None
    with anyio.fail_after(LIMIT):
        try:
            async with aiosmtp.SMTPPool(
                server.host,
                server.port,
                lmtp=True,
                tls=tls,
                local_hostname=CLIENT_NAME,
                timeout=2,
            ) as pool:
                await pool.sendmail("a@x.org", "b@x.org", BODY)
        except (ValueError, aiosmtp.SMTPException) as exc:
            refused = exc
    if server.peer is None:
        # Refused before connecting (a fix may refuse tls='implicit' for LMTP at
        # construction): let the waiting server see a client that hangs up at once.
        with socket.create_connection((server.host, server.port)):
            pass
    await server.finished()
    assert not any(line.startswith(b"MAIL") for line in mini.commands), mini.commands
    assert refused is not None
