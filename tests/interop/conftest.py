"""The interop matrix: which real servers the scenarios run against.

``SERVERS`` is the registry. Each entry names a module of this package and, in it,
``<...>_unavailable() -> str | None`` (the one-line skip reason on a machine that
cannot run the server) and ``run_<...>(workdir, ca)``, a context manager that starts
the server on loopback with its own temporary configuration and yields a
``MailServer`` (``_base.py``). Adding a server is one line here.

Each server starts once per session (``mail_server`` is session-scoped and
parametrised over the registry; pytest groups the tests by server, so one runs at a
time) and is stopped when the tests of the next one begin.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import trustme

from ._base import MailServer


@dataclass(frozen=True)
class Entry:
    module: str  # in tests.interop
    run: str
    unavailable: str


SERVERS: dict[str, Entry] = {
    "postfix": Entry("_postfix", "run_postfix", "postfix_unavailable"),
    "smtp-sink": Entry("_postfix", "run_smtp_sink", "smtp_sink_unavailable"),
    "dovecot-lmtp": Entry("_dovecot", "run_dovecot_lmtp", "dovecot_unavailable"),
    "dovecot-lmtp-unix": Entry("_dovecot", "run_dovecot_lmtp_unix", "dovecot_unavailable"),
    "aiosmtpd": Entry("_aiosmtpd", "run_aiosmtpd", "aiosmtpd_unavailable"),
}

Runner = Callable[[Path, trustme.CA], AbstractContextManager[MailServer]]


def resolve(name: str) -> tuple[Callable[[], str | None], Runner]:
    entry = SERVERS[name]
    module = importlib.import_module(f"{__package__}.{entry.module}")
    return getattr(module, entry.unavailable), getattr(module, entry.run)


@pytest.fixture(scope="session")
def interop_root() -> Iterator[Path]:
    """Every server's work directory lives here. Not pytest's tmp_path: that one is
    private to root, and the servers' own users must walk into their spools."""
    root = Path(tempfile.mkdtemp(prefix="aiosmtp-interop-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def unavailable_servers() -> dict[str, str]:
    """The registry's servers that cannot run here, each with its reason."""
    reasons = {}
    for name in SERVERS:
        unavailable, _ = resolve(name)
        reason = unavailable()
        if reason is not None:
            reasons[name] = reason
    return reasons


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every scenario runs against every server that can run here. The others are
    left out, and test_matrix.py's ``test_every_server_can_run`` is skipped with
    their reasons: one skip line, never a silent pass."""
    if "mail_server" in metafunc.fixturenames:
        missing = unavailable_servers()
        names = [name for name in SERVERS if name not in missing]
        metafunc.parametrize("mail_server", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def mail_server(
    request: pytest.FixtureRequest, interop_root: Path, ca: trustme.CA
) -> Iterator[MailServer]:
    """Each server of the registry in turn, started once for the session (a server
    whose package is installed but that fails to start is an error, not a skip)."""
    name = cast(str, request.param)
    _, run = resolve(name)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=interop_root))
    workdir.chmod(0o755)
    with run(workdir, ca) as server:
        yield server
