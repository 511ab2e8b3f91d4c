"""aiosmtp side by side with aiosmtplib, smtplib (in threads) and smtp-source (C).

One command runs every row against servers it starts itself and prints one markdown
table with absolute figures and each client's ratio to aiosmtp::

    python benchmarks/run.py [--quick] [--only ROWS] [--output benchmarks/RESULTS.md]

Theory of operation: this process only starts servers, hands out work and formats
the results. Every client measurement runs in a fresh process
(``benchmarks/clients.py``), so its CPU time and peak memory are its own; every
server runs in a process of its own too:

- Postfix's ``smtp-sink``: PIPELINING, no CHUNKING, no TLS; the throughput,
  CPU and memory rows. ``smtp-source`` (C, no pipelining) is the native baseline.
- a private Postfix ``smtpd`` (``postfix -c TMPDIR start``, its own main.cf and
  master.cf, queue under a temporary directory, everything discarded): PIPELINING
  and CHUNKING, for the BDAT rows.
- ``benchmarks/latency_proxy.py``: 20 ms each way, counts round trips.
- ``benchmarks/tls_server.py``: aiosmtpd with STARTTLS and AUTH, for session latency.

``benchmarks/setup.sh`` installs Postfix and the Python clients.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLIENTS_PY = HERE / "clients.py"
PROXY_PY = HERE / "latency_proxy.py"
TLS_SERVER_PY = HERE / "tls_server.py"

CLIENTS = ("aiosmtp", "aiosmtplib", "smtplib")
COLUMNS = (*CLIENTS, "smtp-source")
ROW_GROUPS = ("throughput", "roundtrips", "session", "memory")
# The envelope is the one benchmarks/clients.py uses.
SENDER = "sender@example.com"
RECIPIENT = "recipient@example.com"
LOCAL_HOSTNAME = "client.bench.example"
MESSAGE_SIZE = 2048
MiB = 1 << 20
# "Flat" memory for a streamed file: a few read chunks, whatever the message size.
FLAT_MIB = 5

Result = dict[str, Any]


class Unavailable(Exception):
    """A server or tool a row needs is not there; the row says why."""


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    messages: int = 10_000
    connections: tuple[int, ...] = (1, 16)
    postfix_messages: int = 2_000
    latency_messages: int = 200
    delay_ms: float = 20.0
    sessions: int = 50
    warmup: int = 3
    big_size: int = 50 * MiB
    rows: tuple[str, ...] = ROW_GROUPS
    output: Path | None = None
    json_output: Path | None = None


QUICK = {
    "messages": 500,
    "postfix_messages": 100,
    "latency_messages": 10,
    "sessions": 5,
    "warmup": 1,
    "big_size": 5 * MiB,
}


def row_groups(text: str) -> tuple[str, ...]:
    """``--only``: comma-separated row groups, in the order they run."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one row group")
    unknown = [name for name in names if name not in ROW_GROUPS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown row group {', '.join(unknown)} (choose from {', '.join(ROW_GROUPS)})"
        )
    return tuple(name for name in ROW_GROUPS if name in names)


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description="aiosmtp vs aiosmtplib vs smtplib vs smtp-source, in one table."
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts: a smoke run of a minute or two"
    )
    parser.add_argument(
        "--only",
        type=row_groups,
        default=ROW_GROUPS,
        metavar="ROWS",
        help=f"comma-separated row groups to run: {','.join(ROW_GROUPS)} (default: all)",
    )
    parser.add_argument("--output", type=Path, help="also write the report here (markdown)")
    parser.add_argument("--json", type=Path, dest="json_output", help="write raw figures here")
    parser.add_argument("--messages", type=int, help="messages per throughput run")
    parser.add_argument("--delay-ms", type=float, help="latency added each way by the proxy")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    values.update(rows=args.only, output=args.output, json_output=args.json_output)
    if args.messages is not None:
        values["messages"] = args.messages
    if args.delay_ms is not None:
        values["delay_ms"] = args.delay_ms
    return Settings(**values)


# -- the table -----------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    unit: str
    higher_is_better: bool
    values: dict[str, float] = field(default_factory=dict)
    #: Why a cell is empty ("n/a", "error"): shown in the cell and under the table.
    notes: dict[str, str] = field(default_factory=dict)
    decimals: int = 0


def format_number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}".replace(",", "\u202f")  # narrow no-break space


def format_cell(row: Row, column: str) -> str:
    if column not in row.values:
        note = row.notes.get(column)
        return "n/a" if note is None or note.startswith("n/a") else "error"
    value = row.values[column]
    text = format_number(value, row.decimals)
    ours = row.values.get("aiosmtp")
    if column != "aiosmtp" and ours:
        text += f" ({value / ours:.2f}x)"
    return text


def format_table(rows: Sequence[Row]) -> str:
    """Markdown: one line per row, one column per client, ratios to aiosmtp."""
    header = ["measure", "unit", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for row in rows:
        better = "higher" if row.higher_is_better else "lower"
        cells = [row.label, f"{row.unit} ({better} is better)"]
        cells += [format_cell(row, column) for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(rows: Sequence[Row]) -> list[str]:
    """One line per reason and set of columns, naming the rows it explains."""
    columns_by_row: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for column, note in row.notes.items():
            columns_by_row.setdefault((note, row.label), []).append(column)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (note, label), columns in columns_by_row.items():
        grouped.setdefault((note, tuple(columns)), []).append(label)
    lines = []
    for (note, cols), labels in grouped.items():
        who = "every column" if set(cols) == set(COLUMNS) else ", ".join(cols)
        lines.append(f"- {who}: {note} ({'; '.join(labels)})")
    return lines


# -- running things ------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"the server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise Unavailable(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def run_client(spec: Result, timeout: float = 1800) -> Result:
    """Run one measurement in a fresh process; ``{"error": ...}`` if it failed."""
    command = [sys.executable, str(CLIENTS_PY), json.dumps(spec)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        log(f"    {spec['client']} failed:\n{done.stderr.strip()}")
        return {"error": tail[0][:300]}
    result: Result = json.loads(lines[-1])
    return result


class LineServer:
    """A helper process that prints JSON lines (the first one says where it
    listens) and stops when its standard input is closed."""

    def __init__(self, *command: str) -> None:
        self.command = command
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> LineServer:
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()
        try:
            self.port = int(self.next_line(timeout=30)["listening"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def _pump(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)

    def next_line(self, timeout: float = 30) -> Result:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise Unavailable(f"{Path(self.command[1]).name} said nothing") from None
        result: Result = json.loads(line)
        return result

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def latency_proxy(target_port: int, delay_ms: float) -> LineServer:
    """``with latency_proxy(port, 20) as proxy``: ``proxy.port`` to connect to,
    ``proxy.next_line()`` for the round trips of each session, in order."""
    return LineServer(sys.executable, str(PROXY_PY), str(target_port), "--delay-ms", str(delay_ms))


def tls_server(cafile: Path) -> LineServer:
    return LineServer(sys.executable, str(TLS_SERVER_PY), str(cafile))


def find_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise Unavailable(f"{name} is not installed (run benchmarks/setup.sh)")
    return path


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink on a free loopback port: PIPELINING, no CHUNKING."""
    command = [find_tool("smtp-sink")]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # it refuses to run as root otherwise
    port = free_port()
    command += [f"127.0.0.1:{port}", "1024"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_for_port(port, proc=proc)
        except Unavailable as exc:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise Unavailable(f"smtp-sink did not start: {stderr.strip() or exc}") from None
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def postfix_config(base: Path, port: int, defaults: dict[str, str]) -> tuple[str, str]:
    """main.cf and master.cf of a private instance: smtpd on 127.0.0.1:``port``,
    everything relayed from loopback and discarded, the queue under ``base``."""
    main_cf = f"""\
# A private Postfix for the aiosmtp benchmarks; everything it accepts is discarded.
compatibility_level = 3.6
config_directory = {base}/conf
queue_directory = {base}/queue
data_directory = {base}/data
command_directory = {defaults["command_directory"]}
daemon_directory = {defaults["daemon_directory"]}
shlib_directory = {defaults["shlib_directory"]}
meta_directory = {defaults["meta_directory"]}
mail_owner = {defaults["mail_owner"]}
setgid_group = {defaults["setgid_group"]}
maillog_file_prefixes = {base}
maillog_file = {base}/maillog
myhostname = postfix.bench.example
mydomain = bench.example
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
default_transport = discard
local_transport = discard
relay_transport = discard
virtual_transport = discard
# No artificial pauses, no size limit, no DNS.
in_flow_delay = 0
message_size_limit = 0
smtpd_peername_lookup = no
disable_dns_lookups = yes
biff = no
"""
    rows = [
        (f"127.0.0.1:{port}", "inet", "n", "-", "n", "-", "-", "smtpd"),
        ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
        ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
        ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
        ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
        ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
        ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
        ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
        ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
        ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
        ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
        ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
        ("error", "unix", "-", "-", "n", "-", "-", "error"),
        ("retry", "unix", "-", "-", "n", "-", "-", "error"),
        ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
    ]
    master_cf = "".join(" ".join(f"{cell:<10}" for cell in row).rstrip() + "\n" for row in rows)
    return main_cf, master_cf


@contextlib.contextmanager
def postfix_smtpd() -> Iterator[int]:
    """A private Postfix instance whose smtpd offers PIPELINING and CHUNKING."""
    postfix = find_tool("postfix")
    postconf = find_tool("postconf")
    if os.geteuid() != 0:
        raise Unavailable("a private Postfix instance needs root (its master runs as root)")
    names = [
        "command_directory",
        "daemon_directory",
        "shlib_directory",
        "meta_directory",
        "mail_owner",
        "setgid_group",
    ]
    out = subprocess.run(
        [postconf, "-d", *names], capture_output=True, text=True, check=True
    ).stdout
    defaults = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    shm = Path("/dev/shm")
    base = Path(
        tempfile.mkdtemp(
            prefix="aiosmtp-bench-postfix-",
            dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None,
        )
    )
    base.chmod(0o755)  # the postfix user walks down to its queue
    port = free_port()
    main_cf, master_cf = postfix_config(base, port, defaults)
    for name in ("conf", "queue", "data"):
        (base / name).mkdir()
    shutil.chown(base / "data", user=defaults["mail_owner"])
    (base / "conf" / "main.cf").write_text(main_cf)
    (base / "conf" / "master.cf").write_text(master_cf)
    conf = str(base / "conf")
    started = False
    try:
        done = subprocess.run(
            [postfix, "-c", conf, "start"], capture_output=True, text=True, check=False
        )
        started = True
        try:
            if done.returncode != 0:
                raise Unavailable(f"postfix start failed (status {done.returncode})")
            wait_for_port(port)
        except Unavailable as exc:
            log_file = base / "maillog"
            tail = log_file.read_text().strip().splitlines()[-3:] if log_file.exists() else []
            raise Unavailable(f"{exc}: {' / '.join(tail) or done.stderr.strip()}") from None
        yield port
    finally:
        if started:
            subprocess.run(
                [postfix, "-c", conf, "stop"], capture_output=True, check=False, timeout=60
            )
            _wait_for_master_exit(base / "queue" / "pid" / "master.pid")
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_master_exit(pid_file: Path, timeout: float = 15) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def run_smtp_source(port: int, message_file: Path, messages: int, sessions: int) -> Result:
    """smtp-source over ``sessions`` connections, each reused (-d); CPU from wait4."""
    try:
        tool = find_tool("smtp-source")
    except Unavailable as exc:
        return {"unsupported": str(exc)}
    command = [
        tool,
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-F",
        str(message_file),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-M",
        LOCAL_HOSTNAME,
        f"127.0.0.1:{port}",
    ]
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        log(f"    smtp-source failed: {stderr}")
        return {"error": (stderr.splitlines() or [f"status {proc.returncode}"])[-1][:300]}
    return {
        "seconds": elapsed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "sent": messages,
        "how": f"-d -s {sessions}",
    }


# -- messages ------------------------------------------------------------------------------


def make_message(size: int, line_ending: bytes = b"\r\n") -> bytes:
    """A plain-text message of exactly ``size`` bytes (with CRLF line endings; with
    LF ones the same lines, for smtp-source -F, which adds the CR itself)."""
    head = [
        f"From: Benchmark <{SENDER}>",
        f"To: <{RECIPIENT}>",
        "Subject: aiosmtp benchmark",
        "Date: Thu, 01 Jan 2026 00:00:00 +0000",
        "Message-ID: <benchmark@client.bench.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ]
    text = "".join(line + "\r\n" for line in head).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n"
    lines, rest = divmod(size - len(text), len(line))
    body = line * lines
    if rest >= 3:
        body += b"z" * (rest - 2) + b"\r\n"
    message = text + body
    if line_ending != b"\r\n":
        message = message.replace(b"\r\n", line_ending)
    return message


@dataclass
class Workspace:
    """The message files every measurement reads."""

    small: Path
    small_lf: Path
    big: Path | None


@contextlib.contextmanager
def workspace(settings: Settings) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix="aiosmtp-bench-") as tmp:
        root = Path(tmp)
        small, small_lf = root / "message.eml", root / "message-lf.eml"
        small.write_bytes(make_message(MESSAGE_SIZE))
        small_lf.write_bytes(make_message(MESSAGE_SIZE, b"\n"))
        big = None
        if "memory" in settings.rows:
            big = root / "big.eml"
            with big.open("wb") as file:
                file.write(make_message(settings.big_size))
        yield Workspace(small, small_lf, big)


# -- the rows ------------------------------------------------------------------------------


def unavailable_row(row: Row, reason: str, columns: Sequence[str] = COLUMNS) -> Row:
    for column in columns:
        row.notes[column] = f"n/a: {reason}"
    return row


def record(row: Row, column: str, result: Result, value: float | None) -> None:
    if "error" in result:
        row.notes[column] = f"error: {result['error']}"
    elif "unsupported" in result:
        row.notes[column] = f"n/a: {result['unsupported']}"
    elif value is not None:
        row.values[column] = value


def throughput_rows(settings: Settings, files: Workspace, raw: Result) -> list[Row]:
    rows: list[Row] = []
    for connections in settings.connections:
        rate = Row(
            f"throughput, {settings.messages} x 2 KB, {connections} connection(s), smtp-sink",
            "msg/s",
            higher_is_better=True,
        )
        cpu = Row(
            f"client CPU per message, {connections} connection(s), smtp-sink",
            "µs",
            higher_is_better=False,
        )
        try:
            with smtp_sink() as port:
                figures = measure_throughput(port, settings.messages, connections, files)
        except Unavailable as exc:
            rows += [unavailable_row(rate, str(exc)), unavailable_row(cpu, str(exc))]
            continue
        raw.setdefault("throughput", {})[f"smtp-sink, {connections}"] = figures
        fill_throughput(rate, cpu, settings.messages, figures)
        how = figures["aiosmtp"].get("how")
        if how:
            rate.label += f" (aiosmtp: {how})"
        rows += [rate, cpu]
    rows += postfix_throughput_rows(settings, files, raw)
    return rows


def measure_throughput(
    port: int, messages: int, connections: int, files: Workspace
) -> dict[str, Result]:
    """Every client, then smtp-source, against the server on ``port``."""
    figures: dict[str, Result] = {}
    for column in COLUMNS:
        log(f"throughput: {column}, {connections} connection(s), port {port}")
        if column == "smtp-source":
            figures[column] = run_smtp_source(port, files.small_lf, messages, connections)
            continue
        figures[column] = run_client(
            {
                "task": "throughput",
                "client": column,
                "port": port,
                "message_file": str(files.small),
                "messages": messages,
                "connections": connections,
            }
        )
    return figures


def fill_throughput(rate: Row, cpu: Row, messages: int, figures: dict[str, Result]) -> None:
    for column, figure in figures.items():
        result = figure
        if "seconds" in figure and figure.get("sent") != messages:
            result = {"error": f"sent {figure.get('sent')} of {messages} messages"}
        record(rate, column, result, _rate(messages, result))
        record(cpu, column, result, _cpu_us(messages, result))


def _rate(messages: int, result: Result) -> float | None:
    seconds = result.get("seconds")
    return messages / seconds if seconds else None


def _cpu_us(messages: int, result: Result) -> float | None:
    cpu = result.get("cpu_seconds")
    return cpu / messages * 1e6 if cpu is not None and messages else None


def postfix_throughput_rows(settings: Settings, files: Workspace, raw: Result) -> list[Row]:
    """One connection to Postfix smtpd: the BDAT path's speed and CPU cost."""
    messages = settings.postfix_messages
    label = "1 connection, Postfix smtpd (PIPELINING + CHUNKING)"
    rate = Row(f"throughput, {messages} x 2 KB, {label}", "msg/s", higher_is_better=True)
    cpu = Row(f"client CPU per message, {label}", "µs", higher_is_better=False)
    try:
        with postfix_smtpd() as port:
            figures = measure_throughput(port, messages, 1, files)
    except Unavailable as exc:
        return [unavailable_row(rate, str(exc)), unavailable_row(cpu, str(exc))]
    raw.setdefault("throughput", {})["postfix, 1"] = figures
    fill_throughput(rate, cpu, messages, figures)
    return [rate, cpu]


def roundtrip_rows(settings: Settings, files: Workspace, raw: Result) -> list[Row]:
    rows: list[Row] = []
    servers = (
        ("smtp-sink (PIPELINING)", smtp_sink),
        ("Postfix smtpd (PIPELINING + CHUNKING)", postfix_smtpd),
    )
    messages = settings.latency_messages
    delay = settings.delay_ms
    for name, server in servers:
        trips = Row(
            f"round trips per message, {name}",
            "round trips",
            higher_is_better=False,
            decimals=2,
        )
        rate = Row(
            f"throughput at {delay:g} ms each way, {messages} messages, {name}",
            "msg/s",
            higher_is_better=True,
            decimals=1,
        )
        try:
            with server() as target, latency_proxy(target, delay) as proxy:
                for client in CLIENTS:
                    log(f"round trips: {client}, {name}")
                    figures = [
                        _through_proxy(proxy, client, count, files) for count in (0, messages)
                    ]
                    raw.setdefault("roundtrips", {}).setdefault(name, {})[client] = figures
                    (empty, empty_trips), (full, full_trips) = figures
                    failed = empty if "error" in empty else full
                    if "error" in failed:
                        record(trips, client, failed, None)
                        record(rate, client, failed, None)
                        continue
                    trips.values[client] = (full_trips - empty_trips) / messages
                    rate.values[client] = messages / (full["seconds"] - empty["seconds"])
        except Unavailable as exc:
            unavailable_row(trips, str(exc), CLIENTS)
            unavailable_row(rate, str(exc), CLIENTS)
        for row in (trips, rate):
            row.notes["smtp-source"] = "n/a: not measured through the proxy"
        rows += [trips, rate]
    return rows


def _through_proxy(
    proxy: LineServer, client: str, messages: int, files: Workspace
) -> tuple[Result, int]:
    """One session through the proxy; the result and the round trips it took."""
    result = run_client(
        {
            "task": "throughput",
            "client": client,
            "port": proxy.port,
            "message_file": str(files.small),
            "messages": messages,
            "connections": 1,
        }
    )
    try:
        session = proxy.next_line(timeout=30)
    except Unavailable as exc:
        return {"error": str(exc)}, 0
    return result, int(session["round_trips"])


def session_rows(settings: Settings, files: Workspace, raw: Result) -> list[Row]:
    what = "full session (connect, STARTTLS, AUTH, 1 message, QUIT), aiosmtpd"
    median = Row(f"{what}, median", "ms", higher_is_better=False, decimals=2)
    p90 = Row(f"{what}, p90", "ms", higher_is_better=False, decimals=2)
    for row in (median, p90):
        row.notes["smtp-source"] = "n/a: speaks neither STARTTLS nor AUTH"
    with tempfile.TemporaryDirectory(prefix="aiosmtp-bench-tls-") as tmp:
        cafile = Path(tmp) / "ca.pem"
        try:
            with tls_server(cafile) as server:
                for client in CLIENTS:
                    log(f"session: {client}")
                    result = run_client(
                        {
                            "task": "session",
                            "client": client,
                            "port": server.port,
                            "cafile": str(cafile),
                            "message_file": str(files.small),
                            "sessions": settings.sessions,
                            "warmup": settings.warmup,
                        }
                    )
                    raw.setdefault("session", {})[client] = result
                    times = [t * 1000 for t in result.get("times", [])]
                    record(median, client, result, statistics.median(times) if times else None)
                    record(p90, client, result, percentile(times, 90) if times else None)
        except Unavailable as exc:
            unavailable_row(median, str(exc), CLIENTS)
            unavailable_row(p90, str(exc), CLIENTS)
    return [median, p90]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with ``pct`` % at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def memory_rows(settings: Settings, files: Workspace, raw: Result) -> list[Row]:
    assert files.big is not None
    size_mib = settings.big_size / MiB
    servers = (("smtp-sink, DATA", smtp_sink), ("Postfix smtpd, aiosmtp with BDAT", postfix_smtpd))
    rows: list[Row] = []
    for name, server in servers:
        by_source = {
            source: Row(
                f"peak extra memory, {size_mib:g} MiB message from {source}, {name}",
                "MiB",
                higher_is_better=False,
                decimals=1,
            )
            for source in ("bytes", "file")
        }
        try:
            with server() as port:
                for source, row in by_source.items():
                    row.notes["smtp-source"] = "n/a: a C test program, not a library"
                    for client in CLIENTS:
                        log(f"memory: {client}, {source}, {name}")
                        result = run_client(
                            {
                                "task": "memory",
                                "client": client,
                                "port": port,
                                "message_file": str(files.big),
                                "source": source,
                            }
                        )
                        raw.setdefault("memory", {}).setdefault(f"{name}, {source}", {})[
                            client
                        ] = result
                        extra = result.get("peak_extra")
                        record(row, client, result, extra / MiB if extra is not None else None)
        except Unavailable as exc:
            for row in by_source.values():
                unavailable_row(row, str(exc))
        rows += by_source.values()
    return rows


ROW_FUNCTIONS = {
    "throughput": throughput_rows,
    "roundtrips": roundtrip_rows,
    "session": session_rows,
    "memory": memory_rows,
}


# -- targets and the report ----------------------------------------------------------------


def _find(rows: Sequence[Row], *words: str) -> Row | None:
    for row in rows:
        if all(word in row.label for word in words):
            return row
    return None


def targets(rows: Sequence[Row], settings: Settings) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every target the rows allow to check."""
    checks: list[tuple[str, str, str]] = []

    def ratio(row: Row | None, other: str) -> float | None:
        if row is None or "aiosmtp" not in row.values or not row.values.get(other):
            return None
        return row.values["aiosmtp"] / row.values[other]

    def check(target: str, value: float | None, ok: bool, shown: str) -> None:
        if value is not None:
            checks.append((target, shown, "met" if ok else "not met"))

    one = _find(rows, "throughput,", "1 connection(s), smtp-sink")
    for other, wanted in (("smtplib", 1.5), ("aiosmtplib", 3.0)):
        value = ratio(one, other)
        if value is not None:
            check(f"1 connection: ≥ {wanted}x {other}", value, value >= wanted, f"{value:.2f}x")
    sixteen = _find(rows, "throughput,", "16 connection(s), smtp-sink")
    value = ratio(sixteen, "smtp-source")
    if value is not None:
        check("16 connections: ≥ 0.6x smtp-source -s 16", value, value >= 0.6, f"{value:.2f}x")
    cpu = _find(rows, "client CPU per message, 1 connection(s), smtp-sink")
    if cpu is not None and "aiosmtp" in cpu.values:
        us = cpu.values["aiosmtp"]
        check("client CPU ≤ 120 µs per message", us, us <= 120, f"{us:.0f} µs")
    for words, wanted in ((("round trips", "CHUNKING"), 1), (("round trips", "smtp-sink"), 2)):
        row = _find(rows, *words)
        if row is not None and "aiosmtp" in row.values:
            trips = row.values["aiosmtp"]
            where = "PIPELINING + CHUNKING" if wanted == 1 else "PIPELINING only"
            check(
                f"{wanted} round trip(s) per message, {where}",
                trips,
                abs(trips - wanted) < 0.05,
                f"{trips:.2f}",
            )
    size_mib = settings.big_size / MiB
    for server in ("DATA", "BDAT"):
        row = _find(rows, "peak extra memory", "from bytes", server)
        if row is not None and "aiosmtp" in row.values:
            extra = row.values["aiosmtp"]
            check(
                f"peak extra memory from bytes ({server}): ≤ 1.1x the message",
                extra,
                extra <= 1.1 * size_mib,
                f"{extra / size_mib:.2f}x the message",
            )
        row = _find(rows, "peak extra memory", "from file", server)
        if row is not None and "aiosmtp" in row.values:
            extra = row.values["aiosmtp"]
            check(
                f"peak extra memory from a file ({server}): flat (≤ {FLAT_MIB} MiB at any size)",
                extra,
                extra <= FLAT_MIB,
                f"{extra:.1f} MiB",
            )
    return checks


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "aiosmtp"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in aiosmtp/" if dirty else "")


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = []
    for name in ("aiosmtp", "anyio", "aiosmtplib", "aiosmtpd", "trustme"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    try:
        postfix = subprocess.run(
            [find_tool("postconf"), "-d", "-h", "mail_version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (Unavailable, OSError, subprocess.CalledProcessError):
        postfix = "not installed"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        ("date", f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"),
        ("CPU", f"{os.cpu_count()} cores (nproc), {cpu}"),
        ("memory", memory),
        ("system", f"{platform.system()} {platform.release()}, {_os_name()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(versions)),
        ("aiosmtp revision", git_revision()),
        ("Postfix", postfix),
        ("load average at start", load),
    ]


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return "unknown OS"


def render_report(
    rows: Sequence[Row], info: Sequence[tuple[str, str]], settings: Settings, command: str
) -> str:
    lines = ["# Benchmark results", ""]
    lines += [f"- {key}: {value}" for key, value in info]
    lines += [f"- command: `{command}`", ""]
    lines += [
        "Each cell is the absolute figure and, in brackets, its ratio to aiosmtp's (the",
        "client's figure divided by aiosmtp's). Higher is better for throughput; lower for",
        "CPU, round trips, latency and memory. What each row measures:",
        "[README.md](README.md).",
        "",
        format_table(rows),
        "",
    ]
    checks = targets(rows, settings)
    if checks:
        lines += ["## Targets", "", "| target | aiosmtp | verdict |", "|---|---:|---|"]
        lines += [f"| {target} | {shown} | {verdict} |" for target, shown, verdict in checks]
        lines.append("")
    notes = format_notes(rows)
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    info = machine()
    raw: Result = {"settings": {k: str(v) for k, v in vars(settings).items()}}
    rows: list[Row] = []
    with workspace(settings) as files:
        for group in settings.rows:
            rows += ROW_FUNCTIONS[group](settings, files, raw)
    report = render_report(rows, info, settings, command)
    print(report)
    if settings.output is not None:
        settings.output.write_text(report)
    if settings.json_output is not None:
        raw["machine"] = dict(info)
        settings.json_output.write_text(json.dumps(raw, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
