"""Helpers for the fault catalogue and the cancellation sweep.

``FaultServer`` is tests/scripted.py's scripted server stretched to several
connections: the n-th connection accepted plays the n-th script, so a test can
script a broken first connection and the clean one a pool (or an explicit
``connect()``) opens next, and read each connection's transcript apart. It can
also shrink its receive buffer, so that a client writing a large message to a
server that reads nothing really blocks.

``TransportOps`` is the one hook into aiosmtp's internals: it wraps the
transport's ``send``, ``receive`` and ``start_tls`` to count them and to cancel
the caller at the k-th one. Only this class knows what the transport looks like;
if the transport changes, this is the one place to adapt.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from aiosmtp._asyncio_transport import AsyncioTransport
from aiosmtp._transport import AnyioTransport, Transport

from .scripted import ScriptedServer, ScriptError, ServerConnection, Step, call

__all__ = [
    "FaultServer",
    "FaultServers",
    "TransportOps",
    "read_to_eof",
    "shutdown_read",
]


class FaultServer(ScriptedServer):
    """A scripted server that plays ``scripts[n]`` on the n-th connection it accepts."""

    def __init__(
        self,
        scripts: Sequence[Sequence[Step]],
        *,
        rcvbuf: int | None = None,
        io_timeout: float = 5.0,
        name: str = "fault server",
    ) -> None:
        super().__init__([], io_timeout=io_timeout, name=name)
        self.scripts = [list(script) for script in scripts]
        self._abandoned = False
        # Where, in the log, each connection begins.
        self._starts: list[int] = []
        if rcvbuf is not None:
            # Inherited by accepted sockets, and so by the window they announce.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def _run(self) -> None:
        step: Step | None = None
        try:
            for number, script in enumerate(self.scripts):
                self.script = script
                self._step = -1
                sock = self._accept()
                if sock is None:  # pragma: no cover (the scripts are never empty)
                    return
                with self._lock:
                    self._starts.append(len(self._log))
                conn = ServerConnection(self, sock)
                try:
                    for index, step in enumerate(script):
                        self._step = index
                        if conn.closed:
                            raise ScriptError("a step after the connection was closed")
                        step.run(conn)
                    step = None
                    if not conn.closed:
                        conn.expect_eof()
                except BaseException as exc:
                    exc.add_note(f"on connection #{number + 1}")
                    raise
                finally:
                    conn.close()
        except BaseException as exc:
            where = f"step {self._step} {step!r}" if step is not None else "after the script"
            error = ScriptError(f"{self.name}: {where}: {exc}")
            error.__cause__ = exc
            self._error = error

    def abandon(self) -> None:
        """The test has failed already: stop at once, and let join() stay quiet about
        what the server thread then makes of a script cut short."""
        self._abandoned = True
        self._abort.set()
        self._release.set()

    def join(self, timeout: float = 5.0) -> None:
        try:
            super().join(timeout)
        except ScriptError:
            if not self._abandoned:
                raise

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._starts)

    def transcripts(self) -> list[bytes]:
        """Every byte the client sent, one entry per connection accepted."""
        with self._lock:
            bounds = [*self._starts, len(self._log)]
            return [
                b"".join(data for direction, data in self._log[start:end] if direction == "C")
                for start, end in itertools.pairwise(bounds)
            ]


class FaultServers:
    """The ``fault_server`` fixture: starts FaultServers and joins them all at the end,
    re-raising the first failure inside a server thread."""

    def __init__(self) -> None:
        self.servers: list[FaultServer] = []

    def __call__(self, *scripts: Sequence[Step], rcvbuf: int | None = None) -> FaultServer:
        server = FaultServer(scripts, rcvbuf=rcvbuf, name=f"fault server #{len(self.servers) + 1}")
        self.servers.append(server)
        server.start()
        return server

    def join_all(self) -> None:
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.join()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also: {other}")
            raise errors[0]


# -- steps that tests/scripted.py does not have ------------------------------------------


def shutdown_read() -> Step:
    """Half close the other way: the server shuts down its read side. (Linux still
    queues what the client sends, and says nothing to the client: to the client this
    server is one that has stopped reading.)"""

    def run(conn: ServerConnection) -> None:
        conn.sock.shutdown(socket.SHUT_RD)

    return call(run)


def read_to_eof() -> Step:
    """Record whatever the client still sends, until it hangs up; the test then
    judges the transcript (for a client that may or may not send one more command)."""

    def run(conn: ServerConnection) -> None:
        while conn.receive():
            pass
        conn.buffer.clear()
        conn.close()

    return call(run)


# -- the hook into the transport ----------------------------------------------------------

_Operation = Callable[..., Awaitable[Any]]


class TransportOps:
    """Counts the transport operations (send, receive, start_tls) made by one task,
    and cancels ``scope`` just before (``"before"``) or just after (``"after"``) the
    operation numbered ``cancel_at`` (from 0). The socket stays real: only the
    moment of the cancellation is chosen."""

    NAMES = ("send", "receive", "start_tls")

    def __init__(self) -> None:
        self.kinds: list[str] = []
        #: Writes that had completed when the cancellation was delivered.
        self.completed_sends = 0
        self.cancel_at: int | None = None
        self.mode = "before"
        self.scope: anyio.CancelScope | None = None
        self._task: int | None = None

    @property
    def count(self) -> int:
        return len(self.kinds)

    def arm(self, scope: anyio.CancelScope, cancel_at: int | None, mode: str = "before") -> None:
        """Count from zero the operations of the calling task from now on."""
        self.kinds = []
        self.completed_sends = 0
        self.scope = scope
        self.cancel_at = cancel_at
        self.mode = mode
        self._task = anyio.get_current_task().id

    def disarm(self) -> None:
        self._task = None

    def _wrap(self, name: str, real: _Operation) -> _Operation:
        ops = self

        async def operation(transport: Transport, *args: Any, **kwargs: Any) -> Any:
            if ops._task is None or anyio.get_current_task().id != ops._task:
                return await real(transport, *args, **kwargs)
            index = len(ops.kinds)
            ops.kinds.append(name)
            hit = index == ops.cancel_at and ops.scope is not None
            if hit and ops.mode == "before":
                assert ops.scope is not None
                ops.scope.cancel()
                await anyio.lowlevel.checkpoint()
            result = await real(transport, *args, **kwargs)
            if name == "send":
                ops.completed_sends += 1
            if hit and ops.mode == "after":
                assert ops.scope is not None
                ops.scope.cancel()
                await anyio.lowlevel.checkpoint()
            return result

        return operation

    @contextlib.contextmanager
    def installed(self) -> Iterator[TransportOps]:
        # Both implementations: the asyncio one under asyncio, anyio's under trio.
        classes: tuple[type[Transport], ...] = (AnyioTransport, AsyncioTransport)
        originals = {(cls, name): cls.__dict__[name] for cls in classes for name in self.NAMES}
        try:
            for (cls, name), real in originals.items():
                setattr(cls, name, self._wrap(name, real))
            yield self
        finally:
            for (cls, name), real in originals.items():
                setattr(cls, name, real)
