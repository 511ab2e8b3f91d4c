"""SMTPConnection: the session driven with bytes only, as a driver would drive it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    NEED_DATA,
    Command,
    CommandKind,
    ForbiddenCharacterError,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    Reply,
    SMTPConnection,
    State,
)
from aiosmtp.protocol._state import LAST_IN_GROUP, SENDABLE

from ._chunking import FEEDERS

K = CommandKind

EHLO = Command.make("EHLO", "client.example")
LHLO = Command.make("LHLO", "client.example")
HELO = Command.make("HELO", "client.example")
MAIL = Command.make("MAIL", "FROM:<sender@example.com>")
RCPT = Command.make("RCPT", "TO:<one@example.com>")
RCPT2 = Command.make("RCPT", "TO:<two@example.com>")
RCPT3 = Command.make("RCPT", "TO:<three@example.com>")
DATA = Command.make("DATA")
RSET = Command.make("RSET")
NOOP = Command.make("NOOP")
VRFY = Command.make("VRFY", "someone")
QUIT = Command.make("QUIT")
STARTTLS = Command.make("STARTTLS")
AUTH_LOGIN = Command.make("AUTH", "LOGIN")
AUTH_PLAIN = Command.make("AUTH", "PLAIN AHRpbQB0YW5zdGFhZg==")

#: One command of every kind, for the (state x kind) checks.
COMMAND_OF_KIND = {
    K.GREETING: Command("", "", K.GREETING),
    K.EHLO: EHLO,
    K.HELO: HELO,
    K.MAIL: MAIL,
    K.RCPT: RCPT,
    K.DATA: DATA,
    K.END_OF_DATA: Command(".", "", K.END_OF_DATA),
    K.BDAT: Command("BDAT", "10", K.BDAT),
    K.BDAT_LAST: Command("BDAT", "10 LAST", K.BDAT_LAST),
    K.RSET: RSET,
    K.STARTTLS: STARTTLS,
    K.AUTH: AUTH_LOGIN,
    K.AUTH_RESPONSE: Command.auth_response("dGlt"),
    K.QUIT: QUIT,
    K.RECIPIENT_STATUS: Command("", "", K.RECIPIENT_STATUS),
    K.OTHER: NOOP,
}


def test_command_of_kind_covers_every_kind() -> None:
    assert set(COMMAND_OF_KIND) == set(CommandKind)
    assert all(command.kind is kind for kind, command in COMMAND_OF_KIND.items())


# -- helpers -------------------------------------------------------------------


def state_of(conn: SMTPConnection) -> State:
    """The state, read afresh (mypy would otherwise keep an earlier narrowing)."""
    return conn.state


def receive(conn: SMTPConnection, data: bytes) -> list[Reply]:
    """Feed ``data`` and return every reply it completes."""
    conn.receive_data(data)
    replies: list[Reply] = []
    while (reply := conn.next_reply()) is not NEED_DATA:
        assert isinstance(reply, Reply)
        replies.append(reply)
    return replies


def reply_to(conn: SMTPConnection, data: bytes) -> Reply:
    (reply,) = receive(conn, data)
    return reply


def connected(*, lmtp: bool = False) -> SMTPConnection:
    conn = SMTPConnection(lmtp=lmtp)
    assert reply_to(conn, b"220 mx.example.com ESMTP\r\n") == (220, b"mx.example.com ESMTP")
    assert state_of(conn) is State.READY
    return conn


def greeted(*, lmtp: bool = False) -> SMTPConnection:
    conn = connected(lmtp=lmtp)
    conn.send(LHLO if lmtp else EHLO)
    reply_to(conn, b"250-mx.example.com\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n")
    assert state_of(conn) is State.READY
    return conn


def in_transaction(*, lmtp: bool = False) -> SMTPConnection:
    conn = greeted(lmtp=lmtp)
    conn.send_many([MAIL, RCPT])
    receive(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
    assert state_of(conn) is State.TRANSACTION
    return conn


def in_data(*, lmtp: bool = False) -> SMTPConnection:
    conn = in_transaction(lmtp=lmtp)
    conn.send(DATA)
    reply_to(conn, b"354 go ahead\r\n")
    assert state_of(conn) is State.DATA
    return conn


def in_auth() -> SMTPConnection:
    conn = greeted()
    conn.send(AUTH_LOGIN)
    reply_to(conn, b"334 VXNlcm5hbWU6\r\n")
    assert state_of(conn) is State.AUTH
    return conn


def tls_pending() -> SMTPConnection:
    conn = greeted()
    conn.send(STARTTLS)
    reply_to(conn, b"220 2.0.0 Ready to start TLS\r\n")
    assert state_of(conn) is State.TLS_PENDING
    return conn


def closed() -> SMTPConnection:
    conn = greeted()
    conn.send(QUIT)
    reply_to(conn, b"221 2.0.0 Bye\r\n")
    assert state_of(conn) is State.CLOSED
    return conn


def ready_awaiting_mail() -> SMTPConnection:
    conn = greeted()
    conn.send(MAIL)
    return conn


def transaction_awaiting_rcpt() -> SMTPConnection:
    conn = in_transaction()
    conn.send(RCPT2)
    return conn


def after_end_of_data() -> SMTPConnection:
    conn = in_data()
    conn.send_data(b"Subject: x\r\n\r\nbody\r\n")
    conn.end_data()
    return conn


def closed_by_close() -> SMTPConnection:
    conn = in_transaction()
    conn.close()
    return conn


def awaiting_last_in_group(command: Command) -> Callable[[], SMTPConnection]:
    def setup() -> SMTPConnection:
        conn = greeted()
        conn.send(command)
        return conn

    return setup


SETUPS: dict[str, Callable[[], SMTPConnection]] = {
    "greeting": SMTPConnection,
    "greeting-lmtp": lambda: SMTPConnection(lmtp=True),
    "ready": greeted,
    "ready-lmtp": lambda: greeted(lmtp=True),
    "transaction": in_transaction,
    "data": in_data,
    "auth": in_auth,
    "tls-pending": tls_pending,
    "closed": closed,
    "closed-by-close": closed_by_close,
    "ready-awaiting-mail": ready_awaiting_mail,
    "transaction-awaiting-rcpt": transaction_awaiting_rcpt,
    "ready-after-end-of-data": after_end_of_data,
    "ready-awaiting-ehlo": awaiting_last_in_group(EHLO),
    "ready-awaiting-noop": awaiting_last_in_group(NOOP),
    "ready-awaiting-data": awaiting_last_in_group(DATA),
    "ready-awaiting-quit": awaiting_last_in_group(QUIT),
    "ready-awaiting-starttls": awaiting_last_in_group(STARTTLS),
    "ready-awaiting-auth": awaiting_last_in_group(AUTH_PLAIN),
}


@dataclass(frozen=True)
class Snapshot:
    state: State
    awaiting: int
    encoding: str
    accepted: int
    text: str

    @classmethod
    def of(cls, conn: SMTPConnection) -> Snapshot:
        return cls(
            conn.state,
            conn.awaiting_replies,
            conn.command_encoding,
            conn.accepted_recipients,
            repr(conn),
        )


# -- the greeting --------------------------------------------------------------


def test_a_new_connection_waits_for_the_greeting() -> None:
    conn = SMTPConnection()
    assert state_of(conn) is State.GREETING
    assert conn.awaiting_replies == 1
    assert conn.next_reply() is NEED_DATA
    assert conn.lmtp is False
    assert SMTPConnection(lmtp=True).lmtp is True


@pytest.mark.parametrize("command", [EHLO, HELO, NOOP, QUIT, MAIL, STARTTLS])
def test_nothing_is_sent_before_the_greeting(command: Command) -> None:
    conn = SMTPConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(command)
    assert state_of(conn) is State.GREETING
    assert conn.awaiting_replies == 1
    # The refusal changed nothing: the greeting is still what comes first.
    assert reply_to(conn, b"220 hi\r\n") == (220, b"hi")
    assert state_of(conn) is State.READY


@pytest.mark.parametrize("feeder", sorted(FEEDERS))
def test_greeting_however_it_arrives(feeder: str) -> None:
    conn = SMTPConnection()
    data = b"220-mx.example.com ESMTP\r\n220 no UCE\r\n"
    replies: list[Reply] = []
    for chunk in FEEDERS[feeder](data):
        assert replies == []
        replies += receive(conn, chunk)
    assert replies == [(220, b"mx.example.com ESMTP\nno UCE")]
    assert state_of(conn) is State.READY
    assert conn.awaiting_replies == 0


def test_refused_greeting_still_allows_quit() -> None:
    # RFC 5321 section 3.1: after 554 the client should send QUIT.
    conn = SMTPConnection()
    assert reply_to(conn, b"554 5.3.2 go away\r\n") == (554, b"5.3.2 go away")
    assert state_of(conn) is State.READY
    assert conn.send(QUIT) == b"QUIT\r\n"
    reply_to(conn, b"221 bye\r\n")
    assert state_of(conn) is State.CLOSED


def test_421_greeting_closes() -> None:
    conn = SMTPConnection()
    assert reply_to(conn, b"421 4.3.2 too busy\r\n").code == 421
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0
    with pytest.raises(LocalProtocolError):
        conn.send(QUIT)


def test_3xx_greeting_is_nonsense() -> None:
    conn = SMTPConnection()
    conn.receive_data(b"354 what\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


# -- a whole session -----------------------------------------------------------


def test_whole_session_on_the_wire() -> None:
    conn = SMTPConnection()
    sent = b""
    assert reply_to(conn, b"220 mx ESMTP\r\n") == (220, b"mx ESMTP")
    sent += conn.send(EHLO)
    assert reply_to(conn, b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n") == (
        250,
        b"mx\nPIPELINING\n8BITMIME",
    )
    sent += conn.send_many([MAIL, RCPT, RCPT2, DATA])
    assert conn.awaiting_replies == 4
    assert state_of(conn) is State.READY  # nothing is confirmed yet
    replies = receive(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no such user\r\n")
    assert replies == [(250, b"2.1.0 Ok"), (250, b"2.1.5 Ok"), (550, b"5.1.1 no such user")]
    assert state_of(conn) is State.TRANSACTION
    assert conn.accepted_recipients == 1
    assert conn.awaiting_replies == 1
    assert reply_to(conn, b"354 End data with <CR><LF>.<CR><LF>\r\n").code == 354
    assert state_of(conn) is State.DATA
    assert conn.awaiting_replies == 0
    sent += conn.send_data(b"Subject: test\n\n")
    sent += conn.send_data(b".leading dot\r\nlast line")
    sent += conn.end_data()
    assert state_of(conn) is State.READY
    assert conn.awaiting_replies == 1
    assert reply_to(conn, b"250 2.0.0 Ok: queued as 4F2\r\n") == (250, b"2.0.0 Ok: queued as 4F2")
    sent += conn.send(QUIT)
    assert reply_to(conn, b"221 2.0.0 Bye\r\n").code == 221
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0
    assert sent == (
        b"EHLO client.example\r\n"
        b"MAIL FROM:<sender@example.com>\r\n"
        b"RCPT TO:<one@example.com>\r\n"
        b"RCPT TO:<two@example.com>\r\n"
        b"DATA\r\n"
        b"Subject: test\r\n\r\n"
        b"..leading dot\r\nlast line"
        b"\r\n.\r\n"
        b"QUIT\r\n"
    )


@pytest.mark.parametrize("feeder", sorted(FEEDERS))
def test_pipelined_replies_in_order_however_they_arrive(feeder: str) -> None:
    conn = greeted()
    conn.send_many([RSET, MAIL, RCPT, RCPT2, RCPT3, DATA])
    data = (
        b"250 flushed\r\n250 sender ok\r\n250 one ok\r\n451 two later\r\n"
        b"250-three\r\n250 ok\r\n354 go\r\n"
    )
    replies: list[Reply] = []
    states: list[State] = []
    for chunk in FEEDERS[feeder](data):
        conn.receive_data(chunk)
        while (reply := conn.next_reply()) is not NEED_DATA:
            assert isinstance(reply, Reply)
            replies.append(reply)
            states.append(conn.state)
    assert [reply.code for reply in replies] == [250, 250, 250, 451, 250, 354]
    assert replies[4] == (250, b"three\nok")
    assert states == [State.READY] + [State.TRANSACTION] * 4 + [State.DATA]
    assert conn.accepted_recipients == 2


def test_send_many_returns_the_joined_lines() -> None:
    conn = greeted()
    assert conn.send_many([MAIL, RCPT, DATA]) == (
        b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<one@example.com>\r\nDATA\r\n"
    )
    assert conn.awaiting_replies == 3


def test_send_many_of_nothing() -> None:
    conn = greeted()
    assert conn.send_many([]) == b""
    assert conn.awaiting_replies == 0


def test_next_reply_without_data_needs_data() -> None:
    conn = greeted()
    conn.send(NOOP)
    assert conn.next_reply() is NEED_DATA
    conn.receive_data(b"25")
    assert conn.next_reply() is NEED_DATA
    conn.receive_data(b"0 ok\r")
    assert conn.next_reply() is NEED_DATA
    conn.receive_data(b"\n")
    assert conn.next_reply() == (250, b"ok")
    assert conn.next_reply() is NEED_DATA


def test_need_data_sentinel() -> None:
    assert isinstance(NEED_DATA, NeedData)
    assert repr(NEED_DATA) == "NEED_DATA"
    assert NEED_DATA is NeedData.NEED_DATA


def test_repr_shows_state_and_awaiting() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT])
    assert "READY" in repr(conn)
    assert "awaiting=2" in repr(conn)


# -- what may follow what -------------------------------------------------------


LAST_COMMANDS = [EHLO, HELO, DATA, QUIT, STARTTLS, AUTH_PLAIN, AUTH_LOGIN, NOOP, VRFY]


@pytest.mark.parametrize("last", LAST_COMMANDS, ids=lambda command: command.redacted())
@pytest.mark.parametrize("follower", [NOOP, RSET, MAIL, QUIT])
def test_nothing_may_follow_a_last_in_group_command_in_one_group(
    last: Command, follower: Command
) -> None:
    conn = greeted()
    before = Snapshot.of(conn)
    with pytest.raises(LocalProtocolError):
        conn.send_many([last, follower])
    assert Snapshot.of(conn) == before


@pytest.mark.parametrize("last", LAST_COMMANDS, ids=lambda command: command.redacted())
@pytest.mark.parametrize("follower", [NOOP, RSET, MAIL, QUIT])
def test_nothing_may_follow_a_last_in_group_command_before_its_reply(
    last: Command, follower: Command
) -> None:
    conn = greeted()
    conn.send(last)
    before = Snapshot.of(conn)
    with pytest.raises(LocalProtocolError):
        conn.send(follower)
    assert Snapshot.of(conn) == before


def test_data_may_end_a_group_of_mail_and_rcpt() -> None:
    conn = greeted()
    conn.send_many([RSET, MAIL, RCPT, RCPT2])
    conn.send(DATA)  # a second group while the first is unanswered is fine too
    assert conn.awaiting_replies == 5
    with pytest.raises(LocalProtocolError):
        conn.send(RCPT3)


@pytest.mark.parametrize(
    "group",
    [
        [MAIL, RCPT, DATA, RCPT2],
        [MAIL, NOOP, RCPT],
        [MAIL, RCPT, Command.auth_response("dGlt")],
        [MAIL, RCPT, Command("BDAT", "1", K.BDAT), Command(".", "", K.END_OF_DATA)],
        [MAIL, Command.make("RCPT", "TO:<jörg@example.com>"), DATA],  # not encodable
        [MAIL, EHLO, RSET],
    ],
    ids=["after-data", "after-noop", "auth-response", "end-of-data", "non-ascii", "after-ehlo"],
)
def test_send_many_is_all_or_nothing(group: list[Command]) -> None:
    conn = greeted()
    conn.send(RSET)  # something already awaited, which must stay as it was
    before = Snapshot.of(conn)
    with pytest.raises((LocalProtocolError, UnicodeEncodeError)):
        conn.send_many(group)
    assert Snapshot.of(conn) == before
    # Nothing of the refused group is awaited: the next replies pair as before.
    conn.send_many([MAIL, RCPT, DATA])
    assert receive(conn, b"250 reset\r\n250 sender\r\n250 rcpt\r\n354 go\r\n") == [
        (250, b"reset"),
        (250, b"sender"),
        (250, b"rcpt"),
        (354, b"go"),
    ]
    assert state_of(conn) is State.DATA


def test_send_many_all_or_nothing_keeps_the_encoding() -> None:
    conn = greeted()
    utf8_mail = Command.make("MAIL", "FROM:<jörg@example.com> SMTPUTF8")
    with pytest.raises(LocalProtocolError):
        conn.send_many([utf8_mail, DATA, NOOP])
    assert conn.command_encoding == "ascii"
    assert conn.awaiting_replies == 0
    with pytest.raises(UnicodeEncodeError):
        conn.send(Command.make("RCPT", "TO:<jörg@example.com>"))


def test_forbidden_characters_never_reach_the_connection() -> None:
    with pytest.raises(ForbiddenCharacterError):
        Command.make("RCPT", "TO:<a@example.com>\r\nRSET")


# -- unsolicited replies -------------------------------------------------------


def test_unsolicited_reply_closes() -> None:
    conn = greeted()
    conn.receive_data(b"250 nobody asked\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0
    with pytest.raises(LocalProtocolError):
        conn.send(NOOP)


@pytest.mark.parametrize("extra", [b"250 extra\r\n", b"250 partial", b"2", b"\r\n"])
def test_bytes_after_the_last_awaited_reply_are_unsolicited(extra: bytes) -> None:
    conn = greeted()
    conn.send(NOOP)
    conn.receive_data(b"250 ok\r\n" + extra)
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


def test_bytes_after_the_greeting_are_unsolicited() -> None:
    conn = SMTPConnection()
    conn.receive_data(b"220 hi\r\n250 early\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


def test_more_replies_than_commands_in_a_pipelined_group() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT])
    conn.receive_data(b"250 a\r\n250 b\r\n250 c\r\n")
    assert conn.next_reply() == (250, b"a")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


def test_reply_after_quit_is_unsolicited() -> None:
    conn = closed()
    conn.receive_data(b"250 still here\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


def test_malformed_reply_closes() -> None:
    conn = greeted()
    conn.send(NOOP)
    conn.receive_data(b"hello\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_reply()
    assert info.value.code == -1
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0


def test_over_long_reply_closes_with_code_500() -> None:
    conn = greeted()
    conn.send(NOOP)
    conn.receive_data(b"250 " + b"x" * 9000)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_reply()
    assert info.value.code == 500
    assert state_of(conn) is State.CLOSED


def test_limits_are_passed_to_the_parser() -> None:
    conn = SMTPConnection(max_line_length=10, max_reply_lines=2)
    conn.receive_data(b"220-a\r\n220-b\r\n220 c\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    conn = SMTPConnection(max_line_length=10)
    conn.receive_data(b"220 0123456789\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()


# -- 421 and other codes that do not fit ---------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2])
def test_421_closes_whatever_it_answers(position: int) -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT, DATA])
    replies = [b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"]
    replies[position] = b"421 4.4.2 timeout\r\n"
    got = receive(conn, b"".join(replies[: position + 1]))
    assert got[-1].code == 421
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0
    with pytest.raises(LocalProtocolError):
        conn.send(RSET)


def test_421_in_the_auth_exchange_closes() -> None:
    conn = in_auth()
    conn.send(Command.auth_response("dGlt"))
    assert reply_to(conn, b"421 bye\r\n").code == 421
    assert state_of(conn) is State.CLOSED


def test_421_to_the_end_of_data_closes() -> None:
    conn = in_data()
    conn.end_data()
    assert reply_to(conn, b"421 shutting down\r\n").code == 421
    assert state_of(conn) is State.CLOSED


@pytest.mark.parametrize(
    "command", [MAIL, RCPT, RSET, EHLO, HELO, QUIT, STARTTLS], ids=lambda c: c.verb
)
@pytest.mark.parametrize("code", [334, 354, 300])
def test_3xx_to_a_command_that_waits_for_nothing_is_nonsense(command: Command, code: int) -> None:
    conn = greeted() if command is not RCPT else in_transaction()
    conn.send(command)
    conn.receive_data(b"%d continue\r\n" % code)
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0


def test_3xx_to_mail_in_a_pipelined_group() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT, DATA])
    conn.receive_data(b"354 not now\r\n250 ok\r\n354 go\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


def test_3xx_to_the_end_of_data_is_nonsense() -> None:
    conn = in_data()
    conn.end_data()
    conn.receive_data(b"354 again?\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED


def test_3xx_to_other_commands_is_allowed() -> None:
    # docmd() may send anything; an unknown command may well want more.
    conn = greeted()
    conn.send(Command.make("XFOO"))
    assert reply_to(conn, b"334 more\r\n") == (334, b"more")
    assert state_of(conn) is State.READY


# -- the data phase ------------------------------------------------------------


def test_data_phase() -> None:
    conn = in_data()
    assert conn.send_data(b"a\n") == b"a\r\n"
    assert conn.send_data(b".b") == b"..b"
    assert conn.send_data(b"\r") == b""
    assert conn.send_data(b"\n.\r\n") == b"\r\n..\r\n"
    assert conn.end_data() == b".\r\n"
    assert state_of(conn) is State.READY
    assert conn.awaiting_replies == 1
    assert reply_to(conn, b"250 queued\r\n") == (250, b"queued")
    assert state_of(conn) is State.READY
    assert conn.awaiting_replies == 0


def test_empty_message() -> None:
    conn = in_data()
    assert conn.end_data() == b".\r\n"


def test_message_without_final_line_ending() -> None:
    conn = in_data()
    assert conn.send_data(b"no newline") == b"no newline"
    assert conn.end_data() == b"\r\n.\r\n"


def test_each_data_phase_starts_afresh() -> None:
    conn = in_data()
    conn.send_data(b"half a line")
    conn.end_data()
    reply_to(conn, b"250 ok\r\n")
    conn.send_many([MAIL, RCPT, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert conn.send_data(b".dot at the start") == b"..dot at the start"
    assert conn.end_data() == b"\r\n.\r\n"


@pytest.mark.parametrize("setup", ["ready", "transaction", "auth", "closed", "greeting"])
def test_data_only_in_the_data_phase(setup: str) -> None:
    conn = SETUPS[setup]()
    before = Snapshot.of(conn)
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        conn.end_data()
    assert Snapshot.of(conn) == before


def test_data_may_not_be_sent_after_the_end() -> None:
    conn = in_data()
    conn.end_data()
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"more")
    with pytest.raises(LocalProtocolError):
        conn.end_data()


@pytest.mark.parametrize("command", [NOOP, RSET, MAIL, QUIT, EHLO, DATA])
def test_no_command_in_the_data_phase(command: Command) -> None:
    conn = in_data()
    before = Snapshot.of(conn)
    with pytest.raises(LocalProtocolError):
        conn.send(command)
    assert Snapshot.of(conn) == before


def test_end_of_data_cannot_be_sent_as_a_command() -> None:
    conn = in_data()
    with pytest.raises(LocalProtocolError):
        conn.send(COMMAND_OF_KIND[K.END_OF_DATA])
    assert state_of(conn) is State.DATA


def test_refused_data_leaves_the_transaction_open() -> None:
    conn = in_transaction()
    conn.send(DATA)
    assert reply_to(conn, b"554 no valid recipients\r\n").code == 554
    assert state_of(conn) is State.TRANSACTION
    conn.send(RSET)
    reply_to(conn, b"250 ok\r\n")
    assert state_of(conn) is State.READY


def test_354_after_a_refused_mail_still_opens_the_data_phase() -> None:
    # A broken server: the client must end the data with a lone dot (API.md).
    conn = greeted()
    conn.send_many([MAIL, RCPT, DATA])
    receive(conn, b"550 no\r\n503 no\r\n354 go\r\n")
    assert state_of(conn) is State.DATA
    assert conn.end_data() == b".\r\n"
    reply_to(conn, b"554 no transaction\r\n")
    conn.send(RSET)
    assert reply_to(conn, b"250 ok\r\n") == (250, b"ok")
    assert state_of(conn) is State.READY
    assert conn.awaiting_replies == 0


def test_end_of_data_may_be_followed_by_the_next_transaction() -> None:
    # RFC 2920 section 3.1: message content may be the first "command" of a group.
    conn = in_data()
    conn.end_data()
    conn.send_many([MAIL, RCPT, DATA])
    replies = receive(conn, b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [reply.code for reply in replies] == [250, 250, 250, 354]
    assert state_of(conn) is State.DATA


# -- transactions --------------------------------------------------------------


def test_rset_ends_the_transaction() -> None:
    conn = in_transaction()
    conn.send(RSET)
    reply_to(conn, b"250 flushed\r\n")
    assert state_of(conn) is State.READY
    assert conn.accepted_recipients == 0


@pytest.mark.parametrize("command", [EHLO, HELO])
def test_ehlo_ends_the_transaction(command: Command) -> None:
    conn = in_transaction()
    conn.send(command)
    reply_to(conn, b"250 mx\r\n")
    assert state_of(conn) is State.READY


def test_refused_mail_opens_no_transaction() -> None:
    conn = greeted()
    conn.send(MAIL)
    assert reply_to(conn, b"550 5.7.1 no\r\n").code == 550
    assert state_of(conn) is State.READY


def test_accepted_recipients_are_counted() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT, RCPT2, RCPT3])
    receive(conn, b"250 ok\r\n250 ok\r\n550 no\r\n251 forwarded\r\n")
    assert conn.accepted_recipients == 2


def test_accepted_recipients_are_those_of_the_current_transaction() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT, RCPT2])
    receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n")
    assert conn.accepted_recipients == 2
    conn.send(RSET)
    reply_to(conn, b"250 ok\r\n")
    assert conn.accepted_recipients == 0
    conn.send_many([MAIL, RCPT])
    receive(conn, b"250 ok\r\n250 ok\r\n")
    assert conn.accepted_recipients == 1


def test_no_recipients_remain_after_a_finished_transaction() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT, RCPT2, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.end_data()
    reply_to(conn, b"250 queued\r\n")
    conn.send(RSET)
    reply_to(conn, b"250 ok\r\n")
    # No transaction is open: it has no accepted recipients.
    assert conn.accepted_recipients == 0
    conn.send(MAIL)
    reply_to(conn, b"452 too many transactions\r\n")
    assert conn.accepted_recipients == 0


# -- SMTPUTF8 ------------------------------------------------------------------

UTF8_MAIL = Command.make("MAIL", "FROM:<jörg@exämple.com> SMTPUTF8 BODY=8BITMIME")
UTF8_RCPT = Command.make("RCPT", "TO:<zoë@example.com>")


def test_smtputf8_mail_makes_the_transaction_utf8() -> None:
    conn = greeted()
    assert conn.command_encoding == "ascii"
    wire = conn.send_many([UTF8_MAIL, UTF8_RCPT, DATA])
    assert (
        wire
        == (
            "MAIL FROM:<jörg@exämple.com> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<zoë@example.com>\r\n"
            "DATA\r\n"
        ).encode()
    )
    assert conn.command_encoding == "utf-8"
    receive(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send_data("Grüße\r\n".encode())
    conn.end_data()
    # The end of the data ends the transaction and its encoding.
    assert conn.command_encoding == "ascii"
    reply_to(conn, b"250 ok\r\n")
    with pytest.raises(UnicodeEncodeError):
        conn.send(UTF8_RCPT)


def test_smtputf8_in_separate_sends() -> None:
    conn = greeted()
    conn.send(UTF8_MAIL)
    reply_to(conn, b"250 ok\r\n")
    assert conn.send(UTF8_RCPT) == "RCPT TO:<zoë@example.com>\r\n".encode()


def test_smtputf8_keyword_is_case_insensitive() -> None:
    conn = greeted()
    conn.send(Command.make("MAIL", "FROM:<a@example.com> smtputf8"))
    assert conn.command_encoding == "utf-8"


def test_smtputf8_inside_an_address_is_not_the_keyword() -> None:
    conn = greeted()
    conn.send(Command.make("MAIL", "FROM:<SMTPUTF8@example.com>"))
    assert conn.command_encoding == "ascii"


def test_non_ascii_mail_without_smtputf8_is_refused() -> None:
    conn = greeted()
    with pytest.raises(UnicodeEncodeError):
        conn.send(Command.make("MAIL", "FROM:<jörg@example.com>"))
    assert conn.awaiting_replies == 0
    assert conn.command_encoding == "ascii"


@pytest.mark.parametrize("command", [RSET, EHLO, HELO])
def test_rset_ehlo_helo_end_the_utf8_transaction(command: Command) -> None:
    conn = greeted()
    conn.send(UTF8_MAIL)
    reply_to(conn, b"250 ok\r\n")
    conn.send(command)
    assert conn.command_encoding == "ascii"


def test_a_plain_mail_ends_the_utf8_mode() -> None:
    conn = greeted()
    conn.send(UTF8_MAIL)
    reply_to(conn, b"250 ok\r\n")
    conn.send(RSET)
    reply_to(conn, b"250 ok\r\n")
    conn.send(MAIL)
    assert conn.command_encoding == "ascii"


def test_bdat_last_ends_the_utf8_transaction() -> None:
    conn = greeted()
    conn.send_many([UTF8_MAIL, UTF8_RCPT])
    conn.send_bdat(3, last=True)
    assert conn.command_encoding == "ascii"


# -- STARTTLS ------------------------------------------------------------------


def test_starttls() -> None:
    conn = greeted()
    assert conn.send(STARTTLS) == b"STARTTLS\r\n"
    assert reply_to(conn, b"220 2.0.0 Ready to start TLS\r\n").code == 220
    assert state_of(conn) is State.TLS_PENDING
    assert conn.awaiting_replies == 0
    for command in (EHLO, NOOP, QUIT):
        with pytest.raises(LocalProtocolError):
            conn.send(command)
    assert state_of(conn) is State.TLS_PENDING
    conn.start_tls_done()
    assert state_of(conn) is State.READY
    assert conn.command_encoding == "ascii"
    # RFC 3207 section 4.2: no new greeting; the client starts with EHLO.
    assert conn.send(EHLO) == b"EHLO client.example\r\n"
    reply_to(conn, b"250 mx\r\n")


@pytest.mark.parametrize(
    "injected", [b"250 injected\r\n", b"250-inj", b"2", b"\r\n", b"220 twice\r\n"]
)
@pytest.mark.parametrize("feeder", sorted(FEEDERS))
def test_starttls_with_plaintext_after_the_220_is_an_attack(injected: bytes, feeder: str) -> None:
    # CVE-2011-0411: bytes after the 220 arrived before TLS but would be read as
    # if they came through it. They are refused in whatever chunks they come,
    # as long as they came before the 220 was taken.
    conn = greeted()
    conn.send(STARTTLS)
    data = b"220 Ready\r\n" + injected
    if feeder == "whole":
        conn.receive_data(data)
    else:
        for chunk in FEEDERS[feeder](data[:-1]):
            conn.receive_data(chunk)
        conn.receive_data(data[-1:])
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()
    assert state_of(conn) is State.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()


def test_starttls_refused() -> None:
    conn = greeted()
    conn.send(STARTTLS)
    assert reply_to(conn, b"454 4.7.0 TLS not available\r\n").code == 454
    assert state_of(conn) is State.READY
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()


@pytest.mark.parametrize("setup", ["greeting", "ready", "transaction", "data", "auth", "closed"])
def test_start_tls_done_only_when_pending(setup: str) -> None:
    conn = SETUPS[setup]()
    before = Snapshot.of(conn)
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()
    assert Snapshot.of(conn) == before


def test_start_tls_done_only_once() -> None:
    conn = tls_pending()
    conn.start_tls_done()
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()


# -- AUTH ----------------------------------------------------------------------


def test_auth_login_exchange() -> None:
    conn = greeted()
    assert conn.send(AUTH_LOGIN) == b"AUTH LOGIN\r\n"
    assert reply_to(conn, b"334 VXNlcm5hbWU6\r\n") == (334, b"VXNlcm5hbWU6")
    assert state_of(conn) is State.AUTH
    for command in (NOOP, RSET, QUIT, MAIL, AUTH_LOGIN, EHLO):
        before = Snapshot.of(conn)
        with pytest.raises(LocalProtocolError):
            conn.send(command)
        assert Snapshot.of(conn) == before
    assert conn.send(Command.auth_response("dGlt")) == b"dGlt\r\n"
    assert reply_to(conn, b"334 UGFzc3dvcmQ6\r\n").code == 334
    assert state_of(conn) is State.AUTH
    assert conn.send(Command.auth_response("dGFuc3RhYWY=")) == b"dGFuc3RhYWY=\r\n"
    assert reply_to(conn, b"235 2.7.0 Authentication successful\r\n").code == 235
    assert state_of(conn) is State.READY
    conn.send(NOOP)


def test_auth_response_must_wait_for_the_challenge() -> None:
    conn = in_auth()
    conn.send(Command.auth_response("dGlt"))
    with pytest.raises(LocalProtocolError):
        conn.send(Command.auth_response("dGlt"))
    assert conn.awaiting_replies == 1


def test_auth_with_initial_response() -> None:
    conn = greeted()
    conn.send(AUTH_PLAIN)
    assert reply_to(conn, b"235 ok\r\n").code == 235
    assert state_of(conn) is State.READY


@pytest.mark.parametrize("code", [535, 454, 501, 504])
def test_auth_refused_at_once(code: int) -> None:
    conn = greeted()
    conn.send(AUTH_PLAIN)
    reply_to(conn, b"%d no\r\n" % code)
    assert state_of(conn) is State.READY


@pytest.mark.parametrize("code", [535, 501])
def test_auth_refused_after_a_response(code: int) -> None:
    conn = in_auth()
    conn.send(Command.auth_response("*"))  # RFC 4954: "*" cancels
    reply_to(conn, b"%d cancelled\r\n" % code)
    assert state_of(conn) is State.READY
    conn.send(NOOP)


def test_auth_response_outside_auth_is_refused() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        conn.send(Command.auth_response("dGlt"))
    assert conn.awaiting_replies == 0


# -- BDAT ----------------------------------------------------------------------


def test_bdat_lines() -> None:
    conn = in_transaction()
    assert conn.send_bdat(1024, last=False) == b"BDAT 1024\r\n"
    reply_to(conn, b"250 1024 octets received\r\n")
    assert state_of(conn) is State.TRANSACTION
    assert conn.send_bdat(0, last=True) == b"BDAT 0 LAST\r\n"
    reply_to(conn, b"250 queued\r\n")
    assert state_of(conn) is State.READY


def test_bdat_pipelined_after_mail_and_rcpt() -> None:
    conn = greeted()
    wire = conn.send_many([MAIL, RCPT]) + conn.send_bdat(5, last=True)
    assert wire.endswith(b"RCPT TO:<one@example.com>\r\nBDAT 5 LAST\r\n")
    assert conn.awaiting_replies == 3
    receive(conn, b"250 ok\r\n250 ok\r\n250 queued\r\n")
    assert state_of(conn) is State.READY


def test_refused_bdat_keeps_the_transaction_open() -> None:
    # RFC 3030 section 4.2: after a refused chunk the transaction stays until RSET.
    conn = in_transaction()
    conn.send_bdat(10, last=True)
    reply_to(conn, b"554 no\r\n")
    assert state_of(conn) is State.TRANSACTION


def test_bdat_size_must_not_be_negative() -> None:
    conn = in_transaction()
    with pytest.raises(LocalProtocolError):
        conn.send_bdat(-1, last=False)
    assert conn.awaiting_replies == 0


def test_bdat_in_the_data_phase_is_refused() -> None:
    conn = in_data()
    with pytest.raises(LocalProtocolError):
        conn.send_bdat(1, last=True)


def test_3xx_to_bdat_is_nonsense() -> None:
    conn = in_transaction()
    conn.send_bdat(1, last=False)
    conn.receive_data(b"354 go\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()


# -- LMTP ----------------------------------------------------------------------


def test_lmtp_one_reply_per_accepted_recipient() -> None:
    conn = greeted(lmtp=True)
    conn.send_many([MAIL, RCPT, RCPT2, RCPT3, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n550 unknown\r\n250 ok\r\n354 go\r\n")
    assert conn.accepted_recipients == 2
    conn.send_data(b"hello\r\n")
    assert conn.end_data() == b".\r\n"
    assert conn.awaiting_replies == 1  # the others are known once the first arrives
    assert reply_to(conn, b"250 2.1.5 one delivered\r\n").code == 250
    assert conn.awaiting_replies == 1
    assert reply_to(conn, b"452 4.2.2 three over quota\r\n").code == 452
    assert conn.awaiting_replies == 0
    assert state_of(conn) is State.READY
    # A third reply is one too many.
    conn.receive_data(b"250 extra\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_reply()


def test_lmtp_replies_arriving_together() -> None:
    conn = greeted(lmtp=True)
    conn.send_many([MAIL, RCPT, RCPT2, RCPT3, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.end_data()
    replies = receive(conn, b"250 a\r\n250 b\r\n550 c\r\n")
    assert [reply.message for reply in replies] == [b"a", b"b", b"c"]
    assert conn.awaiting_replies == 0


def test_lmtp_end_of_data_pipelined_with_the_next_transaction() -> None:
    conn = greeted(lmtp=True)
    conn.send_many([MAIL, RCPT, RCPT2, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.end_data()
    conn.send_many([MAIL, RCPT, DATA])
    replies = receive(conn, b"250 a\r\n250 b\r\n250 mail\r\n250 rcpt\r\n354 go\r\n")
    assert [reply.message for reply in replies] == [b"a", b"b", b"mail", b"rcpt", b"go"]
    assert state_of(conn) is State.DATA
    assert conn.accepted_recipients == 1


def test_lmtp_bdat_last() -> None:
    conn = greeted(lmtp=True)
    conn.send_many([MAIL, RCPT, RCPT2])
    conn.send_bdat(4, last=True)
    replies = receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n250 one\r\n250 two\r\n")
    assert [reply.message for reply in replies] == [b"ok", b"ok", b"ok", b"one", b"two"]
    assert conn.awaiting_replies == 0
    assert state_of(conn) is State.READY


def test_lmtp_with_no_accepted_recipient_expects_one_reply() -> None:
    conn = greeted(lmtp=True)
    conn.send_many([MAIL, RCPT, DATA])
    receive(conn, b"250 ok\r\n550 no\r\n354 go\r\n")
    conn.end_data()
    reply_to(conn, b"554 no valid recipients\r\n")
    assert conn.awaiting_replies == 0


def test_smtp_expects_one_reply_to_the_data_whatever_the_recipients() -> None:
    conn = greeted()
    conn.send_many([MAIL, RCPT, RCPT2, RCPT3, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.end_data()
    reply_to(conn, b"250 queued\r\n")
    assert conn.awaiting_replies == 0


def lmtp_after_a_delivery_to_two() -> SMTPConnection:
    conn = greeted(lmtp=True)
    conn.send_many([MAIL, RCPT, RCPT2, DATA])
    receive(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    conn.end_data()
    assert receive(conn, b"250 one\r\n250 two\r\n") == [(250, b"one"), (250, b"two")]
    assert conn.awaiting_replies == 0
    return conn


def test_lmtp_refused_mail_after_a_delivery_bdat() -> None:
    # The second transaction's MAIL is refused, so no recipient can be accepted and
    # the server answers the last BDAT once. The count of the first transaction's
    # recipients must not make the session wait for a reply that never comes.
    conn = lmtp_after_a_delivery_to_two()
    conn.send_many([MAIL, RCPT])
    conn.send_bdat(4, last=True)
    replies = receive(conn, b"452 4.3.1 try later\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n")
    assert [reply.code for reply in replies] == [452, 503, 503]
    assert conn.accepted_recipients == 0
    assert conn.awaiting_replies == 0


def test_lmtp_refused_mail_after_a_delivery_data_354() -> None:
    # API.md: after a 354 to a refused transaction, the client sends a lone dot
    # and RSET. The RSET's reply must be paired with RSET.
    conn = lmtp_after_a_delivery_to_two()
    conn.send_many([MAIL, RCPT, DATA])
    receive(conn, b"452 try later\r\n503 no MAIL\r\n354 go\r\n")
    assert state_of(conn) is State.DATA
    conn.end_data()
    reply_to(conn, b"554 no valid recipients\r\n")
    assert conn.awaiting_replies == 0
    conn.send(RSET)
    assert reply_to(conn, b"250 2.0.0 flushed\r\n") == (250, b"2.0.0 flushed")
    assert conn.awaiting_replies == 0


# -- close ---------------------------------------------------------------------


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_close_from_anywhere(setup: str) -> None:
    conn = SETUPS[setup]()
    conn.close()
    assert state_of(conn) is State.CLOSED
    assert conn.awaiting_replies == 0
    for command in (NOOP, QUIT):
        with pytest.raises(LocalProtocolError):
            conn.send(command)
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")
    conn.close()  # idempotent
    assert state_of(conn) is State.CLOSED


def test_quit_refused_still_closes() -> None:
    conn = greeted()
    conn.send(QUIT)
    reply_to(conn, b"500 what\r\n")
    assert state_of(conn) is State.CLOSED


# -- (state x command kind) ----------------------------------------------------


def check_send(conn: SMTPConnection, command: Command) -> None:
    """Sending is either refused with nothing changed, or allowed by SENDABLE."""
    before = Snapshot.of(conn)
    kind = command.kind
    try:
        wire = conn.send(command)
    except LocalProtocolError:
        assert Snapshot.of(conn) == before
        return
    assert kind in SENDABLE[before.state]
    assert kind is not K.END_OF_DATA
    assert wire.endswith(b"\r\n")
    assert state_of(conn) is before.state  # sending never moves the state
    assert conn.awaiting_replies == before.awaiting + 1


@pytest.mark.parametrize(("setup", "kind"), list(itertools.product(sorted(SETUPS), list(K))))
def test_every_state_and_kind(setup: str, kind: CommandKind) -> None:
    conn = SETUPS[setup]()
    check_send(conn, COMMAND_OF_KIND[kind])


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_sendable_means_sent_when_nothing_blocks(setup: str) -> None:
    # The converse: with no last-in-group command awaited, SENDABLE is exact.
    for kind in K:
        conn = SETUPS[setup]()
        allowed = kind in SENDABLE[conn.state] and kind is not K.END_OF_DATA
        blocked = setup.startswith("ready-awaiting-") and setup != "ready-awaiting-mail"
        if allowed and not blocked:
            conn.send(COMMAND_OF_KIND[kind])
        else:
            with pytest.raises(LocalProtocolError):
                conn.send(COMMAND_OF_KIND[kind])


@given(st.sampled_from(sorted(SETUPS)), st.lists(st.sampled_from(list(K)), max_size=4))
@settings(max_examples=300, deadline=None)
def test_send_many_is_refused_whole_or_allowed_per_command(
    setup: str, kinds: list[CommandKind]
) -> None:
    conn = SETUPS[setup]()
    before = Snapshot.of(conn)
    commands = [COMMAND_OF_KIND[kind] for kind in kinds]
    try:
        conn.send_many(commands)
    except LocalProtocolError:
        assert Snapshot.of(conn) == before
        return
    assert all(kind in SENDABLE[before.state] for kind in kinds)
    assert all(kind not in LAST_IN_GROUP for kind in kinds[:-1])
    assert state_of(conn) is before.state
    assert conn.awaiting_replies == before.awaiting + len(kinds)


# A random session: commands of any kind, replies with any code, data, TLS, close.
_codes = st.sampled_from([220, 221, 235, 250, 251, 334, 354, 421, 450, 452, 454, 501, 503, 550])
_actions = st.one_of(
    st.tuples(st.just("send"), st.lists(st.sampled_from(list(K)), min_size=1, max_size=3)),
    st.tuples(st.just("reply"), _codes),
    st.tuples(st.just("data"), st.binary(max_size=8)),
    st.tuples(st.just("end"), st.none()),
    st.tuples(st.just("bdat"), st.booleans()),
    st.tuples(st.just("tls"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


@given(st.booleans(), st.lists(_actions, max_size=40))
@settings(max_examples=400, deadline=None)
def test_random_sessions_keep_the_invariants(
    lmtp: bool, actions: list[tuple[str, object]]
) -> None:
    conn = SMTPConnection(lmtp=lmtp)
    for action, argument in actions:
        before = Snapshot.of(conn)
        try:
            if action == "send":
                assert isinstance(argument, list)
                conn.send_many([COMMAND_OF_KIND[kind] for kind in argument])
            elif action == "reply":
                assert isinstance(argument, int)
                conn.receive_data(b"%d text\r\n" % argument)
                reply = conn.next_reply()
                assert reply == (argument, b"text")
                assert before.awaiting > 0
                if argument == 421:
                    assert state_of(conn) is State.CLOSED
            elif action == "data":
                assert isinstance(argument, bytes)
                conn.send_data(argument)
                assert before.state is State.DATA
            elif action == "end":
                conn.end_data()
                assert before.state is State.DATA
                assert state_of(conn) is State.READY
            elif action == "bdat":
                assert isinstance(argument, bool)
                conn.send_bdat(1, last=argument)
            elif action == "tls":
                conn.start_tls_done()
                assert before.state is State.TLS_PENDING
                assert state_of(conn) is State.READY
            else:
                conn.close()
                assert state_of(conn) is State.CLOSED
        except LocalProtocolError:
            assert Snapshot.of(conn) == before
        except RemoteProtocolError:
            assert action == "reply"
            assert state_of(conn) is State.CLOSED
        # Invariants of every reachable configuration.
        if conn.state is State.CLOSED:
            assert conn.awaiting_replies == 0
        if conn.state is State.GREETING:
            assert conn.awaiting_replies == 1
        if conn.state in (State.DATA, State.TLS_PENDING):
            assert conn.awaiting_replies == 0
        if conn.state is State.AUTH:
            assert conn.awaiting_replies <= 1
        assert conn.accepted_recipients >= 0
        assert conn.command_encoding == "ascii"  # no SMTPUTF8 MAIL in these sessions
