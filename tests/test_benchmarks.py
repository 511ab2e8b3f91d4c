"""What the benchmarks rely on, checked without timing anything."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import aiosmtp

from .servers import RunningServer

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
bench = importlib.import_module("run")  # benchmarks/run.py, not a package


def start(*args: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *args])
    bench.wait_for_port(port)
    return proc


@pytest.fixture
def sink() -> Iterator[int]:
    port = bench.free_port()
    proc = start(str(BENCHMARKS / "sink.py"), str(port), port=port)
    yield port
    proc.terminate()
    proc.wait(5)


def rounds_through_proxy(target: int, messages: int, tmp_path: Path) -> int:
    port = bench.free_port()
    counter = tmp_path / "count"
    proc = start(
        str(BENCHMARKS / "latency_proxy.py"), str(port), str(target), "1", str(counter), port=port
    )
    try:

        async def main() -> None:
            async with aiosmtp.SMTP("127.0.0.1", port, timeout=10) as smtp:
                await smtp.ehlo()
                for _ in range(messages):
                    await smtp.sendmail("a@x.org", ["b@x.org"], b"Subject: x\r\n\r\nx\r\n")

        anyio.run(main)
        time.sleep(0.1)
        return int(counter.read_text())
    finally:
        proc.terminate()
        proc.wait(5)


def test_the_proxy_counts_two_round_trips_per_pipelined_data_message(
    smtpd: RunningServer, tmp_path: Path
) -> None:
    # Each message costs MAIL/RCPT/DATA, then the payload; the session's own
    # commands (EHLO, QUIT) are subtracted.
    base = rounds_through_proxy(smtpd.port, 0, tmp_path)
    assert rounds_through_proxy(smtpd.port, 3, tmp_path) - base == 6


def test_the_sink_offers_chunking_and_costs_one_round_trip(sink: int, tmp_path: Path) -> None:
    base = rounds_through_proxy(sink, 0, tmp_path)
    assert rounds_through_proxy(sink, 3, tmp_path) - base == 3


def test_the_table_reports_ratios_to_aiosmtp() -> None:
    table = bench.format_table(
        [
            {
                "row": "throughput",
                "unit": "msg/s",
                "higher_is_better": True,
                "values": {"aiosmtp": 300.0, "smtplib": 100.0},
            },
            {
                "row": "cpu",
                "unit": "us",
                "higher_is_better": False,
                "values": {"aiosmtp": 50.0, "aiosmtplib": 200.0},
                "notes": {"smtplib": "n/a"},
            },
        ]
    )
    assert "| throughput | msg/s | 300 | - | 100 (aiosmtp 3.00x) | - |" in table
    assert "| cpu | us | 50.0 | 200 (aiosmtp 4.00x) | n/a | - |" in table


def test_the_benchmark_message_is_about_two_kilobytes() -> None:
    body = bench.message()
    assert 1900 <= len(body) <= 2048
    assert body.endswith(b"\r\n")
