"""Settings, from environment variables, shared by the workers and the producers."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal, cast

TLS = Literal["starttls", "implicit", "opportunistic", "none"]


def _float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "")
    return float(value) if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


@dataclass(frozen=True)
class Config:
    #: Where the queue and the ledger live.
    redis_url: str = "redis://localhost:6379/0"
    #: The arq queue (a sorted set in Redis) the jobs wait in.
    queue_name: str = "mailqueue:send"
    #: Prefix of the ledger's keys (one state key and one outcome hash per Message-ID).
    ledger_prefix: str = "mailqueue"
    #: How long a Message-ID is remembered: re-enqueueing it within this window
    #: never sends it again.
    retention: int = 30 * 24 * 3600

    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_tls: TLS | None = None
    smtp_username: str | None = None
    smtp_password: str | None = None
    #: The EHLO name; None lets aiosmtp use the machine's FQDN.
    smtp_local_hostname: str | None = None
    smtp_timeout: float = 60.0
    #: RFC 5321 section 4.5.3.2.6 asks for 10 minutes for the reply to the data.
    data_timeout: float = 600.0

    #: Messages per second for the whole fleet, None for no limit.
    global_rate: float | None = None
    #: How many worker processes share ``global_rate``.
    workers: int = 1
    #: Connections each worker's pool may open.
    max_connections: int = 10
    #: Jobs one worker runs at once: more than its connections, so that the pool
    #: always has the next message waiting.
    max_jobs: int = 20
    #: How often an idle worker looks at the queue (seconds).
    poll_delay: float = 0.1

    #: Tries of one message, counted in the ledger (a worker that died counts).
    max_attempts: int = 5
    #: Seconds before a message refused for now (4xx) or never sent is tried again.
    retry_delay: float = 30.0
    #: The most one send may take, waits in the pool included; arq's own job
    #: timeout is set a little above it, so that every run ends in our hands.
    send_deadline: float = 900.0

    @property
    def worker_rate(self) -> float | None:
        """Each worker's share: the per-worker limits add up to the global one."""
        if self.global_rate is None:
            return None
        return self.global_rate / self.workers

    @property
    def worker_name(self) -> str:
        return self.smtp_local_hostname or f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ.get
        tls = env("SMTP_TLS") or None
        if tls not in (None, "starttls", "implicit", "opportunistic", "none"):
            raise ValueError(f"SMTP_TLS must be starttls, implicit, opportunistic or none: {tls}")
        workers = _int("WORKERS", 1)
        if workers < 1:
            raise ValueError("WORKERS must be at least 1")
        return cls(
            redis_url=env("REDIS_URL", cls.redis_url),
            queue_name=env("QUEUE_NAME", cls.queue_name),
            ledger_prefix=env("LEDGER_PREFIX", cls.ledger_prefix),
            retention=_int("RETENTION_SECONDS", cls.retention),
            smtp_host=env("SMTP_HOST", cls.smtp_host),
            smtp_port=_int("SMTP_PORT", cls.smtp_port),
            smtp_tls=cast("TLS | None", tls),
            smtp_username=env("SMTP_USERNAME") or None,
            smtp_password=env("SMTP_PASSWORD") or None,
            smtp_local_hostname=env("SMTP_LOCAL_HOSTNAME") or None,
            smtp_timeout=_float("SMTP_TIMEOUT", cls.smtp_timeout) or cls.smtp_timeout,
            data_timeout=_float("DATA_TIMEOUT", cls.data_timeout) or cls.data_timeout,
            global_rate=_float("GLOBAL_RATE", None),
            workers=workers,
            max_connections=_int("MAX_CONNECTIONS", cls.max_connections),
            max_jobs=_int("MAX_JOBS", cls.max_jobs),
            poll_delay=_float("POLL_DELAY", cls.poll_delay) or cls.poll_delay,
            max_attempts=_int("MAX_ATTEMPTS", cls.max_attempts),
            retry_delay=_float("RETRY_DELAY", cls.retry_delay) or 0.0,
            send_deadline=_float("SEND_DEADLINE", cls.send_deadline) or cls.send_deadline,
        )


def dumps(value: Any) -> bytes:
    """Jobs travel as JSON, not arq's default pickle: whoever can write to the
    queue must not be able to run code in the workers."""
    return json.dumps(value).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)
