"""A recording SMTP / LMTP server for tests, on anyio (asyncio and trio).

    async with aiosmtp.testing.RecordingServer() as server:
        async with aiosmtp.SMTP(server.host, server.port) as smtp:
            await smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\\r\\n\\r\\n")
        [message] = server.messages

``RecordingServer.in_thread()`` runs one in a thread for synchronous tests, and the
pytest plugin (entry point ``aiosmtp``) gives the fixtures ``smtp_server`` and
``recording_server_factory``. ``server.refuse()``, ``server.delay()`` and
``server.drop()`` inject faults at a given ``Step``.
"""

from __future__ import annotations

from ._records import RecordedMessage, SessionRecord, Step
from ._server import DEFAULT_EXTENSIONS, RecordingServer
from ._thread import ThreadedRecordingServer

__all__ = [
    "DEFAULT_EXTENSIONS",
    "RecordedMessage",
    "RecordingServer",
    "SessionRecord",
    "Step",
    "ThreadedRecordingServer",
]
