"""SMTPPool and aiosmtp.send against aiosmtpd and a small misbehaving server."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import anyio
import pytest

import aiosmtp

from .servers import USERS, RunningServer

pytestmark = pytest.mark.anyio

BODY = b"Subject: pooled\r\n\r\nhello\r\n"


class FlakyServer:
    """A threaded SMTP server (PIPELINING) that can drop connections on cue.

    ``drop_before_dot`` / ``drop_after_dot``: how many sessions to drop, at the DATA
    command (before any of the message is sent) or right after the end of the data
    without a reply. ``messages`` holds every
    message the server took for delivery.
    """

    def __init__(self, *, drop_before_dot: int = 0, drop_after_dot: int = 0) -> None:
        self.drop_before_dot = drop_before_dot
        self.drop_after_dot = drop_after_dot
        self.messages: list[bytes] = []
        self.sessions = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with self._lock:
            self.sessions += 1
        reader = conn.makefile("rb")
        try:
            conn.sendall(b"220 flaky\r\n")
            while line := reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-flaky\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    with self._lock:
                        if self.drop_before_dot:
                            self.drop_before_dot -= 1
                            return
                    conn.sendall(b"354 go\r\n")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = reader.readline()
                        if not chunk:
                            return
                        data += chunk
                    with self._lock:
                        self.messages.append(data)
                        if self.drop_after_dot:
                            self.drop_after_dot -= 1
                            return
                    conn.sendall(b"250 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        finally:
            conn.close()


@pytest.fixture
def flaky() -> Iterator[FlakyServer]:
    server = FlakyServer()
    yield server
    server.close()


async def test_many_tasks_share_a_capped_set_of_connections(smtpd: RunningServer) -> None:
    async with aiosmtp.SMTPPool(smtpd.host, smtpd.port, tls="none", max_connections=3) as pool:
        results: list[aiosmtp.SendResult] = []

        async def one(number: int) -> None:
            results.append(await pool.sendmail("a@example.com", [f"r{number}@example.com"], BODY))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                for number in range(60):
                    tasks.start_soon(one, number)
        assert "3/3" in repr(pool)
        assert "idle" in repr(pool)
    assert len(results) == 60
    assert all(result == {} and result.reply.code == 250 for result in results)
    assert sorted(m.rcpt_tos[0] for m in smtpd.messages) == sorted(
        f"r{n}@example.com" for n in range(60)
    )


async def test_a_connection_is_reused_and_retired(smtpd: RunningServer) -> None:
    async with aiosmtp.SMTPPool(
        smtpd.host, smtpd.port, tls="none", max_messages_per_connection=2
    ) as pool:
        for _ in range(5):
            await pool.sendmail("a@example.com", ["b@example.com"], BODY)
        # Connections #1 and #2 each sent two and were retired; #3 is in use.
        assert "#3" in repr(pool)
        assert "#4" not in repr(pool)
    assert len(smtpd.messages) == 5


async def test_starttls_is_required_by_default(smtpd: RunningServer) -> None:
    async with aiosmtp.SMTPPool(smtpd.host, smtpd.port) as pool:
        with pytest.raises(aiosmtp.SMTPNotSupportedError, match="STARTTLS"):
            await pool.sendmail("a@example.com", ["b@example.com"], BODY)
    assert smtpd.messages == []


async def test_starttls_and_login(
    smtpd_tls: RunningServer, client_context: ssl.SSLContext
) -> None:
    async with aiosmtp.SMTPPool(
        smtpd_tls.host,
        smtpd_tls.port,
        context=client_context,
        username="alice",
        password=USERS["alice"],
    ) as pool:
        result = await pool.sendmail("a@example.com", ["b@example.com"], BODY)
    assert result.reply.code == 250
    assert len(smtpd_tls.messages) == 1


def test_the_tls_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="tls must be one of"):
        aiosmtp.SMTPPool("localhost", tls="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="username goes with"):
        aiosmtp.SMTPPool("localhost", username="alice")
    assert aiosmtp.SMTPPool("localhost", 465).tls == "implicit"
    assert aiosmtp.SMTPPool("localhost", 587).tls == "starttls"


async def test_the_pool_must_be_entered(smtpd: RunningServer) -> None:
    pool = aiosmtp.SMTPPool(smtpd.host, smtpd.port, tls="none")
    with pytest.raises(RuntimeError, match="async with"):
        await pool.sendmail("a@example.com", ["b@example.com"], BODY)


async def test_send_one_message(smtpd: RunningServer) -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "one shot"
    msg.set_content("hi\n")
    result = await aiosmtp.send(msg, smtpd.host, smtpd.port, tls="opportunistic")
    assert result.reply.code == 250
    result = await aiosmtp.send(
        BODY, smtpd.host, smtpd.port, tls="none", from_addr="a@x.org", to_addrs="c@x.org"
    )
    assert [m.rcpt_tos for m in smtpd.messages] == [["b@example.com"], ["c@x.org"]]
    with pytest.raises(ValueError, match="from_addr and to_addrs"):
        await aiosmtp.send(BODY, smtpd.host, smtpd.port, tls="none")


async def test_lost_before_the_end_of_data_is_retried_once(flaky: FlakyServer) -> None:
    flaky.drop_before_dot = 1
    async with aiosmtp.SMTPPool("127.0.0.1", flaky.port, tls="none", timeout=5) as pool:
        result = await pool.sendmail("a@example.com", ["b@example.com"], BODY)
    assert result.reply.code == 250
    assert len(flaky.messages) == 1
    assert flaky.sessions == 2


async def test_lost_after_the_end_of_data_is_never_retried(flaky: FlakyServer) -> None:
    flaky.drop_after_dot = 1
    async with aiosmtp.SMTPPool("127.0.0.1", flaky.port, tls="none", timeout=5) as pool:
        with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
            await pool.sendmail("a@example.com", ["b@example.com"], BODY)
        # The pool itself goes on, on a fresh connection.
        assert (await pool.sendmail("a@example.com", ["b@example.com"], BODY)).reply.code == 250
    assert len(flaky.messages) == 2  # the unknown one arrived once, and was not resent


async def test_a_consumed_stream_is_not_retried(flaky: FlakyServer) -> None:
    flaky.drop_before_dot = 1

    async def body() -> object:
        yield BODY

    async with aiosmtp.SMTPPool("127.0.0.1", flaky.port, tls="none", timeout=5) as pool:
        with pytest.raises(aiosmtp.SMTPServerDisconnected) as caught:
            await pool.sendmail("a@example.com", ["b@example.com"], body())  # type: ignore[arg-type]
    assert not isinstance(caught.value, aiosmtp.SMTPDeliveryUnknownError)
    assert flaky.messages == []
    assert flaky.sessions == 1


async def test_rate_limit_spaces_transactions(smtpd: RunningServer) -> None:
    async with aiosmtp.SMTPPool(smtpd.host, smtpd.port, tls="none", rate_limit=20) as pool:
        started = anyio.current_time()
        for _ in range(6):
            await pool.sendmail("a@example.com", ["b@example.com"], BODY)
        assert anyio.current_time() - started >= 0.24  # five gaps of 50 ms


async def test_waiting_for_a_connection_times_out(flaky: FlakyServer) -> None:
    async with aiosmtp.SMTPPool(
        "127.0.0.1", flaky.port, tls="none", max_connections=1, timeout=0.2
    ) as pool:
        await pool._slots.acquire()  # every connection is busy
        with pytest.raises(aiosmtp.SMTPTimeoutError, match="no connection"):
            await pool.sendmail("a@example.com", ["b@example.com"], BODY)
        pool._slots.release()
        assert (await pool.sendmail("a@example.com", ["b@example.com"], BODY)).reply.code == 250


class OneRecipientServer:
    """Takes one recipient per transaction and answers 452 to the rest; from the
    second transaction on, answers MAIL (or RCPT) with ``later_reply``."""

    def __init__(self, later_reply: bytes, *, at: bytes = b"MAIL") -> None:
        self.later_reply = later_reply
        self.at = at
        self.messages: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self._sock.accept()
            with conn, conn.makefile("rb") as reader:
                self._session(conn, reader)

    def _session(self, conn: socket.socket, reader: Any) -> None:
        conn.sendall(b"220 one\r\n")
        transactions = 0
        recipients = 0
        while line := reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-one\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL":
                transactions += 1
                recipients = 0
                late = transactions > 1 and self.at == b"MAIL"
                conn.sendall(self.later_reply if late else b"250 ok\r\n")
            elif verb == b"RCPT":
                recipients += 1
                if transactions > 1 and self.at == b"RCPT":
                    conn.sendall(self.later_reply)
                else:
                    conn.sendall(b"250 ok\r\n" if recipients == 1 else b"452 4.5.3 too many\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                data = b"\r\n"  # so that a lone "." (an empty message) ends it too
                while not data.endswith(b"\r\n.\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    data += line
                if len(data) > 5:
                    self.messages.append(data[2:])
                conn.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


@pytest.mark.parametrize(
    ("later_reply", "at", "code"),
    [(b"550 5.7.1 not now\r\n", b"MAIL", 550), (b"550 5.1.1 gone\r\n", b"RCPT", 550)],
)
async def test_a_failed_follow_up_for_452_recipients_is_reported_per_recipient(
    later_reply: bytes, at: bytes, code: int
) -> None:
    server = OneRecipientServer(later_reply, at=at)
    try:
        async with aiosmtp.SMTPPool("127.0.0.1", server.port, tls="none", timeout=5) as pool:
            result = await pool.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], BODY)
        # b@x.org got the message; the follow-up for the others was refused.
        assert result.reply.code == 250
        assert set(result) == {"c@x.org", "d@x.org"}
        assert {value[0] for value in result.values()} == {code}
        assert len(server.messages) == 1
    finally:
        server.close()


async def test_452_recipients_are_delivered_one_transaction_at_a_time() -> None:
    server = OneRecipientServer(b"250 ok\r\n")
    try:
        async with aiosmtp.SMTPPool("127.0.0.1", server.port, tls="none", timeout=5) as pool:
            result = await pool.sendmail("a@x.org", ["b@x.org", "c@x.org", "d@x.org"], BODY)
        assert result == {}
        assert len(server.messages) == 3
    finally:
        server.close()


async def test_a_message_kept_by_a_server_that_died_is_reported_unknown_and_not_resent() -> None:
    """With aiosmtp.testing: the server stores the message, then drops the connection
    before replying to the end of the data."""
    from aiosmtp.testing import RecordingServer

    async with RecordingServer() as server:
        server.drop("DOT", record=True, times=1)
        async with aiosmtp.SMTPPool(server.host, server.port, tls="none", timeout=2) as pool:
            with pytest.raises(aiosmtp.SMTPDeliveryUnknownError):
                await pool.sendmail("a@example.com", ["b@example.com"], BODY)
            await pool.sendmail("a@example.com", ["c@example.com"], BODY)
        assert [m.rcpt_tos for m in server.messages] == [["b@example.com"], ["c@example.com"]]
        assert len(server.sessions) == 2
