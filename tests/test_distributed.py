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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("arq", reason="arq is not installed (the 'distributed' extra)")

from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from .servers import RecordingHandler, RunningServer, aiosmtpd_server, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "distributed"
sys.path.insert(0, str(EXAMPLE))

from mailqueue.config import Config  # noqa: E402
from mailqueue.ledger import Claim, ClaimLost, Ledger, Outcome  # noqa: E402
from mailqueue.producer import (  # noqa: E402
    Job,
    connect,
    enqueue,
    job_for,
    ledger_for,
    wait_for_outcomes,
)

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
    #: Recipients whose first message is answered 451 at the end of the data.
    try_later: set[str] = field(default_factory=set)
    #: Recipients whose message is stored, and answered only after this many seconds.
    slow_reply: dict[str, float] = field(default_factory=dict)

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
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.try_later:
                self.try_later.discard(rcpt)
                return "451 4.3.0 Try again later"
        reply = await super().handle_DATA(server, session, envelope)
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.slow_reply:
                await asyncio.sleep(self.slow_reply[rcpt])
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


# -- the ledger's states, one run at a time -------------------------------------------


def with_ledger(url: str, body: Callable[[Ledger], Coroutine[Any, Any, None]], **kw: Any) -> None:
    from redis.asyncio import Redis

    async def main() -> None:
        redis = Redis.from_url(url)
        try:
            await body(Ledger(redis, **kw))
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_ledger_fences_a_run_that_was_taken_over(redis_url: str) -> None:
    async def body(ledger: Ledger) -> None:
        mid = "<fence@test.example>"
        first = await ledger.claim(mid, "w1")
        assert isinstance(first, Claim)
        assert first.attempt == 1
        # The first run looks dead (never marked): the next one takes it over...
        second = await ledger.claim(mid, "w2")
        assert isinstance(second, Claim)
        assert second.attempt == 2
        # ...and the first, if it was only slow, may no longer send the end of data.
        with pytest.raises(ClaimLost):
            await ledger.mark_sending(first)
        await ledger.mark_sending(second)
        assert await ledger.state(mid) == second.sending
        # Marked sending, then found by another run: unknown, never claimed again.
        found = await ledger.claim(mid, "w3")
        assert isinstance(found, Outcome)
        assert (found.outcome, found.attempt, found.worker) == ("unknown", 2, "w3")
        # Written once: the late reply of the second run does not replace it.
        late = Outcome(mid, "accepted", 250, "2.0.0 Ok", attempt=2, worker="w2")
        assert (await ledger.finish(second, late)).outcome == "unknown"
        again = await ledger.claim(mid, "w4")
        assert isinstance(again, Outcome)
        assert again.outcome == "unknown"

    with_ledger(redis_url, body)


def test_ledger_release_retry_and_give_up(redis_url: str) -> None:
    async def body(ledger: Ledger) -> None:
        mid = "<retry@test.example>"
        first = await ledger.claim(mid, "w1")
        assert isinstance(first, Claim)
        # The dot never left (the connection failed after the mark): release.
        await ledger.mark_sending(first)
        assert await ledger.release(first)
        assert await ledger.state(mid) == first.claimed
        # An interruption before the mark leaves the decision to a retry.
        second = await ledger.claim(mid, "w2")
        assert isinstance(second, Claim)
        assert await ledger.interrupted(second, "w2", "deadline") is None
        # Past max_attempts, a claimed message is given up: failed, never sent.
        gave_up = await ledger.claim(mid, "w3")
        assert isinstance(gave_up, Outcome)
        assert (gave_up.outcome, gave_up.attempt) == ("failed", 2)

        other = "<interrupted@test.example>"
        claim = await ledger.claim(other, "w1")
        assert isinstance(claim, Claim)
        await ledger.mark_sending(claim)
        decided = await ledger.interrupted(claim, "w1", "deadline")
        assert decided is not None
        assert decided.outcome == "unknown"
        assert (await ledger.outcomes([other, "<never@test.example>"])) == {
            other: decided,
            "<never@test.example>": None,
        }

    with_ledger(redis_url, body, max_attempts=2)


def test_job_for_an_email_message() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.com>"
    msg["To"] = "a@example.com"
    msg["Bcc"] = "hidden@example.com"
    msg["Message-ID"] = "<one@test.example>"
    msg.set_content("hello\n")
    job = job_for(msg)
    assert (job.message_id, job.mail_from) == ("<one@test.example>", "sender@example.com")
    assert sorted(job.rcpt_tos) == ["a@example.com", "hidden@example.com"]
    assert b"hidden@example.com" not in job.data
    assert "Bcc" in msg  # the caller's message is left alone
    del msg["Message-ID"]
    with pytest.raises(ValueError, match="Message-ID"):
        job_for(msg)


# -- the fleet ------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def fleet(
    names: list[str], redis_url: str, smtpd: RunningServer, logs: Path, **settings: str
) -> Iterator[list[Worker]]:
    """Start one arq worker process per name (its EHLO name too), configured through
    the environment as in production, and wait until each has its pool open."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLE)]),
        "REDIS_URL": redis_url,
        "SMTP_HOST": smtpd.host,
        "SMTP_PORT": str(smtpd.port),
        "SMTP_TLS": "none",
        "WORKERS": str(len(names)),
        "POLL_DELAY": "0.05",
        "RETRY_DELAY": "0.3",
        **settings,
    }
    workers: list[Worker] = []
    try:
        for name in names:
            with open(logs / f"{name}.log", "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "arq", "mailqueue.worker.WorkerSettings"],
                    cwd=EXAMPLE,
                    env={**env, "SMTP_LOCAL_HOSTNAME": name},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            workers.append(Worker(name, process, logs / f"{name}.log"))
        config = Config(redis_url=redis_url)

        async def registered() -> int:
            redis = await connect(config)
            try:
                return len(await redis.keys(f"{config.ledger_prefix}:worker:*"))
            finally:
                await redis.aclose()

        def all_up() -> bool:
            for worker in workers:
                assert worker.process.poll() is None, worker.output()
            return run(registered) == len(workers)

        wait_until(all_up, 30, "the workers to start")
        yield workers
        # A clean stop (SIGTERM) of every worker still running.
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
                assert worker.process.wait(30) == 0, worker.output()
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(10)


def enqueue_all(redis_url: str, jobs: list[Job]) -> None:
    config = Config(redis_url=redis_url)

    async def main() -> None:
        redis = await connect(config)
        try:
            for job in jobs:
                assert await enqueue(redis, job, config)
            # A second enqueue of a queued Message-ID is refused by arq.
            assert not await enqueue(redis, jobs[0], config)
        finally:
            await redis.aclose()

    asyncio.run(main())


def outcomes_of(redis_url: str, jobs: list[Job], timeout: float) -> dict[str, Outcome | None]:
    config = Config(redis_url=redis_url)

    async def main() -> dict[str, Outcome | None]:
        redis = await connect(config)
        try:
            ids = [job.message_id for job in jobs]
            return await wait_for_outcomes(ledger_for(redis, config), ids, timeout=timeout)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def job(number: int) -> Job:
    return job_for(
        message(number),
        mail_from="sender@example.com",
        rcpt_tos=[recipient(number)],
        message_id=f"<dist-{number}@test.example>",
    )


def test_worker_killed_mid_run(redis_url: str, tmp_path: Path) -> None:
    handler = HoldingHandler()
    handler.refuse_rcpt = {recipient(n) for n in range(MESSAGES) if n % 50 == 21}
    jobs = [job(n) for n in range(MESSAGES)]
    with aiosmtpd_server(handler=handler) as smtpd:
        try:
            with fleet(
                [VICTIM, SURVIVOR],
                redis_url,
                smtpd,
                tmp_path,
                GLOBAL_RATE="400",
                MAX_CONNECTIONS="6",
                MAX_JOBS="12",
                # Short enough that arq re-runs a dead worker's jobs soon: their
                # in-progress keys expire (SEND_DEADLINE + 5) + 10 s after they began.
                SMTP_TIMEOUT="4",
                DATA_TIMEOUT="4",
                SEND_DEADLINE="5",
            ) as (victim, _):
                enqueue_all(redis_url, jobs)
                # Mid-run: the victim holds a transaction on each side of the end of
                # the data, and the fleet has delivered a fair number of messages.
                wait_until(
                    lambda: (
                        bool(handler.held_before and handler.held_after)
                        and len(smtpd.messages) >= 40
                    ),
                    30,
                    "the victim to hold transactions before and after the data",
                )
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(10)
                held_before, held_after = list(handler.held_before), list(handler.held_after)
                outcomes = outcomes_of(redis_url, jobs, timeout=45)
        finally:
            handler.release.set()
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


def test_try_later_and_lost_reply(redis_url: str, tmp_path: Path) -> None:
    """One worker: a 451 at the end of the data is tried again and accepted; a
    reply that comes after DATA_TIMEOUT is unknown, stored once, never re-sent;
    a refused recipient is rejected at once."""
    handler = HoldingHandler()
    jobs = [job(n) for n in (0, 1, 2, 21)]  # user0, user1, user2, refused-21
    handler.try_later = {recipient(0), recipient(1)}
    handler.slow_reply = {recipient(2): 1.5}
    handler.refuse_rcpt = {recipient(21)}
    with (
        aiosmtpd_server(handler=handler) as smtpd,
        fleet(["solo.test"], redis_url, smtpd, tmp_path, DATA_TIMEOUT="0.5") as _,
    ):
        enqueue_all(redis_url, jobs)
        outcomes = outcomes_of(redis_url, jobs, timeout=20)
    arrived = Counter(message_id_of(received.content) for received in handler.messages)
    found = {mid: o.outcome if o else None for mid, o in outcomes.items()}
    assert found == {
        "<dist-0@test.example>": "accepted",
        "<dist-1@test.example>": "accepted",
        "<dist-2@test.example>": "unknown",
        "<dist-21@test.example>": "rejected",
    }
    # Tried again after the 451 (and again if the try shared a connection with the
    # lost reply: the pool then reports it not sent).
    attempts = {mid: outcome.attempt for mid, outcome in outcomes.items() if outcome}
    assert attempts["<dist-0@test.example>"] >= 2
    assert attempts["<dist-1@test.example>"] >= 2
    assert attempts["<dist-2@test.example>"] == attempts["<dist-21@test.example>"] == 1
    assert arrived == {
        "<dist-0@test.example>": 1,
        "<dist-1@test.example>": 1,
        "<dist-2@test.example>": 1,
    }
    lost = outcomes["<dist-2@test.example>"]
    assert lost is not None
    assert "may have been delivered" in lost.detail
