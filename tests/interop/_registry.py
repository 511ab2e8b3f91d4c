"""The interop matrix's servers: adding one is one line in ``SERVERS``.

Each entry names a module of this package and, in it,
``<...>_unavailable() -> str | None`` (the one-line reason a machine cannot run the
server, or None) and ``run_<...>(workdir, ca)``, a context manager that starts the
server on loopback with its own temporary configuration under ``workdir`` (a
directory every user may walk into) and yields a ``MailServer`` (``_base.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

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
    "exim": Entry("_exim", "run_exim", "exim_unavailable"),  # tests/interop/_exim.py
}

Runner = Callable[[Path, trustme.CA], AbstractContextManager[MailServer]]


def resolve(name: str) -> tuple[Callable[[], str | None], Runner]:
    entry = SERVERS[name]
    qualified = f"{__package__}.{entry.module}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name != qualified:
            raise
        # A server whose module is not in this tree yet (merged separately).
        return (lambda: f"{entry.module}.py is not in this tree"), _absent
    return getattr(module, entry.unavailable), getattr(module, entry.run)


def _absent(workdir: Path, ca: trustme.CA) -> AbstractContextManager[MailServer]:
    raise AssertionError("a server whose module is absent is never started")


def unavailable_servers() -> dict[str, str]:
    """The registry's servers that cannot run here, each with its reason."""
    reasons = {}
    for name in SERVERS:
        unavailable, _ = resolve(name)
        reason = unavailable()
        if reason is not None:
            reasons[name] = reason
    return reasons
