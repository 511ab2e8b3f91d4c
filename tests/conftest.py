from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trustme

from . import hypothesis_profiles  # noqa: F401  (every property test follows HYPOTHESIS_PROFILE)
from .servers import RunningServer, aiosmtpd_server


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for localhost and 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def smtpd() -> Iterator[RunningServer]:
    """Plain aiosmtpd with PIPELINING advertised."""
    with aiosmtpd_server() as server:
        yield server


@pytest.fixture
def smtpd_tls(server_context: ssl.SSLContext) -> Iterator[RunningServer]:
    """aiosmtpd offering STARTTLS and AUTH (PLAIN, LOGIN)."""
    with aiosmtpd_server(starttls_context=server_context, auth=True) as server:
        yield server


@pytest.fixture
def smtpd_implicit_tls(server_context: ssl.SSLContext) -> Iterator[RunningServer]:
    """aiosmtpd behind implicit TLS, with AUTH."""
    with aiosmtpd_server(implicit_tls_context=server_context, auth=True) as server:
        yield server


# -- scripted servers (tests/scripted.py) ----------------------------------------------

from .scripted import ScriptedServers  # noqa: E402


@pytest.fixture
def scripted() -> Iterator[ScriptedServers]:
    """``scripted(*steps)`` starts a scripted fake server; at teardown every one is
    joined and the first failure inside a server thread fails the test."""
    with ScriptedServers() as servers:
        yield servers
