"""One client measurement, run in a fresh process by ``benchmarks/run.py``.

Each call measures one client doing one thing, so that CPU time (``getrusage``,
user + system, all threads) and peak memory belong to that client alone. The
argument is one JSON object; the result is one JSON object on the last line of
standard output::

    python benchmarks/clients.py '{"task": "throughput", "client": "aiosmtp", ...}'

Tasks:

``throughput``  ``port``, ``message_file``, ``messages``, ``connections``: connect,
    EHLO, send ``messages`` copies of the message over ``connections`` connections,
    QUIT. Returns ``seconds`` (wall), ``cpu_seconds`` and ``sent``. With
    ``messages`` 0 this is the session overhead the round-trip rows subtract.
``session``  ``port``, ``cafile``, ``message_file``, ``sessions``, ``warmup``: full
    sessions (connect, STARTTLS, AUTH, one message, QUIT) one after the other, each
    timed. Returns ``times`` (seconds).
``memory``  ``port``, ``message_file``, ``source`` (``bytes`` or ``file``): send
    one small message (so that every module is loaded), then the big one, from a
    ``bytes`` object already in memory or from an open binary file. Returns
    ``peak_extra`` (bytes): the larger of the peak resident set size while
    sending minus the resident size just before (``rss_extra``), and the peak of
    memory allocated by Python meanwhile (``traced_peak``, tracemalloc).
    ``unsupported`` instead when the client refuses the source.

Clients: ``aiosmtp`` (asyncio backend), ``aiosmtplib``, ``smtplib`` (in threads).
"""

from __future__ import annotations

import gc
import importlib
import json
import resource
import ssl
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
SENDER = "sender@example.com"
RECIPIENT = "recipient@example.com"
USER = "bench"
PASSWORD = "bench-password"
# Given to every client, so that no run pays for socket.getfqdn().
LOCAL_HOSTNAME = "client.bench.example"
# aiosmtp: at least this many tasks share the pool.
TASKS_PER_CLIENT = 16
# Long enough for a 50 MB message on a busy machine.
TIMEOUT = 300.0

Result = dict[str, Any]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- memory ------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def resident_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is None:  # not Linux: the best we have is the peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kib * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kib * 1024


# -- aiosmtp -----------------------------------------------------------------------------


async def _share_out(total: int, workers: list[Callable[[], Awaitable[object]]]) -> int:
    """Run the workers concurrently; each sends until ``total`` messages are sent."""
    import anyio

    remaining = total
    sent = 0

    async def work(send: Callable[[], Awaitable[object]]) -> None:
        nonlocal remaining, sent
        while remaining > 0:
            remaining -= 1
            await send()
            sent += 1

    async with anyio.create_task_group() as tasks:
        for send in workers:
            tasks.start_soon(work, send)
    return sent


async def aiosmtp_throughput(port: int, body: bytes, messages: int, connections: int) -> Result:
    """``aiosmtp.SMTPPool`` with ``connections`` connections and 16 tasks per
    connection sharing it: the pool overlaps one message's reply with the next
    message's commands on each connection."""
    import aiosmtp

    started, cpu_started = time.perf_counter(), cpu_seconds()
    if messages == 0:
        # The session alone (EHLO, QUIT), which a pool that sends nothing never opens.
        async with aiosmtp.SMTP(
            HOST, port, local_hostname=LOCAL_HOSTNAME, timeout=TIMEOUT
        ) as smtp:
            await smtp.ehlo_or_helo_if_needed()
        return {
            "seconds": time.perf_counter() - started,
            "cpu_seconds": cpu_seconds() - cpu_started,
            "sent": 0,
            "how": "one SMTP session",
        }
    async with aiosmtp.SMTPPool(
        HOST,
        port,
        max_connections=connections,
        max_messages_per_connection=max(messages, 1),
        idle_timeout=None,
        tls="none",
        local_hostname=LOCAL_HOSTNAME,
        timeout=TIMEOUT,
    ) as pool:

        async def pooled() -> object:
            return await pool.sendmail(SENDER, [RECIPIENT], body)

        tasks = max(connections, TASKS_PER_CLIENT)
        sent = await _share_out(messages, [pooled] * tasks)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "sent": sent,
        "how": f"SMTPPool, {connections} connection(s), {tasks} tasks",
    }


async def aiosmtp_session(port: int, context: ssl.SSLContext, body: bytes) -> None:
    import aiosmtp

    async with aiosmtp.SMTP(
        HOST, port, local_hostname=LOCAL_HOSTNAME, timeout=TIMEOUT, context=context
    ) as smtp:
        await smtp.starttls()
        await smtp.login(USER, PASSWORD)
        await smtp.sendmail(SENDER, [RECIPIENT], body)


async def aiosmtp_send_one(port: int, payload: bytes | IO[bytes]) -> None:
    # No QUIT after a failure: the server may still wait for the data.
    import aiosmtp

    smtp = aiosmtp.SMTP(HOST, port, local_hostname=LOCAL_HOSTNAME, timeout=TIMEOUT)
    try:
        await smtp.connect(HOST, port)
        await smtp.sendmail(SENDER, [RECIPIENT], payload)
        await smtp.quit()
    finally:
        await smtp.close()


# -- aiosmtplib --------------------------------------------------------------------------


def _aiosmtplib_client(port: int, context: ssl.SSLContext | None = None) -> Any:
    import aiosmtplib

    return aiosmtplib.SMTP(
        hostname=HOST,
        port=port,
        local_hostname=LOCAL_HOSTNAME,
        timeout=TIMEOUT,
        start_tls=False,
        tls_context=context,
    )


async def aiosmtplib_throughput(port: int, body: bytes, messages: int, connections: int) -> Result:
    import asyncio

    started, cpu_started = time.perf_counter(), cpu_seconds()
    remaining = messages

    async def one_connection() -> int:
        nonlocal remaining
        client = _aiosmtplib_client(port)
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        sent = 0
        while remaining > 0:
            remaining -= 1
            await client.sendmail(SENDER, [RECIPIENT], body)
            sent += 1
        await client.quit()
        return sent

    counts = await asyncio.gather(*(one_connection() for _ in range(connections)))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "sent": sum(counts),
        "how": f"{connections} SMTP object(s)",
    }


async def aiosmtplib_session(port: int, context: ssl.SSLContext, body: bytes) -> None:
    client = _aiosmtplib_client(port, context)
    await client.connect()
    await client.starttls()
    await client.login(USER, PASSWORD)
    await client.sendmail(SENDER, [RECIPIENT], body)
    await client.quit()


async def aiosmtplib_send_one(port: int, payload: bytes | IO[bytes]) -> None:
    client = _aiosmtplib_client(port)
    await client.connect()
    try:
        await client.sendmail(SENDER, [RECIPIENT], payload)
        await client.quit()
    finally:
        client.close()


# -- smtplib -----------------------------------------------------------------------------


def smtplib_throughput(port: int, body: bytes, messages: int, connections: int) -> Result:
    import smtplib

    lock = threading.Lock()
    remaining = messages
    counts: list[int] = []
    failures: list[BaseException] = []

    def take() -> bool:
        nonlocal remaining
        with lock:
            if remaining <= 0:
                return False
            remaining -= 1
            return True

    def one_connection() -> None:
        sent = 0
        try:
            with smtplib.SMTP(HOST, port, LOCAL_HOSTNAME, TIMEOUT) as client:
                client.ehlo_or_helo_if_needed()
                while take():
                    client.sendmail(SENDER, [RECIPIENT], body)
                    sent += 1
        except BaseException as exc:
            failures.append(exc)
        with lock:
            counts.append(sent)

    started, cpu_started = time.perf_counter(), cpu_seconds()
    threads = [threading.Thread(target=one_connection) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    if failures:
        raise failures[0]
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "sent": sum(counts),
        "how": f"{connections} thread(s)",
    }


def smtplib_session(port: int, context: ssl.SSLContext, body: bytes) -> None:
    import smtplib

    with smtplib.SMTP(HOST, port, LOCAL_HOSTNAME, TIMEOUT) as client:
        client.starttls(context=context)
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RECIPIENT], body)


def smtplib_send_one(port: int, payload: bytes | IO[bytes]) -> None:
    import smtplib

    client = smtplib.SMTP(HOST, port, LOCAL_HOSTNAME, TIMEOUT)
    try:
        client.sendmail(SENDER, [RECIPIENT], payload)  # type: ignore[arg-type]
        client.quit()
    finally:
        client.close()


# -- tasks -------------------------------------------------------------------------------

ASYNC_CLIENTS = ("aiosmtp", "aiosmtplib")
CLIENTS = (*ASYNC_CLIENTS, "smtplib")


# Imported before anything is measured: an import is not the client's work.
_MODULES = {
    "aiosmtp": ("anyio", "aiosmtp", "aiosmtp.client", "aiosmtp.pool"),
    "aiosmtplib": ("asyncio", "aiosmtplib"),
    "smtplib": ("smtplib",),
}


def _function(client: str, action: str) -> Callable[..., Any]:
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}")
    for module in _MODULES[client]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            if "." not in module:  # a submodule may come and go; a client may not
                raise
    function: Callable[..., Any] = globals()[f"{client}_{action}"]
    return function


def _run_async(client: str, main: Callable[[], Awaitable[Result]]) -> Result:
    if client == "aiosmtp":
        import anyio

        return anyio.run(main)
    import asyncio

    async def wrapped() -> Result:
        return await main()

    return asyncio.run(wrapped())


def run_in_thread(function: Callable[[], Result]) -> Result:
    """Run blocking client code in a thread of its own, as an application would."""
    results: list[Result] = []
    failures: list[BaseException] = []

    def target() -> None:
        try:
            results.append(function())
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
    return results[0]


def throughput(
    client: str, port: int, message_file: str, messages: int, connections: int
) -> Result:
    body = Path(message_file).read_bytes()
    function = _function(client, "throughput")
    if client in ASYNC_CLIENTS:

        async def main() -> Result:
            result: Result = await function(port, body, messages, connections)
            return result

        return _run_async(client, main)
    result: Result = function(port, body, messages, connections)
    return result


def session(
    client: str, port: int, cafile: str, message_file: str, sessions: int, warmup: int
) -> Result:
    body = Path(message_file).read_bytes()
    context = ssl.create_default_context(cafile=cafile)
    function = _function(client, "session")
    times: list[float] = []
    if client in ASYNC_CLIENTS:

        async def main() -> Result:
            for number in range(warmup + sessions):
                started = time.perf_counter()
                await function(port, context, body)
                if number >= warmup:
                    times.append(time.perf_counter() - started)
            return {"times": times}

        return _run_async(client, main)

    def blocking() -> Result:
        for number in range(warmup + sessions):
            started = time.perf_counter()
            function(port, context, body)
            if number >= warmup:
                times.append(time.perf_counter() - started)
        return {"times": times}

    return run_in_thread(blocking)


def memory(client: str, port: int, message_file: str, source: str) -> Result:
    if source not in ("bytes", "file"):
        raise ValueError(f"source must be bytes or file, not {source!r}")
    send = _function(client, "send_one")
    small = b"Subject: warm-up\r\n\r\nwarm-up\r\n"
    path = Path(message_file)
    size = path.stat().st_size
    payload: bytes | IO[bytes] = path.read_bytes() if source == "bytes" else path.open("rb")
    outcome: Result = {"size": size}

    def measure_before() -> None:
        gc.collect()
        outcome["baseline"] = resident_bytes()
        outcome["peak_reset"] = reset_peak()
        tracemalloc.start()

    def measure_after() -> None:
        outcome["rss_extra"] = peak_bytes() - outcome["baseline"]
        outcome["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # RSS sees every allocation but not a copy made into memory the allocator
        # had freed earlier; tracemalloc sees every Python allocation, reused or
        # not, but nothing C allocates on its own. The larger of the two is kept.
        outcome["peak_extra"] = max(outcome["rss_extra"], outcome["traced_peak"])

    def refused(exc: Exception) -> None:
        outcome["unsupported"] = f"{type(exc).__name__}: {exc}"[:200]

    if client in ASYNC_CLIENTS:

        async def main() -> Result:
            await send(port, small)
            measure_before()
            try:
                await send(port, payload)
            except (TypeError, AttributeError, ValueError) as exc:
                refused(exc)
            else:
                measure_after()
            return outcome

        return _run_async(client, main)
    send(port, small)
    measure_before()
    try:
        send(port, payload)
    except (TypeError, AttributeError, ValueError) as exc:
        refused(exc)
    else:
        measure_after()
    return outcome


def run_task(spec: Result) -> Result:
    task = spec.pop("task")
    if task == "throughput":
        return throughput(**spec)
    if task == "session":
        return session(**spec)
    if task == "memory":
        return memory(**spec)
    raise ValueError(f"unknown task {task!r}")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(f"usage: {sys.argv[0]} JSON")
    result = run_task(json.loads(argv[0]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
