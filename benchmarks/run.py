"""aiosmtp side by side with aiosmtplib, smtplib and Postfix's smtp-source.

One command runs every row and prints a markdown table with absolute figures and
each client's ratio to aiosmtp; ``--output`` also writes it to a file. Every client
measurement runs in a subprocess of its own (this file, ``worker`` mode), so CPU
time and memory are the client's alone. The servers are started here: Postfix's
``smtp-sink`` (PIPELINING, no CHUNKING), ``benchmarks/sink.py`` (PIPELINING and
CHUNKING), a latency proxy, and aiosmtpd with STARTTLS and AUTH.

    bash benchmarks/setup.sh && .venv/bin/python benchmarks/run.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTS = ("aiosmtp", "aiosmtplib", "smtplib")
SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"
USER, PASSWORD = "bench", "bench-password"


def message(size: int = 2048) -> bytes:
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


# -- clients (run inside a worker process) ------------------------------------------


def throughput_aiosmtp(port: int, messages: int, connections: int) -> None:
    import anyio

    import aiosmtp

    body = message()

    async def main() -> None:
        if connections == 1:
            async with aiosmtp.SMTP("127.0.0.1", port) as smtp:
                await smtp.ehlo()  # also in a session of no messages: see round_trip_rows
                for _ in range(messages):
                    await smtp.sendmail(SENDER, [RECIPIENT], body)
            return
        remaining = messages
        async with aiosmtp.SMTPPool(
            "127.0.0.1",
            port,
            tls="none",
            max_connections=connections,
            max_messages_per_connection=messages,
        ) as pool:

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await pool.sendmail(SENDER, [RECIPIENT], body)

            async with anyio.create_task_group() as tasks:
                for _ in range(connections):
                    tasks.start_soon(worker)

    anyio.run(main)


def throughput_aiosmtplib(port: int, messages: int, connections: int) -> None:
    import asyncio

    import aiosmtplib

    body = message()

    async def one_connection(count: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.ehlo()
        for _ in range(count):
            await client.sendmail(SENDER, [RECIPIENT], body)
        await client.quit()

    async def main() -> None:
        share = [
            messages // connections + (i < messages % connections) for i in range(connections)
        ]
        await asyncio.gather(*(one_connection(count) for count in share))

    asyncio.run(main())


def throughput_smtplib(port: int, messages: int, connections: int) -> None:
    import smtplib

    body = message()

    def one_connection(count: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo()
            for _ in range(count):
                client.sendmail(SENDER, [RECIPIENT], body)

    share = [messages // connections + (i < messages % connections) for i in range(connections)]
    threads = [threading.Thread(target=one_connection, args=(count,)) for count in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def session_aiosmtp(port: int, cafile: str) -> None:
    import anyio

    import aiosmtp

    context = ssl.create_default_context(cafile=cafile)

    async def main() -> None:
        async with aiosmtp.SMTP("127.0.0.1", port, context=context) as smtp:
            await smtp.starttls()
            await smtp.login(USER, PASSWORD)
            await smtp.sendmail(SENDER, [RECIPIENT], message())

    anyio.run(main)


def session_aiosmtplib(port: int, cafile: str) -> None:
    import asyncio

    import aiosmtplib

    context = ssl.create_default_context(cafile=cafile)

    async def main() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, tls_context=context
        )
        await client.connect()
        await client.starttls()
        await client.login(USER, PASSWORD)
        await client.sendmail(SENDER, [RECIPIENT], message())
        await client.quit()

    asyncio.run(main())


def session_smtplib(port: int, cafile: str) -> None:
    import smtplib

    context = ssl.create_default_context(cafile=cafile)
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.starttls(context=context)
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RECIPIENT], message())


def big_message(size: int) -> bytes:
    line = b"y" * 998 + b"\r\n"
    return message(0)[:0] + b"Subject: big\r\n\r\n" + line * (size // len(line))


def memory_aiosmtp(port: int, size: int, source: str, path: str) -> None:
    import anyio

    import aiosmtp

    # Opened before the event loop starts: reading it is the client's job.
    file = Path(path).open("rb")  # noqa: SIM115

    async def main() -> None:
        async with aiosmtp.SMTP("127.0.0.1", port, timeout=600) as smtp:
            await smtp.sendmail(SENDER, [RECIPIENT], file if source == "file" else _BYTES)

    try:
        anyio.run(main)
    finally:
        file.close()


def memory_aiosmtplib(port: int, size: int, source: str, path: str) -> None:
    import asyncio

    import aiosmtplib

    if source == "file":
        raise NotImplementedError("aiosmtplib takes no file object")

    async def main() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=600)
        await client.connect()
        await client.sendmail(SENDER, [RECIPIENT], _BYTES)
        await client.quit()

    asyncio.run(main())


def memory_smtplib(port: int, size: int, source: str, path: str) -> None:
    import smtplib

    if source == "file":
        raise NotImplementedError("smtplib takes no file object")
    with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
        client.sendmail(SENDER, [RECIPIENT], _BYTES)


_BYTES = b""


def worker(kind: str, client: str, args: list[Any]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process and return its figures."""
    global _BYTES
    function: Callable[..., None] = globals()[f"{kind}_{client}"]
    if kind == "memory":
        if args[1] == "bytes":
            _BYTES = big_message(args[0])
        # Imported first, so that module objects do not count as message memory.
        for name in ("anyio", "aiosmtp.client", "asyncio", "aiosmtplib", "smtplib", "email"):
            __import__(name)
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        try:
            function(args[2], args[0], args[1], args[3])
        except NotImplementedError as exc:
            return {"error": str(exc)}
        peak = tracemalloc.get_traced_memory()[1]
        return {"peak_extra": peak - baseline}
    started, cpu_started = time.perf_counter(), time.process_time()
    function(*args)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }


def run_worker(kind: str, client: str, *args: Any) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__)), "worker", kind, client, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# -- servers ----------------------------------------------------------------------------


@contextlib.contextmanager
def process(*command: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        proc.kill()


def smtp_sink_command(port: int) -> list[str] | None:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(sink):
        return None
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [sink, *user, f"127.0.0.1:{port}", "1024"]


@contextlib.contextmanager
def sink_server(kind: str) -> Iterator[int]:
    port = free_port()
    if kind == "smtp-sink":
        command = smtp_sink_command(port)
        if command is None:
            raise RuntimeError("smtp-sink is not installed: run benchmarks/setup.sh")
    else:
        command = [sys.executable, str(HERE / "sink.py"), str(port)]
        if kind == "sink-no-chunking":
            command.append("--no-chunking")
    with process(*command, port=port):
        yield port


@contextlib.contextmanager
def latency_proxy(target: int, delay_ms: float) -> Iterator[tuple[int, Path]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        counter = Path(tmp) / "round_trips"
        command = [
            sys.executable,
            str(HERE / "latency_proxy.py"),
            str(port),
            str(target),
            str(delay_ms),
            str(counter),
        ]
        with process(*command, port=port):
            yield port, counter


@contextlib.contextmanager
def tls_auth_server() -> Iterator[tuple[int, str]]:
    import trustme
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 2.0.0 Ok: queued"

    def authenticate(*args: Any) -> AuthResult:
        data = args[-1]
        ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    with tempfile.TemporaryDirectory() as tmp:
        cafile = Path(tmp) / "ca.pem"
        ca.cert_pem.write_to_path(str(cafile))
        try:
            yield port, str(cafile)
        finally:
            controller.stop()


# -- the rows -----------------------------------------------------------------------------

Row = dict[str, Any]


def throughput_rows(messages: int, connections: int) -> list[Row]:
    rows: list[Row] = []
    with sink_server("smtp-sink") as port:
        figures: dict[str, dict[str, Any]] = {}
        for client in CLIENTS:
            figures[client] = run_worker("throughput", client, port, messages, connections)
        source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        if os.path.exists(source):
            started = time.perf_counter()
            before = os.times()
            subprocess.run(
                [
                    source,
                    "-s",
                    str(connections),
                    "-m",
                    str(messages),
                    "-l",
                    "2048",
                    "-f",
                    SENDER,
                    "-t",
                    RECIPIENT,
                    f"127.0.0.1:{port}",
                ],
                check=True,
                capture_output=True,
            )
            after = os.times()
            figures["smtp-source"] = {
                "seconds": time.perf_counter() - started,
                "cpu_seconds": (after.children_user + after.children_system)
                - (before.children_user + before.children_system),
            }
    rate = {client: messages / f["seconds"] for client, f in figures.items() if "seconds" in f}
    rows.append(
        {
            "row": f"throughput, {messages} x 2 KB, {connections} connection(s), smtp-sink",
            "unit": "msg/s",
            "higher_is_better": True,
            "values": rate,
        }
    )
    if connections == 1:
        cpu = {
            client: f["cpu_seconds"] / messages * 1e6
            for client, f in figures.items()
            if "cpu_seconds" in f
        }
        rows.append(
            {
                "row": "client CPU per message (process time), 1 connection",
                "unit": "us",
                "higher_is_better": False,
                "values": cpu,
            }
        )
    return rows


def round_trip_rows(messages: int) -> list[Row]:
    rows: list[Row] = []
    for server, label in (
        ("smtp-sink", "PIPELINING (smtp-sink)"),
        ("sink", "PIPELINING + CHUNKING (sink.py)"),
    ):
        with sink_server(server) as target, latency_proxy(target, 20) as (port, counter):
            trips: dict[str, float] = {}
            rates: dict[str, float] = {}
            for client in CLIENTS:
                base = int(counter.read_text() or 0)
                empty = run_worker("throughput", client, port, 0, 1)
                overhead = int(counter.read_text()) - base
                base = int(counter.read_text())
                figures = run_worker("throughput", client, port, messages, 1)
                total = int(counter.read_text()) - base
                if "seconds" in figures and "error" not in empty:
                    trips[client] = (total - overhead) / messages
                    rates[client] = messages / figures["seconds"]
        rows.append(
            {
                "row": f"round trips per message, {label}, 20 ms each way",
                "unit": "round trips",
                "higher_is_better": False,
                "values": trips,
            }
        )
        rows.append(
            {
                "row": f"throughput at 20 ms each way, {label}, {messages} messages",
                "unit": "msg/s",
                "higher_is_better": True,
                "values": rates,
            }
        )
    return rows


def session_rows(sessions: int) -> list[Row]:
    medians: dict[str, float] = {}
    p90s: dict[str, float] = {}
    with tls_auth_server() as (port, cafile):
        for client in CLIENTS:
            times = []
            for _ in range(sessions):
                figures = run_session(client, port, cafile)
                if figures is None:
                    break
                times.append(figures)
            if times:
                times.sort()
                medians[client] = statistics.median(times) * 1000
                p90s[client] = times[int(len(times) * 0.9) - 1 if len(times) > 1 else 0] * 1000
    return [
        {
            "row": "full session (connect, STARTTLS, AUTH, 1 message, QUIT), median",
            "unit": "ms",
            "higher_is_better": False,
            "values": medians,
        },
        {
            "row": "full session, p90",
            "unit": "ms",
            "higher_is_better": False,
            "values": p90s,
        },
    ]


def run_session(client: str, port: int, cafile: str) -> float | None:
    # One process runs several sessions and times each, so interpreter start-up is
    # not part of the figure.
    figures = run_worker("sessions", client, port, cafile, 1)
    if "times" not in figures:
        return None
    return float(figures["times"][0])


def sessions_worker(client: str, port: int, cafile: str, count: int) -> dict[str, Any]:
    function: Callable[..., None] = globals()[f"session_{client}"]
    function(port, cafile)  # warm up: imports and the first handshake
    times = []
    for _ in range(count):
        started = time.perf_counter()
        function(port, cafile)
        times.append(time.perf_counter() - started)
    return {"times": times}


def memory_rows(size: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, sink_server("smtp-sink") as port:
        path = Path(tmp) / "big.eml"
        path.write_bytes(big_message(size))
        for source in ("bytes", "file"):
            values: dict[str, float] = {}
            notes: dict[str, str] = {}
            for client in CLIENTS:
                figures = run_worker("memory", client, size, source, port, str(path))
                if "peak_extra" in figures:
                    values[client] = figures["peak_extra"] / 2**20
                else:
                    notes[client] = "n/a"
            rows.append(
                {
                    "row": f"peak extra memory, {size // 2**20} MB message from {source}",
                    "unit": "MiB",
                    "higher_is_better": False,
                    "values": values,
                    "notes": notes,
                }
            )
    return rows


# -- report -------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    columns = ["aiosmtp", "aiosmtplib", "smtplib", "smtp-source"]
    lines = [
        "| measure | unit | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        values: dict[str, float] = row["values"]
        ours = values.get("aiosmtp")
        cells = []
        for column in columns:
            if column not in values:
                cells.append(row.get("notes", {}).get(column, "-"))
                continue
            value = values[column]
            text = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
            if column != "aiosmtp" and ours:
                # The ratio says how aiosmtp compares: >1 means aiosmtp is better.
                ratio = (ours / value) if row["higher_is_better"] else (value / ours)
                text += f" (aiosmtp {ratio:.2f}x)" if value else ""
            cells.append(text)
        lines.append(f"| {row['row']} | {row['unit']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in ("aiosmtp", "anyio", "aiosmtplib", "aiosmtpd"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    return (
        f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()} "
        f"({platform.system()} {platform.release()}); " + ", ".join(versions)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--only",
        default="throughput,round-trips,session,memory",
        help="comma-separated rows to run (default: all)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    messages = 1000 if args.quick else 10_000
    rows: list[Row] = []
    if "throughput" in only:
        rows += throughput_rows(messages, 1)
        rows += throughput_rows(messages, 16)
    if "round-trips" in only:
        rows += round_trip_rows(20 if args.quick else 200)
    if "session" in only:
        rows += session_rows(5 if args.quick else 30)
    if "memory" in only:
        rows += memory_rows((5 if args.quick else 50) * 2**20)
    report = (
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {machine()}.\n\n"
        + format_table(rows)
        + "\n"
    )
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        kind, client, arguments = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        if kind == "sessions":
            result = sessions_worker(client, *arguments)
        else:
            result = worker(kind, client, arguments)
        print(json.dumps(result))
        sys.exit(0)
    sys.exit(main())
