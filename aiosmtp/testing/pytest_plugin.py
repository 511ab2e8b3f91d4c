"""pytest plugin (entry point ``aiosmtp`` in the ``pytest11`` group).

Fixtures:

``smtp_server``
    A ``RecordingServer`` running in a thread of its own, started for the test and
    stopped after it. Being thread-backed, it works the same in synchronous tests and
    in async tests on any event loop (pytest-asyncio, anyio's plugin, trio).

``recording_server_factory``
    ``recording_server_factory(**options)`` starts another such server with
    ``RecordingServer``'s options (``tls_context``, ``auth``, ``lmtp``,
    ``extensions``...); every server it started is stopped after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._server import RecordingServer
from ._thread import ThreadedRecordingServer

__all__ = ["recording_server_factory", "smtp_server"]

RecordingServerFactory = Callable[..., ThreadedRecordingServer]


@pytest.fixture
def recording_server_factory() -> Iterator[RecordingServerFactory]:
    """Start thread-backed recording servers; all are stopped after the test."""
    with contextlib.ExitStack() as stack:

        def factory(*args: Any, **kwargs: Any) -> ThreadedRecordingServer:
            return stack.enter_context(RecordingServer.in_thread(*args, **kwargs))

        yield factory


@pytest.fixture
def smtp_server(
    recording_server_factory: RecordingServerFactory,
) -> ThreadedRecordingServer:
    """A recording SMTP server on 127.0.0.1 with the default extensions."""
    return recording_server_factory()
