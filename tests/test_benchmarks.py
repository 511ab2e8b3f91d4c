"""What benchmarks/run.py relies on, checked without timing anything.

The latency proxy must count round trips exactly; every client worker must really
deliver what it claims to have sent; the servers the benchmark starts must offer
what the rows say (Postfix's only where Postfix is installed); the command line
and the report must work on fake numbers.
"""

from __future__ import annotations

import importlib.util
import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import aiosmtp
from benchmarks import latency_proxy, run

from .servers import RunningServer

CLIENTS = ["aiosmtp", "aiosmtplib", "smtplib"]


def _needs(client: str) -> None:
    if client == "aiosmtplib" and importlib.util.find_spec("aiosmtplib") is None:
        pytest.skip("aiosmtplib is not installed (bash benchmarks/setup.sh installs it)")


def _needs_postfix_tool(name: str) -> str:
    try:
        return run.find_tool(name)
    except run.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def message_file(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(run.make_message(run.MESSAGE_SIZE))
    return path


@pytest.fixture
def proxy(smtpd: RunningServer) -> Iterator[run.LineServer]:
    """The benchmark's proxy process in front of aiosmtpd (which offers PIPELINING).
    A small delay: the count must not depend on it."""
    with run.latency_proxy(smtpd.port, 5) as server:
        yield server


# -- the round-trip proxy ------------------------------------------------------------------


def _aiosmtp_session(port: int, messages: int, body: bytes) -> None:
    async def main() -> None:
        async with aiosmtp.SMTP("127.0.0.1", port, timeout=10) as smtp:
            await smtp.ehlo_or_helo_if_needed()
            for _ in range(messages):
                await smtp.sendmail(run.SENDER, [run.RECIPIENT], body)

    anyio.run(main)


def test_proxy_counts_two_round_trips_for_one_pipelined_message(
    proxy: run.LineServer, smtpd: RunningServer, message_file: Path
) -> None:
    body = message_file.read_bytes()
    _aiosmtp_session(proxy.port, 0, body)
    empty = proxy.next_line()
    _aiosmtp_session(proxy.port, 1, body)
    one = proxy.next_line()
    # EHLO and QUIT; then MAIL+RCPT+DATA -> 354, and the body -> 250.
    assert empty["round_trips"] == 2
    assert one["round_trips"] - empty["round_trips"] == 2
    assert one["client_bytes"] > len(body) > one["server_bytes"] > 0
    [received] = smtpd.messages
    assert received.content == body


def test_proxy_counts_four_round_trips_for_one_lock_step_message(
    proxy: run.LineServer, smtpd: RunningServer, message_file: Path
) -> None:
    body = message_file.read_bytes()
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as client:
        client.ehlo_or_helo_if_needed()
        client.sendmail(run.SENDER, [run.RECIPIENT], body)
    # EHLO, MAIL, RCPT, DATA, the body, QUIT: smtplib waits after each.
    assert proxy.next_line()["round_trips"] == 6
    assert len(smtpd.messages) == 1


def test_turn_counter_counts_answered_bursts_only() -> None:
    counter = latency_proxy.TurnCounter()
    counter.from_server(30)  # greeting: no turn
    counter.from_client(10)
    counter.from_client(10)  # the same burst, written in two pieces
    counter.from_server(5)
    counter.from_server(5)  # the same answer, in two pieces
    counter.from_client(4)  # QUIT, never answered
    assert counter.stats == latency_proxy.SessionStats(
        round_trips=1, client_bytes=24, server_bytes=40
    )


# -- the client workers --------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_throughput_worker_delivers_every_message(
    client: str, smtpd: RunningServer, message_file: Path
) -> None:
    _needs(client)
    result = run.run_client(
        {
            "task": "throughput",
            "client": client,
            "port": smtpd.port,
            "message_file": str(message_file),
            "messages": 3,
            "connections": 1,
        },
        timeout=60,
    )
    assert "error" not in result, result
    assert result["sent"] == 3
    assert result["seconds"] > 0
    assert result["cpu_seconds"] >= 0
    assert [m.content for m in smtpd.messages] == [message_file.read_bytes()] * 3
    assert {tuple(m.rcpt_tos) for m in smtpd.messages} == {(run.RECIPIENT,)}


@pytest.mark.parametrize("client", CLIENTS)
def test_throughput_worker_spreads_over_several_connections(
    client: str, smtpd: RunningServer, message_file: Path
) -> None:
    _needs(client)
    result = run.run_client(
        {
            "task": "throughput",
            "client": client,
            "port": smtpd.port,
            "message_file": str(message_file),
            "messages": 7,
            "connections": 3,
        },
        timeout=60,
    )
    assert "error" not in result, result
    assert result["sent"] == 7
    assert len(smtpd.messages) == 7
    if client == "aiosmtp":
        assert result["how"] == "SMTPPool, 3 connection(s), 16 tasks"


def test_memory_worker_streams_a_file_with_aiosmtp(smtpd: RunningServer, tmp_path: Path) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(run.make_message(300_000))
    result = run.run_client(
        {
            "task": "memory",
            "client": "aiosmtp",
            "port": smtpd.port,
            "message_file": str(big),
            "source": "file",
        },
        timeout=60,
    )
    assert "error" not in result, result
    assert "unsupported" not in result, result
    assert result["size"] == 300_000
    assert result["peak_extra"] >= result["traced_peak"] >= 0
    # The warm-up message, then the file, intact.
    assert [len(m.content) for m in smtpd.messages][1:] == [300_000]
    assert smtpd.messages[1].content == big.read_bytes()


def test_memory_worker_reports_what_a_client_cannot_send(
    smtpd: RunningServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(run.make_message(10_000))
    result = run.run_client(
        {
            "task": "memory",
            "client": "smtplib",
            "port": smtpd.port,
            "message_file": str(big),
            "source": "file",
        },
        timeout=60,
    )
    assert "error" not in result, result
    assert "TypeError" in result["unsupported"]
    assert "peak_extra" not in result


@pytest.mark.parametrize("client", CLIENTS)
def test_session_worker_does_starttls_and_auth(
    client: str, message_file: Path, tmp_path: Path
) -> None:
    _needs(client)
    cafile = tmp_path / "ca.pem"
    with run.tls_server(cafile) as server:
        result = run.run_client(
            {
                "task": "session",
                "client": client,
                "port": server.port,
                "cafile": str(cafile),
                "message_file": str(message_file),
                "sessions": 2,
                "warmup": 1,
            },
            timeout=60,
        )
    assert "error" not in result, result
    assert len(result["times"]) == 2


def test_tls_server_refuses_auth_in_plaintext(tmp_path: Path) -> None:
    with (
        run.tls_server(tmp_path / "ca.pem") as server,
        smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client,
    ):
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.has_extn("pipelining")
        with pytest.raises(smtplib.SMTPException):
            client.login("bench", "bench-password")


# -- the servers from Postfix (skipped where Postfix is not installed) ---------------------


@pytest.mark.interop
def test_smtp_sink_offers_pipelining_but_not_chunking() -> None:
    _needs_postfix_tool("smtp-sink")
    with run.smtp_sink() as port, smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("pipelining")
        assert not client.has_extn("chunking")


@pytest.mark.interop
def test_private_postfix_offers_chunking_and_accepts_bdat(message_file: Path) -> None:
    _needs_postfix_tool("postfix")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root")
    with run.postfix_smtpd() as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("pipelining")
            assert client.has_extn("chunking")
        result = run.run_client(
            {
                "task": "throughput",
                "client": "aiosmtp",
                "port": port,
                "message_file": str(message_file),
                "messages": 2,
                "connections": 1,
            },
            timeout=60,
        )
        assert result.get("sent") == 2, result


@pytest.mark.interop
def test_smtp_source_sends_the_same_message(smtpd: RunningServer, tmp_path: Path) -> None:
    _needs_postfix_tool("smtp-source")
    lf = tmp_path / "message-lf.eml"
    lf.write_bytes(run.make_message(run.MESSAGE_SIZE, b"\n"))
    result = run.run_smtp_source(smtpd.port, lf, messages=2, sessions=1)
    assert "error" not in result, result
    # smtp-source ends every message with an empty line of its own: 2 bytes more.
    expected = run.make_message(run.MESSAGE_SIZE) + b"\r\n"
    assert [m.content for m in smtpd.messages] == [expected] * 2


# -- the command line and the report -------------------------------------------------------


def test_make_message_is_exactly_the_size_asked_with_crlf_lines() -> None:
    message = run.make_message(2048)
    assert len(message) == 2048
    assert message.endswith(b"\r\n")
    assert message.count(b"\n") == message.count(b"\r\n")
    assert b"\r\n\r\n" in message
    assert run.make_message(2048, b"\n") == message.replace(b"\r\n", b"\n")


def test_parse_args_defaults_quick_and_only() -> None:
    full = run.parse_args([])
    assert full.messages == 10_000
    assert full.latency_messages == 200
    assert full.big_size == 50 * run.MiB
    assert full.rows == run.ROW_GROUPS
    assert full.output is None
    quick = run.parse_args(["--quick", "--only", "memory, throughput", "--output", "r.md"])
    assert quick.messages < full.messages
    assert quick.big_size < full.big_size
    assert quick.rows == ("throughput", "memory")  # the order they run in
    assert quick.output == Path("r.md")
    assert run.parse_args(["--quick", "--messages", "7"]).messages == 7


@pytest.mark.parametrize("only", ["", "throughput,latency", "nothing"])
def test_parse_args_refuses_unknown_rows(only: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--only", only])
    assert "--only" in capsys.readouterr().err


def _fake_rows() -> list[run.Row]:
    rate = run.Row(
        "throughput, 10000 x 2 KB, 1 connection(s), smtp-sink",
        "msg/s",
        higher_is_better=True,
        values={"aiosmtp": 4000.0, "aiosmtplib": 1000.0, "smtplib": 2000.0},
        notes={"smtp-source": "error: connection refused"},
    )
    sixteen = run.Row(
        "throughput, 10000 x 2 KB, 16 connection(s), smtp-sink",
        "msg/s",
        higher_is_better=True,
        values={"aiosmtp": 5000.0, "smtp-source": 10000.0},
    )
    cpu = run.Row(
        "client CPU per message, 1 connection(s), smtp-sink",
        "µs",
        higher_is_better=False,
        values={"aiosmtp": 100.0, "smtplib": 150.0},
    )
    trips = run.Row(
        "round trips per message, Postfix smtpd (PIPELINING + CHUNKING)",
        "round trips",
        higher_is_better=False,
        values={"aiosmtp": 1.0, "smtplib": 4.0},
        decimals=2,
    )
    memory = run.Row(
        "peak extra memory, 50 MiB message from file, smtp-sink, DATA",
        "MiB",
        higher_is_better=False,
        values={"aiosmtp": 2.5},
        notes={"smtplib": "n/a: TypeError: no file objects"},
        decimals=1,
    )
    return [rate, sixteen, cpu, trips, memory]


def test_format_table_shows_figures_and_ratios_to_aiosmtp() -> None:
    table = run.format_table(_fake_rows()).splitlines()
    assert table[0] == "| measure | unit | aiosmtp | aiosmtplib | smtplib | smtp-source |"
    assert len(table) == 2 + 5
    assert table[2] == (
        "| throughput, 10000 x 2 KB, 1 connection(s), smtp-sink | msg/s (higher is better) "
        "| 4\u202f000 | 1\u202f000 (0.25x) | 2\u202f000 (0.50x) | error |"
    )
    assert "| 1.00 | n/a | 4.00 (4.00x) | n/a |" in table[5]
    assert table[6].endswith("| 2.5 | n/a | n/a | n/a |")


def test_targets_and_report_on_fake_numbers() -> None:
    rows = _fake_rows()
    settings = run.parse_args([])
    verdicts = {target: (shown, verdict) for target, shown, verdict in run.targets(rows, settings)}
    assert verdicts["1 connection: ≥ 1.5x smtplib"] == ("2.00x", "met")
    assert verdicts["1 connection: ≥ 3.0x aiosmtplib"] == ("4.00x", "met")
    assert verdicts["16 connections: ≥ 0.6x smtp-source -s 16"] == ("0.50x", "not met")
    assert verdicts["client CPU ≤ 120 µs per message"] == ("100 µs", "met")
    assert verdicts["1 round trip(s) per message, PIPELINING + CHUNKING"] == ("1.00", "met")
    assert verdicts["peak extra memory from a file (DATA): flat (≤ 5 MiB at any size)"] == (
        "2.5 MiB",
        "met",
    )
    report = run.render_report(rows, [("date", "today")], settings, "python benchmarks/run.py")
    assert report.startswith("# Benchmark results\n\n- date: today\n")
    assert "## Targets" in report
    assert (
        "- smtp-source: error: connection refused "
        "(throughput, 10000 x 2 KB, 1 connection(s), smtp-sink)\n"
    ) in report


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert run.percentile(values, 90) == 9.0
    assert run.percentile(values, 50) == 5.0
    assert run.percentile([3.0], 90) == 3.0
    assert run.percentile(list(reversed(values)), 100) == 10.0


def test_help_runs_without_servers() -> None:
    done = subprocess.run(
        [sys.executable, str(run.HERE / "run.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--only" in done.stdout
