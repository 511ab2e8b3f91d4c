"""The framework examples, each run against the test kit's recording server.

The FastAPI app is driven in-process through httpx's ASGI transport inside
asgi-lifespan's ``LifespanManager`` (the ASGI transport alone sends no lifespan
events, so the pool would never open); the bulk senders run as users run them, in
a subprocess, against a thread-backed recording server.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from aiosmtp.testing import RecordingServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *args: str) -> str:
    # The checkout's aiosmtp, whatever is installed.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def numbers_sent(server_messages: list[bytes], prefix: bytes) -> Counter[int]:
    """How often each numbered message arrived."""
    counts: Counter[int] = Counter()
    for data in server_messages:
        [line] = [line for line in data.splitlines() if line.startswith(prefix)]
        counts[int(line[len(prefix) :])] += 1
    return counts


# -- FastAPI ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastapi_app_sends_through_its_pool() -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    asgi_lifespan = pytest.importorskip("asgi_lifespan")
    example = load_example("fastapi_app")

    async with RecordingServer() as server:
        server.refuse("RCPT", 550, "5.1.1 No such user", match="nobody@example.com")
        app = example.create_app(
            server.host, server.port, sender="app@example.com", tls="none", timeout=5
        )
        async with (
            asgi_lifespan.LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://app"
            ) as client,
        ):
            assert server.sessions == []  # the pool opens connections on demand
            response = await client.post(
                "/send",
                json={
                    "to": ["alice@example.com", "nobody@example.com"],
                    "subject": "Welcome",
                    "body": "Hello from FastAPI.",
                },
            )
            assert response.status_code == 202, response.text
            sent = response.json()
            assert sent["refused"] == ["nobody@example.com"]
            [message] = server.messages
            assert sent["reply"].endswith(message.queue_id)

            response = await client.post(
                "/send", json={"to": ["nobody@example.com"], "subject": "x", "body": "x"}
            )
            assert response.status_code == 422
            assert "nobody@example.com" in response.json()["detail"]

            server.refuse("MAIL", 451, "4.3.0 Try later", times=1)
            response = await client.post(
                "/send", json={"to": ["bob@example.com"], "subject": "x", "body": "x"}
            )
            assert response.status_code == 502
            assert "Try later" in response.json()["detail"]

            response = await client.post("/send", json={"to": "not a list"})
            assert response.status_code == 422
        # The lifespan closed the pool: every connection said QUIT.
        assert all(s.closed and s.commands[-1] == "QUIT" for s in server.sessions)

    assert message.mail_from == "app@example.com"
    assert message.rcpt_tos == ["alice@example.com"]
    assert message.message["Message-ID"] == sent["message_id"]
    assert message.message["Subject"] == "Welcome"
    assert message.message["To"] == "alice@example.com, nobody@example.com"
    assert message.message.get_content() == "Hello from FastAPI.\n"


# -- trio ---------------------------------------------------------------------------------


def test_trio_bulk_sends_each_message_exactly_once() -> None:
    pytest.importorskip("trio")
    count = 200
    with RecordingServer.in_thread() as server:
        out = run_example("trio_bulk.py", server.host, str(server.port), str(count), "6")
        assert f"trio bulk: {count} of {count} accepted, 0 failed, 0 unknown" in out
        messages = server.messages
        sessions = server.sessions
    counts = numbers_sent([m.message["Subject"].encode() for m in messages], b"newsletter ")
    assert counts == Counter(range(count))
    assert all(m.rcpt_tos == [m.message["To"]] for m in messages)
    # The limiter and the pool kept it to at most 6 connections.
    assert 1 <= len(sessions) <= 6


def test_trio_bulk_reports_refusals() -> None:
    with RecordingServer.in_thread(backend="trio") as server:
        server.refuse("RCPT", 550, match="user3@example.com")
        out = run_example("trio_bulk.py", server.host, str(server.port), "10", "2")
        assert "trio bulk: 9 of 10 accepted, 1 failed, 0 unknown" in out
        assert len(server.messages) == 9


# -- uvloop -------------------------------------------------------------------------------


def test_uvloop_bulk_runs_the_throughput_path_under_uvloop() -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")
    version = importlib.metadata.version("uvloop")
    count = 500
    with RecordingServer.in_thread() as server:
        out = run_example("uvloop_bulk.py", server.host, str(server.port), str(count), "4")
        messages = server.messages
        sessions = server.sessions
    assert f"uvloop {version} (uvloop.Loop): {count} of {count} accepted" in out
    counts = numbers_sent([m.data for m in messages], b"message ")
    assert counts == Counter(range(count))
    assert 1 <= len(sessions) <= 4
