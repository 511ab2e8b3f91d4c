"""SMTP smuggling and command injection: none of it reaches the wire.

SMTP smuggling (SEC Consult, December 2023; CVE-2023-51764/51765/51766) hides a
second message inside the first behind an end-of-data sequence that the sending
side does not see as one and a lenient receiving side does: a bare LF or bare CR
instead of CRLF around the dot. The table below holds the published variants and
a few mixed ones; each is put at the start, in the middle and at the end of a
message, followed by a smuggled transaction, and:

- in the sans-IO core, encoded whole, a byte at a time, and cut in two or three
  anywhere around it: the payload has no bare CR or LF, its only end-of-data
  sequence is the final one, and un-stuffed it is the normalised message;
- end to end, through ``aiosmtp.SMTP`` on both anyio backends, over DATA and over
  BDAT (tests/bdat_server.py records every byte): the raw bytes after DATA hold
  exactly one end of data, at the end, and BDAT chunks are exactly as long as
  declared; the server saw one transaction and no smuggled command.

Then the other way in, command arguments: CR, LF or NUL in an address, an option,
an EHLO name, a VRFY or EXPN argument, a docmd verb or argument, an AUTH mechanism
raises ValueError before a byte of that command is written, and the session stays
usable (a scripted server fails the test on any unexpected byte).
"""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage

import anyio
import pytest

import aiosmtp
from aiosmtp._body import MessageSource

from .. import hypothesis_profiles  # noqa: F401  (registers and loads the profiles)
from ..bdat_server import BDATServer
from ..scripted import (
    CLIENT_NAME,
    ScriptedServers,
    ServerConnection,
    call,
    client,
    ehlo_ok,
    expect,
    greet,
    quit_ok,
    send,
)
from ._chunking import split_at

END_OF_DATA = b"\r\n.\r\n"
#: Bounds each end-to-end test as a whole; never reached when it passes.
LIMIT = 10

#: (name, the bytes that a lenient receiver might take for the end of the data).
VARIANTS = [
    ("bare LF", b"\n"),
    ("bare CR", b"\r"),
    ("LF.LF", b"\n.\n"),
    ("CR.CR", b"\r.\r"),
    ("CRLF.CR", b"\r\n.\r"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("CR.CRLF", b"\r.\r\n"),
    ("LF.CR", b"\n.\r"),
    ("CR.LF", b"\r.\n"),
    ("CRLF.CRLF", b"\r\n.\r\n"),  # the real thing inside a message: stuffed
    ("CRLF..CRLF", b"\r\n..\r\n"),
    ("CRLF NUL . CRLF", b"\r\n\0.\r\n"),
    ("CRLF . NUL CRLF", b"\r\n.\0\r\n"),
    ("CRLF.CR CRLF", b"\r\n.\r\r\n"),
    ("LF CR.CRLF", b"\n\r.\r\n"),
    ("CR CRLF.LF LF", b"\r\r\n.\n\n"),
    ("all of them", b"\n.\n\r.\r\r\n.\r\n.\r\n\n.\r\n\r.\r\n\r\n.\n"),
]
VARIANT_IDS = [name for name, _ in VARIANTS]

SMUGGLED = (
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    b"From: ceo@example.org\r\nSubject: smuggled\r\n\r\npay the invoice\r\n"
)
HEAD = b"From: a@example.org\r\nSubject: hello\r\n\r\nfirst line"


def message(variant: bytes, where: str) -> tuple[bytes, list[int]]:
    """A message with ``variant`` (and a smuggled transaction after it) at the
    start, in the middle or at the end; and the offset of each copy of it."""
    if where == "start":
        return variant + SMUGGLED + b"real text\r\n", [0]
    if where == "middle":
        return HEAD + variant + SMUGGLED + b"last line\r\n", [len(HEAD)]
    if where == "end":
        return HEAD + variant, [len(HEAD)]
    assert where == "everywhere"
    middle = b"middle line"
    data = variant + SMUGGLED + middle + variant + SMUGGLED + b"tail" + variant
    second = len(variant + SMUGGLED + middle)
    return data, [0, second, len(data) - len(variant)]


def cuts_inside(variant: bytes, offsets: list[int]) -> list[int]:
    """Cut points just before, inside and just after every copy of the variant."""
    return [offset + index for offset in offsets for index in range(len(variant) + 1)]


# -- the models (as in test_fuzz_encoders, from the RFC rather than the code) ----------------


def stored(data: bytes) -> bytes:
    """What the server must store: line endings normalised, ended by one."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data + b"\r\n" if data and not data.endswith(b"\r\n") else data


def unstuffed(payload: bytes) -> bytes:
    body = payload[: -len(b".\r\n")]
    return b"\r\n".join(line[1:] if line[:1] == b"." else line for line in body.split(b"\r\n"))


def assert_one_end_of_data(payload: bytes) -> None:
    """The raw DATA payload: no bare CR or LF, the only end of data at the end."""
    assert payload.count(b"\r") == payload.count(b"\n") == payload.count(b"\r\n"), payload
    wire = b"\r\n" + payload  # the DATA command's own CRLF comes first
    assert wire.count(END_OF_DATA) == 1, payload
    assert wire.endswith(END_OF_DATA), payload
    for lenient in (b"\n.\n", b"\r.\r", b"\n.\r", b"\r.\n", b"\r\n.\r\n"):
        # A receiver that takes any of these for the end finds none before (or
        # except inside) the real one.
        found = wire.find(lenient)
        assert found == -1 or found >= len(wire) - len(END_OF_DATA), lenient


# -- the sans-IO encoder ------------------------------------------------------------------


def encode(chunks: Iterator[bytes] | list[bytes]) -> bytes:
    encoder = aiosmtp.protocol.DataEncoder()
    return b"".join([*(encoder.encode(chunk) for chunk in chunks), encoder.finish()])


@pytest.mark.parametrize("where", ["start", "middle", "end", "everywhere"])
@pytest.mark.parametrize("variant", [v for _, v in VARIANTS], ids=VARIANT_IDS)
def test_no_variant_reaches_the_payload(variant: bytes, where: str) -> None:
    data, offsets = message(variant, where)
    expected = encode([data])
    assert_one_end_of_data(expected)
    assert unstuffed(expected) == stored(data)
    # A byte at a time, and cut in two anywhere.
    assert encode(data[i : i + 1] for i in range(len(data))) == expected
    for cut in range(len(data) + 1):
        assert encode([data[:cut], data[cut:]]) == expected, cut
    # Cut in three around every copy of the variant, empty chunks included.
    points = sorted(set(cuts_inside(variant, offsets)) | {0, len(data)})
    for first, second in itertools.combinations_with_replacement(points, 2):
        chunks = [data[:first], data[first:second], data[second:]]
        assert encode(chunks) == expected, (first, second)


@pytest.mark.parametrize("variant", [v for _, v in VARIANTS], ids=VARIANT_IDS)
def test_no_variant_survives_bdat_normalisation(variant: bytes) -> None:
    data, offsets = message(variant, "everywhere")
    for cut in cuts_inside(variant, offsets):
        normaliser = aiosmtp.protocol.LineEndingNormalizer()
        pieces = [normaliser.feed(data[:cut]), normaliser.feed(data[cut:]), normaliser.finish()]
        body = b"".join(pieces)
        assert body == stored(data)[: len(body)]
        for piece in pieces:
            assert piece.count(b"\r") == piece.count(b"\n") == piece.count(b"\r\n"), piece


# -- end to end, DATA and BDAT, both backends ----------------------------------------------


async def in_chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def payload_after_data(received: bytes) -> bytes:
    """The raw bytes the client sent between the DATA command and QUIT."""
    envelope = b"RCPT TO:<b@example.org>\r\nDATA\r\n"
    start = received.index(envelope) + len(envelope)
    assert received.endswith(b"QUIT\r\n")
    return received[start : -len(b"QUIT\r\n")]


def bdat_chunks(received: bytes) -> list[bytes]:
    """The BDAT chunks as a server reads them: each exactly as long as declared."""
    envelope = b"RCPT TO:<b@example.org>\r\n"
    position = received.index(envelope) + len(envelope)
    chunks: list[bytes] = []
    command = re.compile(rb"BDAT ([0-9]+)( LAST)?\r\n")
    while received[position:] != b"QUIT\r\n":
        match = command.match(received, position)
        assert match is not None, received[position : position + 60]
        size = int(match[1])
        chunks.append(received[match.end() : match.end() + size])
        position = match.end() + size
        if match[2]:
            assert received[position:] == b"QUIT\r\n"
    return chunks


@pytest.fixture(params=["DATA", "BDAT"])
def recorder(request: pytest.FixtureRequest) -> Iterator[BDATServer]:
    """A server that records every byte, with and without CHUNKING."""
    with BDATServer(chunking=request.param == "BDAT") as server:
        yield server


SHAPES = ["bytes", "str", "split inside the variant", "a byte at a time", "data()"]


@pytest.mark.anyio
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", [v for _, v in VARIANTS], ids=VARIANT_IDS)
async def test_no_variant_reaches_the_wire(
    recorder: BDATServer, variant: bytes, shape: str
) -> None:
    data, offsets = message(variant, "everywhere")
    msg: MessageSource
    if shape == "bytes":
        msg = data
    elif shape == "str":
        msg = data.decode("ascii")
    elif shape == "split inside the variant":
        msg = in_chunks(split_at(data, cuts_inside(variant, offsets)))
    else:
        msg = in_chunks([data[i : i + 1] for i in range(len(data))])
    with anyio.fail_after(LIMIT):
        async with aiosmtp.SMTP(recorder.host, recorder.port, CLIENT_NAME, timeout=5) as smtp:
            if shape == "data()":
                # data() is DATA even where the server offers CHUNKING.
                await smtp.ehlo()
                assert (await smtp.mail("a@example.org")).code == 250
                assert (await smtp.rcpt("b@example.org")).code == 250
                assert (await smtp.data(data)).code == 250
            else:
                assert await smtp.sendmail("a@example.org", ["b@example.org"], msg) == {}
    [connection] = recorder.connections
    received = connection.received()
    [stored_message] = recorder.messages
    assert stored_message.data == stored(data)
    assert stored_message.recipients == ["b@example.org"]
    if recorder.chunking and shape != "data()":
        chunks = bdat_chunks(received)
        assert b"".join(chunks) == stored(data)
        assert stored_message.chunk_sizes == [len(chunk) for chunk in chunks]
        body = b"".join(chunks)
        assert body.count(b"\r") == body.count(b"\n") == body.count(b"\r\n")
        assert set(connection.verbs()) == {"EHLO", "MAIL", "RCPT", "BDAT", "QUIT"}
    else:
        payload = payload_after_data(received)
        assert_one_end_of_data(payload)
        assert payload == stored_message.wire
        assert unstuffed(payload) == stored(data)
        assert connection.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    # Whatever a lenient server would have read, the evil envelope never arrived.
    assert b"evil@attacker.example" not in b"".join(connection.commands)


# -- CR, LF and NUL in command arguments -------------------------------------------------------

BAD = {"CR": "\r", "LF": "\n", "CRLF": "\r\n", "NUL": "\0"}
Action = Callable[[aiosmtp.SMTP, str], Awaitable[object]]


def _authobject(challenge: bytes | None = None) -> str:
    return "x"


ACTIONS: dict[str, Action] = {
    "sendmail sender": lambda s, bad: s.sendmail(f"a{bad}@example.org", ["b@example.org"], b"x"),
    "sendmail recipient": lambda s, bad: s.sendmail(
        "a@example.org", ["b@example.org", f"c@example.org{bad}RCPT TO:<d@example.org>"], b"x"
    ),
    "sendmail display name": lambda s, bad: s.sendmail(
        f"Mallory{bad} <a@example.org>", ["b@example.org"], b"x"
    ),
    "sendmail mail option": lambda s, bad: s.sendmail(
        "a@example.org", ["b@example.org"], b"x", mail_options=[f"BODY=8BITMIME{bad}RSET"]
    ),
    "sendmail rcpt option": lambda s, bad: s.sendmail(
        "a@example.org", ["b@example.org"], b"x", rcpt_options=[f"NOTIFY=NEVER{bad}"]
    ),
    "send_message from_addr": lambda s, bad: s.send_message(
        _note(), from_addr=f"a@example.org{bad}", to_addrs=["b@example.org"]
    ),
    "mail": lambda s, bad: s.mail(f"a@example.org>{bad}RSET"),
    "mail option": lambda s, bad: s.mail("a@example.org", [f"SIZE=10{bad}"]),
    "rcpt": lambda s, bad: s.rcpt(f"{bad}b@example.org"),
    "rcpt option": lambda s, bad: s.rcpt("b@example.org", [f"ORCPT=rfc822;b{bad}"]),
    "ehlo name": lambda s, bad: s.ehlo(f"client{bad}.example"),
    "helo name": lambda s, bad: s.helo(f"client.example{bad}"),
    "verify": lambda s, bad: s.verify(f"b@example.org{bad}VRFY root"),
    "expn": lambda s, bad: s.expn(f"list{bad}"),
    "docmd verb": lambda s, bad: s.docmd(f"NOOP{bad}RSET"),
    "docmd argument": lambda s, bad: s.docmd("NOOP", f"x{bad}RSET"),
    "help argument": lambda s, bad: s.help(f"MAIL{bad}"),
    "auth mechanism": lambda s, bad: s.auth(f"PLAIN{bad}RSET", _authobject),
}


def _note() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg.set_content("hi\n")
    return msg


@pytest.mark.anyio
@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize("action", ACTIONS.values(), ids=ACTIONS.keys())
async def test_forbidden_characters_in_arguments_never_reach_the_wire(
    scripted: ScriptedServers, action: Action, bad: str
) -> None:
    # EHLO, then the refused call (nothing of it may arrive), then NOOP to show the
    # session is still in step; any other byte fails the script.
    server = scripted(
        greet(),
        ehlo_ok("AUTH PLAIN", "8BITMIME", "DSN", "SIZE 1000"),
        expect(b"NOOP\r\n"),
        send(b"250 2.0.0 still here\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            await smtp.ehlo()
            with pytest.raises(ValueError, match=r"forbidden (CR|LF|NUL) character"):
                await action(smtp, bad)
            assert await smtp.noop() == (250, b"2.0.0 still here")
    await server.finished()


@pytest.mark.anyio
@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
async def test_a_bad_local_hostname_stops_the_implicit_ehlo(
    scripted: ScriptedServers, bad: str
) -> None:
    server = scripted(greet(), quit_ok())
    with anyio.fail_after(LIMIT):
        async with client(server, local_hostname=f"client{bad}RSET") as smtp:
            with pytest.raises(ValueError, match=r"forbidden (CR|LF|NUL) character"):
                await smtp.sendmail("a@example.org", ["b@example.org"], b"x")
    await server.finished()


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_line_breaks_in_auth_credentials_travel_only_in_base64(
    scripted: ScriptedServers, mechanism: str, bad: str
) -> None:
    # API.md: AUTH payloads are base64 and cannot smuggle; the exact lines show it.
    user, password = f"alice{bad}RSET", f"pw{bad}QUIT"

    def b64(text: str) -> bytes:
        return base64.b64encode(text.encode())

    if mechanism == "PLAIN":
        exchange = [expect(b"AUTH PLAIN " + b64(f"\0{user}\0{password}") + b"\r\n")]
    else:
        exchange = [
            expect(b"AUTH LOGIN " + b64(user) + b"\r\n"),
            send(b"334 UGFzc3dvcmQ6\r\n"),
            expect(b64(password) + b"\r\n"),
        ]
    server = scripted(
        greet(),
        ehlo_ok(f"AUTH {mechanism}"),
        exchange,
        send(b"235 2.7.0 ok\r\n"),
        quit_ok(),
    )
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            assert (await smtp.login(user, password)).code == 235
    await server.finished()


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["user", "password"])
async def test_a_nul_in_plain_credentials_is_refused(
    scripted: ScriptedServers, field: str
) -> None:
    user, password = ("ad\0min", "pw") if field == "user" else ("alice", "pw\0x")
    lines: list[bytes] = []

    def rest_of_session(conn: ServerConnection) -> None:
        # Whatever the client does next (AUTH or QUIT), the script goes along, so
        # that the verdict is the test's own.
        while (line := conn.read_line_or_none()) is not None:
            lines.append(line)
            if line == b"QUIT\r\n":
                conn.send(b"221 2.0.0 bye\r\n")
                return
            conn.send(b"535 5.7.8 no\r\n")

    server = scripted(greet(), ehlo_ok("AUTH PLAIN"), call(rest_of_session))
    with anyio.fail_after(LIMIT):
        async with client(server) as smtp:
            with pytest.raises(ValueError, match="NUL"):
                await smtp.login(user, password)
    await server.finished()
    assert lines == [b"QUIT\r\n"]
