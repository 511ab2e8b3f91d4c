"""Every example runs against a real server, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .servers import RunningServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_quickstart(smtpd: RunningServer) -> None:
    out = run_example("quickstart.py", smtpd.host, str(smtpd.port))
    assert "accepted:" in out
    [received] = smtpd.messages
    assert received.rcpt_tos == ["recipient@example.com"]
    assert b"It works.\r\n" in received.content


def test_concurrent_sends(smtpd: RunningServer) -> None:
    out = run_example("concurrent_sends.py", smtpd.host, str(smtpd.port), "60")
    assert "60 of 60 messages accepted" in out
    bodies = sorted(message.content.rsplit(b"\r\n\r\n", 1)[1] for message in smtpd.messages)
    assert bodies == sorted(f"body {number}\r\n".encode() for number in range(60))


def test_trio_example(smtpd: RunningServer) -> None:
    out = run_example("trio_example.py", smtpd.host, str(smtpd.port))
    assert out.startswith("trio: 250")
    [received] = smtpd.messages
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_sansio_blocking_socket(smtpd: RunningServer, pipelining: bool) -> None:
    smtpd.handler.pipelining = pipelining
    out = run_example("sansio_blocking_socket.py", smtpd.host, str(smtpd.port))
    assert "envelope replies: [250, 250, 354]" in out
    [received] = smtpd.messages
    # Bare LFs became CRLF and the lone dot line was stuffed, then unstuffed.
    assert received.content == b"Subject: sans-IO\r\n\r\nNo event loop was harmed.\r\n.\r\n"


def test_demo_command() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "aiosmtp", "demo", "--messages", "50"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Burst: 50 of 50 messages received (each exactly once, intact)" in completed.stdout
    assert "Bcc transmitted: False" in completed.stdout
    assert "login: 235" in completed.stdout
