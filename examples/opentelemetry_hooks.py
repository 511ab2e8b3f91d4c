"""OpenTelemetry spans for SMTP, through aiosmtp's hooks: one span per message, one
per connection, with the outcome, the reply and the timings as attributes.

python examples/opentelemetry_hooks.py HOST PORT [COUNT]

Needs opentelemetry-api (the hooks) and opentelemetry-sdk (this demo's exporter):
pip install 'aiosmtp[otel]'. The spans are printed here; in an application, keep
``OpenTelemetryHooks`` and configure your own TracerProvider and exporter.

Hooks run after the fact and synchronously, so each span is created when its
outcome is known, with its start time set ``elapsed`` seconds back.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence

import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import aiosmtp
from aiosmtp.hooks import MessageOutcome


class OpenTelemetryHooks(aiosmtp.Hooks):
    """A span per message (``smtp.send``) and per connection (``smtp.connect``)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def _start(
        self, name: str, elapsed: float, attributes: dict[str, str | int | bool]
    ) -> tuple[trace.Span, int]:
        """A span that began ``elapsed`` seconds ago, and the time to end it at."""
        end = time.time_ns()
        span = self.tracer.start_span(
            name,
            kind=trace.SpanKind.CLIENT,
            start_time=end - int(elapsed * 1e9),
            attributes=attributes,
        )
        return span, end

    def on_connect(self, host: str, port: int, tls: bool, elapsed: float) -> None:
        attributes: dict[str, str | int | bool] = {
            "server.address": host,
            "server.port": port,
            "smtp.implicit_tls": tls,
        }
        span, end = self._start("smtp.connect", elapsed, attributes)
        span.end(end_time=end)

    def on_message(
        self,
        outcome: MessageOutcome,
        sender: str,
        recipients: Sequence[str],
        result: aiosmtp.SendResult | BaseException,
        elapsed: float,
    ) -> None:
        attributes: dict[str, str | int | bool] = {
            "smtp.outcome": outcome,
            "smtp.recipients": len(recipients),
        }
        span, end = self._start("smtp.send", elapsed, attributes)
        if isinstance(result, BaseException):
            span.record_exception(result)
            span.set_status(Status(StatusCode.ERROR, type(result).__name__))
        else:
            span.set_attribute("smtp.reply.code", result.reply.code)
            span.set_attribute("smtp.reply.text", result.reply.text)
            span.set_attribute("smtp.refused", len(result))
        span.end(end_time=end)


async def send_some(host: str, port: int, count: int, hooks: aiosmtp.Hooks) -> None:
    async def one(number: int) -> None:
        body = f"Subject: traced {number}\r\n\r\nmessage {number}\r\n".encode()
        with contextlib.suppress(aiosmtp.SMTPException):  # the span has the story
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

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hooks = OpenTelemetryHooks(provider.get_tracer("aiosmtp.example"))
    anyio.run(send_some, args.host, args.port, args.count, hooks)
    provider.shutdown()

    for span in exporter.get_finished_spans():
        attributes = dict(span.attributes or {})
        details = " ".join(f"{key}={attributes[key]}" for key in sorted(attributes))
        took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        print(f"span {span.name} {span.status.status_code.name} {took:.1f} ms {details}")


if __name__ == "__main__":
    main()
