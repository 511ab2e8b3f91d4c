"""examples/distributed end to end: a real redis-server, two arq worker processes,
a recording SMTP server in this process, and one worker killed mid-run.

The server holds, for the worker about to die only, some transactions before the
data (at RCPT) and some after it (the message is stored, the reply never comes):
when the worker is killed, the first kind must be sent again by the other worker
and arrive once, the second must be reported unknown and never sent again.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("arq", reason="arq is not installed (the 'distributed' extra)")

from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from .servers import RecordingHandler, aiosmtpd_server, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "distributed"
sys.path.insert(0, str(EXAMPLE))

from mailqueue.config import Config  # noqa: E402
from mailqueue.ledger import Outcome  # noqa: E402
from mailqueue.producer import connect, enqueue, job_for, ledger_for, wait_for_outcomes  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        REDIS_SERVER is None, reason="redis-server is not installed (Debian package redis-server)"
    ),
]

MESSAGES = 300
VICTIM = "worker-a.test"
SURVIVOR = "worker-b.test"
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)

T = TypeVar("T")


def run(coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coroutine())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class HoldingHandler(RecordingHandler):
    """Records like RecordingHandler, a little slowly; for sessions of the worker
    named ``victim``, holds RCPT of hold-before-* and the reply to the data of
    hold-after-* (after storing the message) until ``release`` is set."""

    victim: str = VICTIM
    release: threading.Event = field(default_factory=threading.Event)
    held_before: list[str] = field(default_factory=list)
    held_after: list[str] = field(default_factory=list)

    async def _hold(self) -> None:
        await asyncio.to_thread(self.release.wait)

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if session.host_name == self.victim and address.startswith("hold-before-"):
            self.held_before.append(address)
            await self._hold()
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(0.002)
        reply = await super().handle_DATA(server, session, envelope)
        if session.host_name == self.victim and any(
            rcpt.startswith("hold-after-") for rcpt in envelope.rcpt_tos
        ):
            self.held_after.append(message_id_of(self.messages[-1].content))
            await self._hold()
        return reply


def message_id_of(content: bytes) -> str:
    found = MESSAGE_ID.search(content)
    assert found is not None, content[:200]
    return found.group(1).decode()


def recipient(number: int) -> str:
    if number % 10 == 3:
        return f"hold-before-{number}@example.com"
    if number % 10 == 8:
        return f"hold-after-{number}@example.com"
    if number % 50 == 21:
        return f"refused-{number}@example.com"
    return f"user{number}@example.com"


def message(number: int) -> bytes:
    return (
        f"From: sender@example.com\r\nTo: {recipient(number)}\r\n"
        f"Subject: bulk {number}\r\nMessage-ID: <dist-{number}@test.example>\r\n"
        f"\r\nmessage {number}\r\n"
    ).encode()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of our own: loopback, a free port, no persistence."""
    assert REDIS_SERVER is not None
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir)]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
    with open(workdir / "log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)

        def answers() -> bool:
            assert server.poll() is None, (workdir / "log").read_text()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 10, "redis-server to answer")
        client.close()
        yield url
    finally:
        server.terminate()
        server.wait(10)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_worker(name: str, env: dict[str, str], log: Path) -> Worker:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "arq", "mailqueue.worker.WorkerSettings"],
            cwd=EXAMPLE,
            env={**env, "SMTP_LOCAL_HOSTNAME": name},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Worker(name, process, log)


def test_worker_killed_mid_run(redis_url: str, tmp_path: Path) -> None:
    handler = HoldingHandler()
    handler.refuse_rcpt = {recipient(n) for n in range(MESSAGES) if n % 50 == 21}
    workers: list[Worker] = []
    with aiosmtpd_server(handler=handler) as smtpd:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLE)]),
            "REDIS_URL": redis_url,
            "SMTP_HOST": smtpd.host,
            "SMTP_PORT": str(smtpd.port),
            "SMTP_TLS": "none",
            "WORKERS": "2",
            "GLOBAL_RATE": "400",
            "MAX_CONNECTIONS": "6",
            "MAX_JOBS": "12",
            "POLL_DELAY": "0.05",
            # Sub-second retries; deadlines short enough that arq re-runs a dead
            # worker's jobs ((SEND_DEADLINE + 5) + 10 s after they started) soon.
            "RETRY_DELAY": "0.3",
            "SMTP_TIMEOUT": "4",
            "DATA_TIMEOUT": "4",
            "SEND_DEADLINE": "5",
        }
        config = Config(redis_url=redis_url)
        try:
            workers = [
                start_worker(name, env, tmp_path / f"{name}.log") for name in (VICTIM, SURVIVOR)
            ]
            victim, survivor = workers

            async def registered() -> int:
                redis = await connect(config)
                try:
                    return len(await redis.keys(f"{config.ledger_prefix}:worker:*"))
                finally:
                    await redis.aclose()

            def both_up() -> bool:
                for worker in workers:
                    assert worker.process.poll() is None, worker.output()
                return run(registered) == 2

            wait_until(both_up, 30, "both workers to start")

            jobs = [
                job_for(message(n), mail_from="sender@example.com", rcpt_tos=[recipient(n)],
                        message_id=f"<dist-{n}@test.example>")
                for n in range(MESSAGES)
            ]  # fmt: skip

            async def enqueue_all() -> None:
                redis = await connect(config)
                try:
                    for job in jobs:
                        assert await enqueue(redis, job, config)
                    # A second enqueue of the same Message-ID is refused by arq.
                    assert not await enqueue(redis, jobs[0], config)
                finally:
                    await redis.aclose()

            run(enqueue_all)

            # Mid-run: the victim has a transaction held on each side of the end of
            # the data, and the fleet has delivered a fair number of messages.
            wait_until(
                lambda: (
                    bool(handler.held_before and handler.held_after) and len(smtpd.messages) >= 40
                ),
                30,
                "the victim to hold transactions before and after the data",
            )
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(10)
            held_before, held_after = list(handler.held_before), list(handler.held_after)

            async def outcomes_of_all() -> dict[str, Outcome | None]:
                redis = await connect(config)
                try:
                    ids = [job.message_id for job in jobs]
                    return await wait_for_outcomes(ledger_for(redis, config), ids, timeout=45)
                finally:
                    await redis.aclose()

            outcomes = run(outcomes_of_all)
            assert survivor.process.poll() is None, survivor.output()
            survivor.process.send_signal(signal.SIGTERM)
            assert survivor.process.wait(30) == 0, survivor.output()
        finally:
            handler.release.set()
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait(10)

    missing = [mid for mid, outcome in outcomes.items() if outcome is None]
    assert not missing, f"{len(missing)} jobs without an outcome: {missing[:5]}"
    final = {mid: outcome.outcome for mid, outcome in outcomes.items() if outcome is not None}
    arrived = Counter(message_id_of(received.content) for received in handler.messages)

    # Nothing arrived twice, and nothing arrived that was not enqueued.
    assert not {mid: n for mid, n in arrived.items() if n > 1}
    assert set(arrived) <= set(final)
    for mid, name in final.items():
        if name == "accepted":
            assert arrived[mid] == 1, mid
        elif name == "unknown":
            assert arrived[mid] <= 1, mid
        else:
            assert name == "rejected", (mid, outcomes[mid])
            assert arrived[mid] == 0, mid

    # Refused recipients: rejected, with the server's reply.
    rejected = {mid for mid, outcome in final.items() if outcome == "rejected"}
    assert rejected == {f"<dist-{n}@test.example>" for n in range(MESSAGES) if n % 50 == 21}
    for mid in rejected:
        refusal = outcomes[mid]
        assert refusal is not None
        assert (refusal.code, refusal.reply) == (550, "5.1.1 No such user")

    # Held before the data by the dead worker: sent again by the survivor, once.
    assert held_before
    for address in held_before:
        number = int(address.split("-")[2].split("@")[0])
        resent = outcomes[f"<dist-{number}@test.example>"]
        assert resent is not None
        assert resent.outcome == "accepted", resent
        assert resent.worker == SURVIVOR, resent
        assert resent.attempt >= 2, resent
    # Stored by the server, reply never received: unknown, and never sent again.
    assert held_after
    for mid in held_after:
        assert final[mid] == "unknown", outcomes[mid]
        assert arrived[mid] == 1, mid

    summary = Counter(final.values())
    print(f"outcomes: {dict(summary)}; held before/after: {len(held_before)}/{len(held_after)}")
