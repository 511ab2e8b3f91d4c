"""Producers: enqueue messages keyed by their Message-ID, and read how they ended.

    python -m mailqueue.producer demo COUNT FROM TO   # enqueue COUNT test messages
    python -m mailqueue.producer status MESSAGE-ID... # print each outcome as JSON

A job carries the envelope and the message bytes (base64, in JSON): everything a
worker on another machine needs, nothing it has to look up.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.message
import email.utils
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from aiosmtp.message import flatten_message

from .config import Config, dumps, loads
from .ledger import Ledger, Outcome


@dataclasses.dataclass(frozen=True)
class Job:
    message_id: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: tuple[str, ...] = ()

    def arguments(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos,
            "data": base64.b64encode(self.data).decode("ascii"),
            "mail_options": list(self.mail_options),
        }


def job_for(
    msg: email.message.Message | bytes,
    *,
    mail_from: str | None = None,
    rcpt_tos: Sequence[str] | None = None,
    message_id: str | None = None,
) -> Job:
    """A job for one message. An email.message.Message gives its own envelope
    (Sender or From; To, Cc and Bcc; Bcc is not transmitted) and must carry a
    Message-ID; bytes need ``mail_from``, ``rcpt_tos`` and ``message_id``."""
    if isinstance(msg, email.message.Message):
        message_id = message_id or msg["Message-ID"]
        if not message_id:
            raise ValueError("the message needs a Message-ID: it is the idempotency key")
        # aiosmtp's own flattening (what send_message does), for a server that has
        # SMTPUTF8 if the addresses need it: the server refuses if it has not.
        envelope = flatten_message(msg, mail_from, rcpt_tos, (), server_has_smtputf8=True)
        return Job(
            str(message_id).strip(),
            envelope.sender,
            list(envelope.recipients),
            envelope.data,
            envelope.mail_options,
        )
    if mail_from is None or rcpt_tos is None or not message_id:
        raise ValueError("a bytes message needs mail_from, rcpt_tos and message_id")
    return Job(message_id, mail_from, list(rcpt_tos), bytes(msg))


async def connect(config: Config) -> ArqRedis:
    return await create_pool(
        RedisSettings.from_dsn(config.redis_url),
        job_serializer=dumps,
        job_deserializer=loads,
        default_queue_name=config.queue_name,
    )


async def enqueue(redis: ArqRedis, job: Job, config: Config) -> bool:
    """Enqueue one job; False if that Message-ID is already queued or ran lately
    (arq's job id), and the ledger makes a later duplicate harmless anyway."""
    queued = await redis.enqueue_job(
        "send_mail", _job_id=job.message_id, _queue_name=config.queue_name, **job.arguments()
    )
    return queued is not None


def ledger_for(redis: ArqRedis, config: Config) -> Ledger:
    return Ledger(
        redis,
        prefix=config.ledger_prefix,
        retention=config.retention,
        max_attempts=config.max_attempts,
    )


async def wait_for_outcomes(
    ledger: Ledger, message_ids: Iterable[str], timeout: float, interval: float = 0.2
) -> dict[str, Outcome | None]:
    """Poll until every message has an outcome or ``timeout`` seconds passed."""
    ids = list(message_ids)
    deadline = time.monotonic() + timeout
    while True:
        outcomes = await ledger.outcomes(ids)
        if all(outcomes.values()) or time.monotonic() > deadline:
            return outcomes
        await asyncio.sleep(interval)


def demo_message(number: int, mail_from: str, rcpt_to: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = mail_from
    msg["To"] = rcpt_to
    msg["Subject"] = f"bulk message {number}"
    msg["Message-ID"] = email.utils.make_msgid(f"bulk{number}")
    msg.set_content(f"This is message {number}.\n")
    return msg


async def main(argv: Sequence[str]) -> int:
    config = Config.from_env()
    redis = await connect(config)
    try:
        if argv[:1] == ["demo"] and len(argv) == 4:
            count, mail_from, rcpt_to = int(argv[1]), argv[2], argv[3]
            for number in range(count):
                job = job_for(demo_message(number, mail_from, rcpt_to))
                await enqueue(redis, job, config)
                print(job.message_id)
            return 0
        if argv[:1] == ["status"] and len(argv) > 1:
            outcomes = await ledger_for(redis, config).outcomes(argv[1:])
            for message_id, outcome in outcomes.items():
                state = dataclasses.asdict(outcome) if outcome else {"outcome": None}
                print(json.dumps({"message_id": message_id, **state}))
            return 0
        print(__doc__, file=sys.stderr)
        return 2
    finally:
        await redis.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
