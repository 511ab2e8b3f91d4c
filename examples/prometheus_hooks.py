"""Prometheus counters and histograms for SMTP, through aiosmtp's hooks.

python examples/prometheus_hooks.py HOST PORT [COUNT]

Needs prometheus_client (pip install prometheus-client). Sends COUNT messages
through a pool, then prints the metrics in Prometheus' text format; in an
application, serve them with ``prometheus_client.start_http_server`` instead.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

import aiosmtp
from aiosmtp.hooks import MessageOutcome


class PrometheusHooks(aiosmtp.Hooks):
    """Messages by outcome, their durations, connections, commands and replies."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "smtp_messages", "Messages by outcome", ["outcome"], registry=registry
        )
        self.message_seconds = Histogram(
            "smtp_message_seconds", "Time to send a message", ["outcome"], registry=registry
        )
        self.connections = Counter(
            "smtp_connections", "Connections opened", ["implicit_tls"], registry=registry
        )
        self.connect_seconds = Histogram(
            "smtp_connect_seconds", "Time to connect", registry=registry
        )
        self.commands = Counter("smtp_commands", "Commands sent", ["verb"], registry=registry)
        self.replies = Counter("smtp_replies", "Replies by class", ["class_"], registry=registry)
        self.reply_seconds = Histogram(
            "smtp_reply_seconds", "Time from a command to its reply", registry=registry
        )

    def on_connect(self, host: str, port: int, tls: bool, elapsed: float) -> None:
        self.connections.labels(str(tls).lower()).inc()
        self.connect_seconds.observe(elapsed)

    def on_command(self, verb: str, line: str) -> None:
        self.commands.labels(verb).inc()

    def on_reply(self, reply: aiosmtp.Reply, elapsed: float) -> None:
        self.replies.labels(f"{reply.code // 100}xx").inc()
        self.reply_seconds.observe(elapsed)

    def on_message(
        self,
        outcome: MessageOutcome,
        sender: str,
        recipients: Sequence[str],
        result: aiosmtp.SendResult | BaseException,
        elapsed: float,
    ) -> None:
        self.messages.labels(outcome).inc()
        self.message_seconds.labels(outcome).observe(elapsed)


async def send_some(host: str, port: int, count: int, hooks: aiosmtp.Hooks) -> None:
    async def one(number: int) -> None:
        body = f"Subject: counted {number}\r\n\r\nmessage {number}\r\n".encode()
        with contextlib.suppress(aiosmtp.SMTPException):  # counted by outcome
            await pool.sendmail("sender@example.com", [f"r{number}@example.com"], body)

    pool = aiosmtp.SMTPPool(host, port, tls="opportunistic", hooks=hooks)
    async with pool, anyio.create_task_group() as tasks:
        for number in range(count):
            tasks.start_soon(one, number)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int, nargs="?", default=3)
    args = parser.parse_args()
    registry = CollectorRegistry()
    anyio.run(send_some, args.host, args.port, args.count, PrometheusHooks(registry))
    print(generate_latest(registry).decode(), end="")


if __name__ == "__main__":
    main()
