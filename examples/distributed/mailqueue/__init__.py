"""Bulk sending across machines: aiosmtp's SMTPPool inside arq workers on Redis.

- ``config``: every knob, read from environment variables.
- ``ledger``: the per-Message-ID record in Redis that makes a send happen at most
  once once its outcome is unknown, and the outcome every job ends in.
- ``worker``: the arq worker (``arq mailqueue.worker.WorkerSettings``), one pool
  per worker process.
- ``producer``: enqueue messages keyed by Message-ID, and read their outcomes.

See README.md beside this package for the design and its trade-offs.
"""
