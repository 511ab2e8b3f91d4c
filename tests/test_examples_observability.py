"""The observability examples, run as users run them against aiosmtpd: the
OpenTelemetry spans and the Prometheus counters each see every outcome."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import RunningServer

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    # This checkout's aiosmtp first, whatever is installed.
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def needs(module: str) -> pytest.MarkDecorator:
    missing = importlib.util.find_spec(module.split(".", maxsplit=1)[0]) is None
    if not missing:
        try:
            missing = importlib.util.find_spec(module) is None
        except ModuleNotFoundError:
            missing = True
    return pytest.mark.skipif(missing, reason=f"{module} is not installed (aiosmtp[otel])")


@needs("opentelemetry.sdk")
def test_opentelemetry_example(smtpd: RunningServer) -> None:
    smtpd.handler.refuse_rcpt = {"r2@example.com"}
    out = run_example("opentelemetry_hooks.py", smtpd.host, str(smtpd.port), "4")
    sends = [line for line in out.splitlines() if line.startswith("span smtp.send ")]
    assert len(sends) == 4
    accepted = [line for line in sends if "smtp.outcome=accepted" in line]
    rejected = [line for line in sends if "smtp.outcome=rejected" in line]
    assert len(accepted) == 3
    assert all(" UNSET " in line and "smtp.reply.code=250" in line for line in accepted)
    [refused] = rejected
    assert " ERROR " in refused
    connects = [line for line in out.splitlines() if line.startswith("span smtp.connect ")]
    assert connects
    assert all(f"server.port={smtpd.port}" in line for line in connects)
    assert len(smtpd.messages) == 3


@needs("prometheus_client")
def test_prometheus_example(smtpd: RunningServer) -> None:
    smtpd.handler.refuse_rcpt = {"r0@example.com"}
    out = run_example("prometheus_hooks.py", smtpd.host, str(smtpd.port), "5")

    def value(sample: str) -> float:
        match = re.search(rf"^{re.escape(sample)} (\S+)$", out, re.MULTILINE)
        assert match, f"{sample} not in\n{out}"
        return float(match.group(1))

    assert value('smtp_messages_total{outcome="accepted"}') == 4
    assert value('smtp_messages_total{outcome="rejected"}') == 1
    assert value('smtp_message_seconds_count{outcome="accepted"}') == 4
    assert value('smtp_commands_total{verb="MAIL"}') == 5
    assert value('smtp_commands_total{verb="RCPT"}') == 5
    assert value('smtp_replies_total{class_="5xx"}') >= 1
    assert value('smtp_connections_total{implicit_tls="false"}') >= 1
    assert len(smtpd.messages) == 4
