"""``RecordingServer.in_thread()``: the recording server in an event loop of its own,
in a thread, for synchronous tests and for clients in other processes.

anyio's blocking portal runs the loop; the server is entered and left through it,
so all of its own code still runs on one event loop. What a test calls from its own
thread (``messages``, ``refuse``...) is guarded by the server's lock.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._records import RecordedMessage, SessionRecord, Step

if TYPE_CHECKING:
    from ._server import RecordingServer

__all__ = ["ThreadedRecordingServer"]


class ThreadedRecordingServer:
    """A ``RecordingServer`` running in a thread. Use it as a context manager, or
    call ``start()`` and ``stop()``. Everything here is safe to call from any thread
    (but not from inside the server's own loop)."""

    def __init__(self, server: RecordingServer, *, backend: str = "asyncio") -> None:
        self.server = server
        self.backend = backend
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def __repr__(self) -> str:
        state = "running" if self._stack is not None else "stopped"
        return f"<ThreadedRecordingServer {self.host}:{self.port} {self.backend} {state}>"

    # -- starting and stopping --------------------------------------------------------

    def start(self) -> ThreadedRecordingServer:
        if self._stack is not None:
            raise RuntimeError("the server is already running")
        with contextlib.ExitStack() as stack:
            self._portal = stack.enter_context(
                start_blocking_portal(self.backend, name="aiosmtp.testing server")
            )
            stack.enter_context(self._portal.wrap_async_context_manager(self.server))
            self._stack = stack.pop_all()
        return self

    def stop(self) -> None:
        stack, self._stack, self._portal = self._stack, None, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> ThreadedRecordingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the server's face ------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def unix_path(self) -> str | None:
        return self.server.unix_path

    @property
    def messages(self) -> list[RecordedMessage]:
        """The messages accepted so far, oldest first (a copy)."""
        return self.server.messages

    @property
    def sessions(self) -> list[SessionRecord]:
        return self.server.sessions

    def clear(self) -> None:
        self.server.clear()

    def clear_faults(self) -> None:
        self.server.clear_faults()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedMessage]:
        """Block until at least ``count`` messages were recorded (``TimeoutError``
        after ``timeout`` seconds)."""
        return self.server.wait_for_sync(count, timeout)

    async def wait_for_async(self, count: int, timeout: float = 5.0) -> list[RecordedMessage]:
        """``wait_for`` from async code on any event loop, without blocking it."""
        return await anyio.to_thread.run_sync(self.server.wait_for_sync, count, timeout)

    def refuse(
        self,
        step: Step | str,
        code: int = 550,
        text: str | None = None,
        *,
        match: str | None = None,
        times: int | None = None,
    ) -> None:
        self.server.refuse(step, code, text, match=match, times=times)

    def delay(
        self,
        step: Step | str,
        seconds: float,
        *,
        match: str | None = None,
        times: int | None = None,
    ) -> None:
        self.server.delay(step, seconds, match=match, times=times)

    def drop(
        self,
        step: Step | str,
        *,
        match: str | None = None,
        times: int | None = None,
        record: bool = False,
    ) -> None:
        self.server.drop(step, match=match, times=times, record=record)
