"""The arq worker: one SMTPPool per process, one job per message.

    cd examples/distributed && arq mailqueue.worker.WorkerSettings

(or ``python -m arq mailqueue.worker.WorkerSettings``). Run N of them, on as many
machines as you like, with WORKERS=N and the same GLOBAL_RATE: each worker's pool
sends at GLOBAL_RATE / N messages per second, so together they never exceed it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from arq import Retry
from arq.connections import RedisSettings
from arq.worker import func

import aiosmtp
from aiosmtp import (
    SMTPDataError,
    SMTPDeliveryUnknownError,
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from .config import Config, dumps, loads
from .ledger import Claim, ClaimLost, Ledger, Outcome

# Under arq's logger, so that the arq command line shows these lines too.
logger = logging.getLogger("arq.mailqueue")

CONFIG = Config.from_env()


class PoolOwner:
    """Keeps one SMTPPool open for the worker's lifetime.

    arq calls its startup and shutdown hooks from different tasks, and an anyio
    task group (the pool's) must be left by the task that entered it: so a task of
    our own enters and leaves the pool, and the hooks only start and stop it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._pool: aiosmtp.SMTPPool | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pool(self) -> aiosmtp.SMTPPool:
        assert self._pool is not None, "the pool is not open"
        return self._pool

    async def start(self) -> aiosmtp.SMTPPool:
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([self._task, ready], return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            await self._task  # raises what went wrong
        return self.pool

    async def _run(self) -> None:
        config = self.config
        async with aiosmtp.SMTPPool(
            config.smtp_host,
            config.smtp_port,
            max_connections=config.max_connections,
            rate_limit=config.worker_rate,
            username=config.smtp_username,
            password=config.smtp_password,
            tls=config.smtp_tls,
            timeout=config.smtp_timeout,
            data_timeout=config.data_timeout,
            local_hostname=config.smtp_local_hostname,
        ) as pool:
            self._pool = pool
            self._ready.set()
            await self._stop.wait()
        self._pool = None

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def startup(ctx: dict[str, Any]) -> None:
    owner = PoolOwner(CONFIG)
    await owner.start()
    ctx["pool_owner"] = owner
    ctx["ledger"] = Ledger(
        ctx["redis"],
        prefix=CONFIG.ledger_prefix,
        retention=CONFIG.retention,
        max_attempts=CONFIG.max_attempts,
    )
    # Who is up, for operators (and the test): removed again at shutdown.
    await ctx["redis"].set(
        f"{CONFIG.ledger_prefix}:worker:{CONFIG.worker_name}",
        dumps({"rate": CONFIG.worker_rate, "started": time.time()}),
    )
    logger.info(
        "worker %s: pool to %s:%s at %s messages/s (GLOBAL_RATE %s / WORKERS %d)",
        CONFIG.worker_name,
        CONFIG.smtp_host,
        CONFIG.smtp_port,
        CONFIG.worker_rate or "unlimited",
        CONFIG.global_rate or "unlimited",
        CONFIG.workers,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    owner: PoolOwner | None = ctx.get("pool_owner")
    if owner is not None:
        await owner.stop()
    await ctx["redis"].delete(f"{CONFIG.ledger_prefix}:worker:{CONFIG.worker_name}")


def _reply_of(exc: SMTPException) -> tuple[int, str]:
    """The server's refusal: the one reply of a refused sender or data, or the
    first refused recipient's."""
    message: bytes | str
    if isinstance(exc, SMTPRecipientsRefused):
        code, message = next(iter(exc.recipients.values()), (0, b""))
    elif isinstance(exc, SMTPResponseException):
        code, message = exc.smtp_code, exc.smtp_error
    else:
        return 0, str(exc)
    return code, _text(message)


def _transient(exc: SMTPException) -> bool:
    """A 4xx refusal: the server asks to be asked again later."""
    if isinstance(exc, SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    return isinstance(exc, SMTPResponseException) and 400 <= exc.smtp_code < 500


async def send_mail(
    ctx: dict[str, Any],
    message_id: str,
    mail_from: str,
    rcpt_tos: list[str],
    data: str,
    mail_options: list[str] | None = None,
) -> str:
    """Send one message at most once after its outcome became unknown, and record
    how it ended in the ledger. Returns the outcome's name."""
    ledger: Ledger = ctx["ledger"]
    pool = ctx["pool_owner"].pool
    worker = CONFIG.worker_name
    claim = await ledger.claim(message_id, worker)
    if isinstance(claim, Outcome):
        logger.info("%s already %s: not sent again", message_id, claim.outcome)
        return claim.outcome
    payload = base64.b64decode(data)

    async def body() -> AsyncIterator[bytes]:
        yield payload
        # aiosmtp writes the end of the data only after this iterator is exhausted:
        # the mark is in Redis before the dot can leave. ClaimLost raised here
        # aborts the connection without it.
        await ledger.mark_sending(claim)

    def outcome(name: Any, code: int = 0, reply: str = "", **extra: Any) -> Outcome:
        return Outcome(
            message_id,
            name,
            code=code,
            reply=reply,
            attempt=claim.attempt,
            worker=worker,
            at=time.time(),
            **extra,
        )

    try:
        with anyio.fail_after(CONFIG.send_deadline):
            result = await pool.sendmail(mail_from, rcpt_tos, body(), mail_options or ())
    except ClaimLost as exc:
        logger.warning("%s: %s; this run stopped before the end of the data", message_id, exc)
        return "superseded"
    except SMTPDeliveryUnknownError as exc:
        # The end of the data left and its reply did not come: never sent again.
        return await _finish(ledger, claim, outcome("unknown", detail=str(exc)))
    except (SMTPRecipientsRefused, SMTPSenderRefused, SMTPDataError) as exc:
        # The server answered, and did not take the message.
        code, text = _reply_of(exc)
        refused = (
            {addr: [c, _text(m)] for addr, (c, m) in exc.recipients.items()}
            if isinstance(exc, SMTPRecipientsRefused)
            else {}
        )
        enhanced = getattr(exc, "enhanced_status", None) or ""
        rejected = outcome("rejected", code, text, refused=refused, enhanced_status=enhanced)
        if _transient(exc):
            # 4xx: asked to try again later; rejected only once the tries run out.
            return await _retry_or_fail(ledger, claim, rejected)
        return await _finish(ledger, claim, rejected)
    except SMTPServerDisconnected as exc:
        # Not SMTPDeliveryUnknownError (caught above): aiosmtp raises it only where
        # the end of the data never left, so the server cannot have the message.
        return await _retry_or_fail(ledger, claim, outcome("failed", detail=repr(exc)))
    except Exception as exc:
        # Our deadline, a reply that could not be parsed, a bug, Redis trouble:
        # nothing that says whether the end of the data left. The ledger knows
        # whether it could have: marked sending means unknown.
        logger.exception("%s: send interrupted", message_id)
        try:
            decided = await ledger.interrupted(claim, worker, f"interrupted: {exc!r}")
        except ClaimLost:
            return "superseded"
        except Exception:
            logger.exception("%s: could not record the outcome; arq will run it again", message_id)
            raise Retry(defer=CONFIG.retry_delay) from exc
        if decided is not None:
            return decided.outcome
        return await _retry_or_fail(ledger, claim, outcome("failed", detail=repr(exc)))

    reply = result.reply
    accepted = outcome(
        "accepted",
        reply.code,
        reply.text,
        refused={addr: [c, _text(m)] for addr, (c, m) in result.items()},
        enhanced_status=reply.enhanced_status or "",
    )
    return await _finish(ledger, claim, accepted)


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


async def _finish(ledger: Ledger, claim: Claim, outcome: Outcome) -> str:
    try:
        recorded = await ledger.finish(claim, outcome)
    except ClaimLost:
        return "superseded"
    if recorded.outcome != outcome.outcome:
        logger.warning(
            "%s: %s here, but already recorded as %s (%s)",
            claim.message_id,
            outcome.outcome,
            recorded.outcome,
            recorded.detail,
        )
    return recorded.outcome


async def _retry_or_fail(ledger: Ledger, claim: Claim, final: Outcome) -> str:
    """The server does not have the message: try again later, or, on the last try,
    record ``final`` (rejected with a 4xx reply, or failed: never sent)."""
    if claim.attempt >= CONFIG.max_attempts:
        return await _finish(ledger, claim, final)
    if not await ledger.release(claim):
        return "superseded"
    logger.info(
        "%s: try %d not delivered (%s), again in %ss",
        claim.message_id,
        claim.attempt,
        f"{final.code} {final.reply}" if final.code else final.detail,
        CONFIG.retry_delay,
    )
    raise Retry(defer=CONFIG.retry_delay)


class WorkerSettings:
    """arq reads these attributes: ``arq mailqueue.worker.WorkerSettings``."""

    # Our own tries are counted in the ledger (a worker that died counts too), so
    # arq's limit must never end a job before the ledger has its outcome.
    functions = [func(send_mail, timeout=CONFIG.send_deadline + 5, max_tries=1_000_000)]  # noqa: RUF012
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(CONFIG.redis_url)
    queue_name = CONFIG.queue_name
    max_jobs = CONFIG.max_jobs
    poll_delay = CONFIG.poll_delay
    job_serializer = dumps
    job_deserializer = loads
    # Let the jobs under way finish (for up to this many seconds) on SIGTERM.
    job_completion_wait = 30
