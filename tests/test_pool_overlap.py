"""The pool overlaps transactions on a connection where the server has PIPELINING:
the next message's MAIL, RCPT and DATA leave while the reply to the previous
message's final dot is still on its way; replies are still read in order.

All against tests/bdat_server.py (plain DATA unless said otherwise), on both backends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aiosmtp

from .bdat_server import BDATServer, eventually

pytestmark = pytest.mark.anyio

LIMIT = 20
TIMEOUT = 5.0
NAME = "client.example"


@pytest.fixture
def server() -> Iterator[BDATServer]:
    with BDATServer(chunking=False) as server:
        yield server


def pool(server: BDATServer, **options: Any) -> aiosmtp.SMTPPool:
    options.setdefault("tls", "none")
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("max_connections", 1)
    return aiosmtp.SMTPPool(server.host, server.port, local_hostname=NAME, **options)


def body(number: int) -> bytes:
    return f"Subject: message {number}\r\n\r\nbody of message {number}\r\n".encode()


def the_client(smtp_pool: aiosmtp.SMTPPool) -> aiosmtp.SMTP:
    (connection,) = smtp_pool._connections
    return connection.smtp


async def test_the_next_transaction_leaves_before_the_reply_to_the_dot(
    server: BDATServer,
) -> None:
    results: dict[int, aiosmtp.SendResult] = {}

    async def send(smtp_pool: aiosmtp.SMTPPool, number: int) -> None:
        results[number] = await smtp_pool.sendmail("a@x.org", [f"r{number}@x.org"], body(number))

    with anyio.fail_after(LIMIT):
        async with pool(server) as smtp_pool, anyio.create_task_group() as tasks:
            await smtp_pool.sendmail("a@x.org", ["warm@x.org"], body(0))
            server.hold_final_replies()
            tasks.start_soon(send, smtp_pool, 1)
            await eventually(lambda: len(server.messages) == 2)
            tasks.start_soon(send, smtp_pool, 2)
            # The reply to message 1's dot is held back, yet message 2's MAIL,
            # RCPT and DATA are on the wire: four replies are owed.
            client = the_client(smtp_pool)
            await eventually(
                lambda: client._conn is not None and client._conn.awaiting_replies == 4
            )
            assert "open to the next" not in repr(smtp_pool)
            server.release_final_replies()
    assert results[1].reply.message.endswith(b"Q2")
    assert results[2].reply.message.endswith(b"Q3")
    assert [message.recipients for message in server.messages] == [
        ["warm@x.org"],
        ["r1@x.org"],
        ["r2@x.org"],
    ]
    assert server.opened == 1


async def test_each_task_gets_the_reply_to_its_own_message(server: BDATServer) -> None:
    server.final_reply_delay = 0.001
    queue_ids: dict[int, bytes] = {}

    async def worker(smtp_pool: aiosmtp.SMTPPool, numbers: list[int]) -> None:
        for number in numbers:
            result = await smtp_pool.sendmail("a@x.org", [f"r{number}@x.org"], body(number))
            queue_ids[number] = result.reply.message

    with anyio.fail_after(LIMIT):
        async with (
            pool(server, max_messages_per_connection=1000) as smtp_pool,
            anyio.create_task_group() as tasks,
        ):
            for start in range(8):
                tasks.start_soon(worker, smtp_pool, list(range(start, 60, 8)))
    assert server.opened == 1
    assert len(server.messages) == 60
    # The server numbers messages in the order they arrived; each task's reply
    # must name the message that task sent.
    for position, message in enumerate(server.messages, 1):
        (recipient,) = message.recipients
        number = int(re.fullmatch(r"r(\d+)@x\.org", recipient)[1])  # type: ignore[index]
        assert message.data == body(number)
        assert queue_ids[number].endswith(f"Q{position}".encode())


async def test_a_refused_message_sends_no_rset_into_the_next_transaction(
    server: BDATServer,
) -> None:
    server.final_reply = "554 5.7.1 Refused: message {number}"
    outcomes: dict[int, BaseException] = {}

    async def send(smtp_pool: aiosmtp.SMTPPool, number: int) -> None:
        with pytest.raises(aiosmtp.SMTPDataError) as caught:
            await smtp_pool.sendmail("a@x.org", [f"r{number}@x.org"], body(number))
        outcomes[number] = caught.value

    with anyio.fail_after(LIMIT):
        async with pool(server) as smtp_pool, anyio.create_task_group() as tasks:
            for number in range(1, 5):
                tasks.start_soon(send, smtp_pool, number)
    assert sorted(outcomes) == [1, 2, 3, 4]
    refusals = {
        error.smtp_error for error in outcomes.values() if isinstance(error, aiosmtp.SMTPDataError)
    }
    assert refusals == {f"5.7.1 Refused: message {n}".encode() for n in range(1, 5)}
    (connection,) = server.connections
    # The connection stayed in step and in use: one session, transactions back to
    # back. (Whether a refused message was followed by RSET depends on whether
    # another transaction had already started; never inside one.)
    verbs = [verb for verb in connection.verbs() if verb not in ("EHLO", "QUIT")]
    transactions = "".join(" ".join(verbs).replace("RSET", "").split())
    assert transactions == "MAILRCPTDATA" * 4
    assert server.opened == 1


async def test_loss_after_the_dot_with_the_next_transaction_in_flight(
    server: BDATServer,
) -> None:
    outcomes: dict[int, object] = {}

    async def send(smtp_pool: aiosmtp.SMTPPool, number: int) -> None:
        try:
            outcomes[number] = await smtp_pool.sendmail(
                "a@x.org", [f"r{number}@x.org"], body(number)
            )
        except aiosmtp.SMTPException as exc:
            outcomes[number] = exc

    with anyio.fail_after(LIMIT):
        async with pool(server) as smtp_pool:
            await smtp_pool.sendmail("a@x.org", ["warm@x.org"], body(0))
            server.drop("after-end")
            # Message 2 waits for the connection and takes it the moment message
            # 1's dot has left, while the server is about to hang up.
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send, smtp_pool, 1)
                tasks.start_soon(send, smtp_pool, 2)
    # The first message may have been delivered: its sender is told so, and it is
    # not sent again. The second had not been sent in full: it goes again, once.
    # (Which task goes first is the backend's choice.)
    (unknown,) = [
        n for n, o in outcomes.items() if isinstance(o, aiosmtp.SMTPDeliveryUnknownError)
    ]
    (other,) = [n for n, o in outcomes.items() if isinstance(o, aiosmtp.SendResult)]
    delivered = [message.recipients[0] for message in server.messages]
    assert delivered == ["warm@x.org", f"r{unknown}@x.org", f"r{other}@x.org"]
    assert [message.connection for message in server.messages] == [1, 1, 2]


async def test_lmtp_per_recipient_replies_stay_with_their_message() -> None:
    with BDATServer(chunking=False, lmtp=True) as server:
        server.lmtp_replies = {"full@x.org": "552 5.2.2 <full@x.org> mailbox full"}
        results: dict[int, aiosmtp.SendResult] = {}

        async def send(smtp_pool: aiosmtp.SMTPPool, number: int) -> None:
            results[number] = await smtp_pool.sendmail(
                "a@x.org", [f"r{number}@x.org", "full@x.org"], body(number)
            )

        with anyio.fail_after(LIMIT):
            async with pool(server, lmtp=True) as smtp_pool, anyio.create_task_group() as tasks:
                for number in range(6):
                    tasks.start_soon(send, smtp_pool, number)
        assert server.opened == 1
    for number, result in results.items():
        assert result == {"full@x.org": (552, b"5.2.2 <full@x.org> mailbox full")}
        assert result.reply.code == 552
        assert number in range(6)
    assert len(results) == 6


async def test_no_overlap_without_pipelining() -> None:
    with BDATServer(chunking=False, pipelining=False) as server:
        server.hold_final_replies()
        with anyio.fail_after(LIMIT):
            async with pool(server) as smtp_pool, anyio.create_task_group() as tasks:
                for number in range(2):
                    tasks.start_soon(
                        smtp_pool.sendmail, "a@x.org", [f"r{number}@x.org"], body(number)
                    )
                await eventually(lambda: len(server.messages) == 1)
                await anyio.sleep(0.1)
                client = the_client(smtp_pool)
                # Only the reply to the first message's dot is owed: the second
                # waits for it before it sends anything.
                assert client._conn is not None
                assert client._conn.awaiting_replies == 1
                server.release_final_replies()
        assert len(server.messages) == 2
