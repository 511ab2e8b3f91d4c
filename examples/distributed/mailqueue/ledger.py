"""The ledger: one record per Message-ID in Redis, so that no message is sent twice.

Theory of operation. A queue re-runs a job whose worker died (arq does, once the
job's in-progress key expires), and a producer may enqueue the same message twice.
Only one moment decides whether sending again could deliver it twice: the end of
the data (DATA's final dot, or BDAT LAST). A server that lost the connection
before it has no transaction to keep (RFC 5321 section 4.1.1.4: the data is
committed only by the end-of-data indication); after it, the message may be queued
even though its reply never came. So the state of a message says on which side of
that moment its last try was:

    (none) --claim (SET NX)--> claimed T n --mark--> sending T n --reply--> accepted
                                   |  ^                  |   |               rejected
                 a later run takes |  |  release: the    |   +--lost reply-> unknown
                 it over: claimed  |  +- server cannot   |
                 T' n+1 (or failed |     have it         +--a later run finds it--> unknown
                 past max_attempts)|                        (its worker died or hung)

``T`` is the token of one run of the job and ``n`` the number of that try. The
worker marks ``sending`` from inside the message body it hands to aiosmtp: the
body is an async iterator, and the client writes the end of the data only after
the iterator is exhausted, so the mark is in Redis before the dot can leave.

- ``claimed`` by a run that is gone: that run never reached the mark, so its dot
  never left; the next run takes the message over and sends it. If the old run
  was not gone but only slow, its mark now fails (the token is not its own any
  more) and it aborts the connection without the dot: the token fences it.
- ``sending`` found by another run: the dot may have left, the worker that knew
  died or hung; the message becomes ``unknown`` and is never sent again.
- ``accepted``, ``rejected``, ``unknown``, ``failed``: final, written once, with
  the reply in the outcome hash; a later run only reads them.

Every change is one compare-and-set (a short Lua script), so two runs can never
both believe they own a message.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

OutcomeName = Literal["accepted", "rejected", "unknown", "failed"]
FINAL: tuple[OutcomeName, ...] = ("accepted", "rejected", "unknown", "failed")

# Compare-and-set: if the state is one of the expected values, set the new one and
# (for a final state) write the outcome hash, in one atomic step.
# KEYS: state key, outcome key. ARGV: ttl, new state, k, k expected values, then
# field/value pairs for the outcome hash (none for a state that is not final).
_CAS = """
local current = redis.call('GET', KEYS[1]) or ''
local k = tonumber(ARGV[3])
for i = 4, 3 + k do
  if current == ARGV[i] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
    if #ARGV > 3 + k then
      redis.call('DEL', KEYS[2])
      redis.call('HSET', KEYS[2], unpack(ARGV, 4 + k))
      redis.call('EXPIRE', KEYS[2], ARGV[1])
    end
    return {1, current}
  end
end
return {0, current}
"""


class ClaimLost(Exception):
    """Another run of the job took the message over: this one must not send it."""


@dataclass(frozen=True)
class Claim:
    """This run owns the message: it may send it."""

    message_id: str
    token: str
    attempt: int

    @property
    def claimed(self) -> str:
        return f"claimed {self.token} {self.attempt}"

    @property
    def sending(self) -> str:
        return f"sending {self.token} {self.attempt}"


@dataclass(frozen=True)
class Outcome:
    """How a message ended; ``code`` and ``reply`` are the server's final reply
    (``code`` 0 where there was none)."""

    message_id: str
    outcome: OutcomeName
    code: int = 0
    reply: str = ""
    enhanced_status: str = ""
    #: Recipients the server refused while accepting the message for others.
    refused: dict[str, list[Any]] = field(default_factory=dict)
    attempt: int = 0
    worker: str = ""
    detail: str = ""
    at: float = 0.0

    def fields(self) -> list[str]:
        return [
            "outcome", self.outcome,
            "code", str(self.code),
            "reply", self.reply,
            "enhanced_status", self.enhanced_status,
            "refused", json.dumps(self.refused),
            "attempt", str(self.attempt),
            "worker", self.worker,
            "detail", self.detail,
            "at", repr(self.at),
        ]  # fmt: skip

    @classmethod
    def from_hash(cls, message_id: str, raw: Mapping[bytes, bytes]) -> Outcome:
        values = {key.decode(): value.decode() for key, value in raw.items()}
        outcome = values["outcome"]
        assert outcome in FINAL, outcome
        return cls(
            message_id,
            outcome,
            code=int(values.get("code", "0")),
            reply=values.get("reply", ""),
            enhanced_status=values.get("enhanced_status", ""),
            refused=json.loads(values.get("refused", "{}")),
            attempt=int(values.get("attempt", "0")),
            worker=values.get("worker", ""),
            detail=values.get("detail", ""),
            at=float(values.get("at", "0")),
        )


class Ledger:
    """The per-Message-ID states and outcomes, in one Redis database."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "mailqueue",
        retention: int = 30 * 24 * 3600,
        max_attempts: int = 5,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention = retention
        self.max_attempts = max_attempts
        self._cas = redis.register_script(_CAS)

    def state_key(self, message_id: str) -> str:
        return f"{self.prefix}:state:{message_id}"

    def outcome_key(self, message_id: str) -> str:
        return f"{self.prefix}:outcome:{message_id}"

    async def _swap(
        self, message_id: str, expected: Iterable[str], new: str, outcome: Outcome | None = None
    ) -> tuple[bool, str]:
        expected = list(expected)
        args: list[Any] = [self.retention, new, len(expected), *expected]
        if outcome is not None:
            args += outcome.fields()
        done, current = await self._cas(
            keys=[self.state_key(message_id), self.outcome_key(message_id)], args=args
        )
        return bool(done), current.decode() if isinstance(current, bytes) else str(current)

    # -- a run of the job ------------------------------------------------------------

    async def claim(self, message_id: str, worker: str) -> Claim | Outcome:
        """Own the message for this run, or learn the outcome it already has (which
        this call may have just decided: ``unknown`` or ``failed``)."""
        token = uuid.uuid4().hex
        first = Claim(message_id, token, 1)
        while True:
            # The common case: nobody has seen this Message-ID.
            if await self.redis.set(
                self.state_key(message_id), first.claimed, nx=True, ex=self.retention
            ):
                return first
            raw = await self.redis.get(self.state_key(message_id))
            if raw is None:
                continue  # expired meanwhile: claim it afresh
            current = raw.decode()
            state, _, rest = current.partition(" ")
            if state in FINAL:
                recorded = await self.outcome(message_id)
                if recorded is not None:
                    return recorded
                continue  # the outcome hash expired a moment before the state
            attempt = int(rest.split(" ")[1])
            if state == "claimed" and attempt >= self.max_attempts:
                done, _ = await self._swap(
                    message_id,
                    [current],
                    "failed",
                    Outcome(
                        message_id,
                        "failed",
                        attempt=attempt,
                        worker=worker,
                        detail=f"never sent: {attempt} tries ended before the end of the data",
                        at=time.time(),
                    ),
                )
            elif state == "claimed":
                # Its run never marked the message: the end of the data never left.
                mine = Claim(message_id, token, attempt + 1)
                done, _ = await self._swap(message_id, [current], mine.claimed)
                if done:
                    return mine
            else:
                done, _ = await self._swap(
                    message_id,
                    [current],
                    "unknown",
                    Outcome(
                        message_id,
                        "unknown",
                        attempt=attempt,
                        worker=worker,
                        detail=(
                            "the run that sent the end of the data stopped before it "
                            "recorded the reply; the message may have been delivered"
                        ),
                        at=time.time(),
                    ),
                )
            # Decided here, or changed under us: read it again either way.

    async def mark_sending(self, claim: Claim) -> None:
        """Record that the end of the data may leave from now on. Raises ClaimLost
        if another run took the message over: the caller must not send the dot."""
        done, current = await self._swap(claim.message_id, [claim.claimed], claim.sending)
        if not done:
            raise ClaimLost(f"{claim.message_id} is now {current!r}")

    async def release(self, claim: Claim) -> bool:
        """The server cannot have the message (refused for now, or the connection
        failed before the end of the data): leave it claimed, for the next try."""
        done, _ = await self._swap(claim.message_id, [claim.claimed, claim.sending], claim.claimed)
        return done

    async def finish(self, claim: Claim, outcome: Outcome) -> Outcome:
        """Write the outcome once. If another run decided first (it found this one's
        ``sending`` and wrote ``unknown``), that outcome stays and is returned."""
        done, _ = await self._swap(
            claim.message_id, [claim.claimed, claim.sending], outcome.outcome, outcome
        )
        if done:
            return outcome
        recorded = await self.outcome(claim.message_id)
        if recorded is None:
            raise ClaimLost(f"{claim.message_id} was taken over before its outcome")
        return recorded

    async def interrupted(self, claim: Claim, worker: str, detail: str) -> Outcome | None:
        """This run stopped for a reason that says nothing about the server (a
        deadline, a bug): decide from the ledger alone. Marked ``sending`` means the
        dot may have left: unknown. Still ``claimed``: it never left, None (retry)."""
        outcome = Outcome(
            claim.message_id,
            "unknown",
            attempt=claim.attempt,
            worker=worker,
            detail=f"{detail}; the message may have been delivered",
            at=time.time(),
        )
        done, current = await self._swap(claim.message_id, [claim.sending], "unknown", outcome)
        if done:
            return outcome
        if current == claim.claimed:
            return None
        recorded = await self.outcome(claim.message_id)
        if recorded is None:
            raise ClaimLost(f"{claim.message_id} is now {current!r}")
        return recorded

    # -- reading ---------------------------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        raw = await self.redis.hgetall(self.outcome_key(message_id))  # type: ignore[misc]
        return Outcome.from_hash(message_id, raw) if raw else None

    async def outcomes(self, message_ids: Iterable[str]) -> dict[str, Outcome | None]:
        ids = list(message_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(self.outcome_key(message_id))
            raws = await pipe.execute()
        return {
            message_id: Outcome.from_hash(message_id, raw) if raw else None
            for message_id, raw in zip(ids, raws, strict=True)
        }

    async def state(self, message_id: str) -> str | None:
        raw = await self.redis.get(self.state_key(message_id))
        return None if raw is None else raw.decode()
