"""The interop matrix: which real servers the scenarios run against.

The servers are listed in ``_registry.SERVERS`` (adding one is one line there).

Each server starts once per session (``mail_server`` is session-scoped and
parametrised over the registry; pytest groups the tests by server, so one runs at a
time) and is stopped when the tests of the next one begin.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import trustme

from ._base import MailServer
from ._registry import SERVERS, resolve, unavailable_servers


@pytest.fixture(scope="session")
def interop_root() -> Iterator[Path]:
    """Every server's work directory lives here. Not pytest's tmp_path: that one is
    private to root, and the servers' own users must walk into their spools."""
    root = Path(tempfile.mkdtemp(prefix="aiosmtp-interop-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


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
