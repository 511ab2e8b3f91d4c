"""The fault catalogue: every fault at every step of a session, as a table.

Theory of operation: a session is a list of client operations (``__aenter__``,
``ehlo``, ``starttls``, ``login``, ``sendmail``, ``quit``), each made of exchanges
(the command the client sends, byte for byte, and the server's normal reply). A
case replaces one exchange's reply with a fault (a hang-up, a 421, a refusal,
garbage, an over-long line, a reply trickled one byte at a time, an unsolicited
line, silence, a half-closed socket, a server that stops reading, a broken or
untrusted TLS handshake) and names what the caller must see:

1. the exact ``SMTPException`` subclass, with a message naming what happened;
2. the connection closed (``is_closed``, and a NOOP refused locally), or provably
   clean (NOOP and RSET answered in step), or the session going on (a trickled
   reply parses right, an EHLO refusal falls back to HELO);
3. nothing sent after a failure that must stop the client: the scripted server
   expects every byte exactly and the end of the connection after its script,
   and the test compares the whole transcript as well;
4. an explicit ``connect()`` to the same server (its next script) and a whole
   transaction that works.

The pool cases at the end check that ``SMTPPool`` retries once what the server
cannot have (a failure before the end of the data) and never what it may have.
"""

from __future__ import annotations

import base64
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
import pytest
import trustme

import aiosmtp
from aiosmtp._body import CHUNK_SIZE
from aiosmtp.errors import SMTPDeliveryUnknownTimeoutError

from .faults_server import FaultServers, read_to_eof, shutdown_read
from .scripted import (
    CLIENT_NAME,
    Step,
    call,
    client,
    close,
    ehlo_reply,
    expect,
    recv_until,
    reset,
    send,
    shutdown_write,
    start_tls,
    stop_reading,
    trickle,
)

pytestmark = pytest.mark.anyio

#: The client timeout where a timeout is meant to fire.
TIMEOUT = 0.3
#: Where none is meant to fire (a trickled reply must not hit it on a busy machine).
SLACK = 3.0
#: Bounds each case as a whole; never reached when it passes.
LIMIT = 20

MSG = b"Subject: fault\r\n\r\nbody\r\n"
#: Far more than the socket buffers can hold once the server stops reading.
BIG = b"Subject: big\r\n\r\n" + b"".join([b"b" * 98 + b"\r\n"] * 60_000)
#: Two BDAT chunks: one of CHUNK_SIZE bytes and the rest.
TWO_CHUNKS = b"Subject: chunks\r\n\r\n" + b"".join([b"c" * 98 + b"\r\n"] * 5300)
SMALL_RCVBUF = 4096

GREETING = b"220-test.example ESMTP\r\n220 faults welcome\r\n"
FINAL_REPLY = b"250-2.0.0 queued\r\n250 2.0.0 as Q1\r\n"
EXTRA = b"250 2.0.0 fault: unsolicited\r\n"
GARBAGE = b"hello there, fault\r\n"
OVERLONG = b"250 " + b"x" * 9000 + b"\r\n"
PLAIN_AUTH = base64.b64encode(b"\0alice\0secret")

NOOP_OK = b"250 2.0.0 noop-ok\r\n"
RSET_OK = b"250 2.0.0 rset-ok\r\n"


# -- TLS contexts, made at run time (the table is built at import time) ------------------


@dataclass(frozen=True)
class Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    untrusted: ssl.SSLContext
    wrong_name: ssl.SSLContext
    tls12_only: ssl.SSLContext
    tls13_client: ssl.SSLContext


@pytest.fixture(scope="module")
def contexts(
    ca: trustme.CA, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> Contexts:
    untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost", "127.0.0.1").configure_cert(untrusted)
    wrong_name = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.other.example").configure_cert(wrong_name)
    tls12_only = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls12_only)
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    tls13_client = ssl.create_default_context()
    ca.configure_trust(tls13_client)
    tls13_client.minimum_version = ssl.TLSVersion.TLSv1_3
    return Contexts(
        server_context, client_context, untrusted, wrong_name, tls12_only, tls13_client
    )


@pytest.fixture
def fault_server() -> Iterator[FaultServers]:
    servers = FaultServers()
    try:
        yield servers
    finally:
        servers.join_all()


Build = Callable[[Contexts], list[Step]]


# -- sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One command (exact bytes; None for the greeting and a TLS handshake) and the
    server's normal answer (``custom`` when it is more than one reply)."""

    step: str
    sent: bytes | None
    reply: bytes = b""
    custom: Build | None = None

    def lead(self) -> list[Step]:
        return [] if self.sent is None else [expect(self.sent)]

    def normal(self, ctx: Contexts) -> list[Step]:
        if self.custom is not None:
            return self.custom(ctx)
        return [*self.lead(), send(self.reply)]


@dataclass(frozen=True)
class Session:
    name: str
    #: (operation, its exchanges), in order.
    ops: tuple[tuple[str, tuple[Exchange, ...]], ...]
    message: bytes = MSG
    implicit_tls: bool = False

    def flat(self) -> list[tuple[int, Exchange]]:
        return [(index, ex) for index, (_, exs) in enumerate(self.ops) for ex in exs]

    def normal(self, ctx: Contexts) -> list[Step]:
        return [step for _, ex in self.flat() for step in ex.normal(ctx)]


def _ehlo(*features: str) -> Exchange:
    return Exchange(
        "EHLO", f"EHLO {CLIENT_NAME}\r\n".encode(), ehlo_reply(*features, name="test.example")
    )


def _bdat_chunks(message: bytes) -> list[bytes]:
    return [message[i : i + CHUNK_SIZE] for i in range(0, len(message), CHUNK_SIZE)]


GREET = Exchange("greeting", None, GREETING)
MAIL = Exchange("MAIL", b"MAIL FROM:<a@x.org>\r\n", b"250 2.1.0 sender ok\r\n")
RCPT = Exchange("RCPT", b"RCPT TO:<b@x.org>\r\n", b"250 2.1.5 recipient ok\r\n")
DATA = Exchange("DATA", b"DATA\r\n", b"354 go ahead\r\n")
QUIT = Exchange("QUIT", b"QUIT\r\n", b"221 2.0.0 bye\r\n")


def _dot(message: bytes, step: str = "final dot") -> Exchange:
    return Exchange(step, message + b".\r\n", FINAL_REPLY)


PLAIN = Session(
    "plain",
    (
        ("enter", (GREET,)),
        ("sendmail", (_ehlo("8BITMIME"), MAIL, RCPT, DATA, _dot(MSG))),
        ("quit", (QUIT,)),
    ),
)
#: With EHLO as an operation of its own, so that the client is idle before MAIL.
PLAIN_EHLO = Session(
    "plain-ehlo",
    (
        ("enter", (GREET,)),
        ("ehlo", (_ehlo("8BITMIME"),)),
        ("sendmail", (MAIL, RCPT, DATA, _dot(MSG))),
        ("quit", (QUIT,)),
    ),
)
BIG_SESSION = Session(
    "big",
    (
        ("enter", (GREET,)),
        ("sendmail", (_ehlo("8BITMIME"), MAIL, RCPT, DATA, _dot(BIG, "payload"))),
        ("quit", (QUIT,)),
    ),
    message=BIG,
)
TLS_SESSION = Session(
    "starttls",
    (
        ("enter", (GREET,)),
        ("ehlo", (_ehlo("STARTTLS"),)),
        (
            "starttls",
            (
                Exchange("STARTTLS", b"STARTTLS\r\n", b"220 2.0.0 ready for TLS\r\n"),
                Exchange("TLS handshake", None, custom=lambda ctx: [start_tls(ctx.server)]),
            ),
        ),
        ("ehlo", (Exchange("EHLO again", f"EHLO {CLIENT_NAME}\r\n".encode(), ehlo_reply()),)),
        ("quit", (QUIT,)),
    ),
)
AUTH_SESSION = Session(
    "auth",
    (
        ("enter", (GREET,)),
        ("ehlo", (_ehlo("AUTH PLAIN"),)),
        (
            "login",
            (
                Exchange(
                    "AUTH",
                    b"AUTH PLAIN " + PLAIN_AUTH + b"\r\n",
                    b"235 2.7.0 authenticated\r\n",
                ),
            ),
        ),
        ("quit", (QUIT,)),
    ),
)
_FIRST, _LAST = _bdat_chunks(TWO_CHUNKS)
BDAT_SESSION = Session(
    "bdat",
    (
        ("enter", (GREET,)),
        (
            "sendmail",
            (
                _ehlo("CHUNKING"),
                MAIL,
                RCPT,
                Exchange(
                    "BDAT",
                    f"BDAT {len(_FIRST)}\r\n".encode() + _FIRST,
                    f"250 2.0.0 {len(_FIRST)} octets\r\n".encode(),
                ),
                Exchange("BDAT LAST", f"BDAT {len(_LAST)} LAST\r\n".encode() + _LAST, FINAL_REPLY),
            ),
        ),
        ("quit", (QUIT,)),
    ),
    message=TWO_CHUNKS,
)
IMPLICIT_SESSION = Session(
    "implicit-tls",
    (
        (
            "enter",
            (
                Exchange("implicit TLS", None, custom=lambda ctx: [start_tls(ctx.server)]),
                GREET,
            ),
        ),
        ("quit", (QUIT,)),
    ),
    implicit_tls=True,
)

# The session in which each step is faulted.
SESSION_OF = {
    "greeting": PLAIN,
    "EHLO": PLAIN,
    "STARTTLS": TLS_SESSION,
    "TLS handshake": TLS_SESSION,
    "implicit TLS": IMPLICIT_SESSION,
    "AUTH": AUTH_SESSION,
    "MAIL": PLAIN,
    "RCPT": PLAIN,
    "DATA": PLAIN,
    "payload": BIG_SESSION,
    "final dot": PLAIN,
    "BDAT": BDAT_SESSION,
    "BDAT LAST": BDAT_SESSION,
    "QUIT": PLAIN,
}


def _exchange(session: Session, step: str) -> Exchange:
    return next(ex for _, ex in session.flat() if ex.step == step)


# -- cases ---------------------------------------------------------------------------------

Outcome = Literal["closed", "clean", "ok"]


@dataclass(frozen=True)
class Case:
    step: str
    fault: str
    #: What the server does instead of the exchange's normal steps.
    steps: Build
    #: The exception the caller gets (None: the operation returns).
    error: type[BaseException] | None
    #: A regex that the exception's text must contain.
    match: str = ""
    code: int | None = None
    outcome: Outcome = "closed"
    #: What the client sends by itself after the failure (its RSET), and the answer.
    recovery: tuple[bytes, ...] = ()
    #: The exchange the fault replaces, when not the step's own.
    at: str | None = None
    #: How the faulted exchange's command shows in the transcript: in full, maybe
    #: (a client that reads stale input only after sending), in part, or as TLS
    #: records only (a handshake).
    sent: Literal["all", "maybe", "prefix", "tls"] = "all"
    timeout: float = SLACK
    #: Wait, before the operation, until unsolicited input has arrived.
    idle: bool = False
    rcvbuf: int | None = None
    #: What the faulted operation returns, when the outcome is "ok".
    returns: tuple[int, bytes] | None = None
    #: A client bug this case shows; the case is xfail(strict) until it is fixed.
    bug: str | None = None
    #: Where it is not the step's usual one (SESSION_OF).
    session: Session | None = None

    @property
    def id(self) -> str:
        return f"{self.step}-{self.fault}".replace(" ", "_")


def then(step: str, *more: Step) -> Build:
    """The client's command is read, then ``more``."""
    return lambda ctx: [*_exchange(SESSION_OF[step], step).lead(), *more]


def _reply_faults(step: str) -> list[Case]:
    """The faults any exchange with a reply can suffer, with the outcome each
    leaves at this step."""
    session = SESSION_OF[step]
    ex = _exchange(session, step)
    after_end = step in ("final dot", "BDAT LAST")
    lost: type[BaseException] = (
        aiosmtp.SMTPDeliveryUnknownError if after_end else aiosmtp.SMTPServerDisconnected
    )
    timed_out: type[BaseException] = (
        SMTPDeliveryUnknownTimeoutError if after_end else aiosmtp.SMTPTimeoutError
    )
    # Nonsense where the verdict on a message sent in full should be: unknown too.
    nonsense: type[BaseException] = (
        aiosmtp.SMTPDeliveryUnknownResponseError if after_end else aiosmtp.SMTPResponseException
    )
    unknown_text = ".*may have been delivered" if after_end else ""
    lost_text = "closed by the server while reading a reply"
    if after_end:
        lost_text += ".*may have been delivered"
    cases = [
        Case(step, "disconnect", then(step, close()), lost, lost_text),
        Case(step, "half-close write", then(step, shutdown_write()), lost, lost_text),
        Case(
            step,
            "silence",
            then(step),
            timed_out,
            r"timed out after 0\.3 s while reading a reply",
            timeout=TIMEOUT,
        ),
        Case(
            step, "garbage line", then(step, send(GARBAGE)), nonsense,
            "malformed reply line" + unknown_text, code=-1,
        ),
        Case(
            step, "over-long line", then(step, send(OVERLONG)), nonsense,
            "longer than 8192 bytes" + unknown_text, code=500,
        ),
    ]  # fmt: skip
    if ex.sent is not None:
        # Linux queues what arrives after SHUT_RD and tells the client nothing: to
        # the client, a server that has stopped reading and answering.
        cases.append(
            Case(
                step,
                "half-close read",
                lambda ctx: [shutdown_read(), stop_reading(), read_to_eof()],
                timed_out,
                r"timed out after 0\.3 s while (reading a reply|sending)",
                timeout=TIMEOUT,
                sent="prefix" if len(ex.sent) > 65536 else "all",
            )
        )
    split_reply = ex.reply
    cases.append(
        Case(
            step,
            "split at every byte",
            then(step, trickle(split_reply, 0.002)),
            None,
            outcome="ok",
            returns=_parsed(split_reply) if step in _RETURNED else None,
        )
    )
    return [replace(case, session=session) for case in cases]


# Steps whose operation returns the faulted exchange's reply (or its final reply).
_RETURNED = {"STARTTLS", "AUTH", "final dot", "BDAT LAST", "QUIT"}


def _parsed(reply: bytes) -> tuple[int, bytes]:
    lines = reply.rstrip(b"\r\n").split(b"\r\n")
    return int(lines[0][:3]), b"\n".join(line[4:] for line in lines)


def _refusals(
    step: str,
    error: type[BaseException],
    permanent: bytes,
    transient: bytes,
    *,
    recovery: tuple[bytes, ...] = (),
    closing_error: type[BaseException] | None = None,
) -> list[Case]:
    """421 (the server closes), a 5xx and a 4xx at ``step``."""
    session = SESSION_OF[step]
    closing = b"421 4.3.2 fault: shutting down\r\n"
    return [
        Case(
            step, "421", then(step, send(closing), shutdown_write()),
            closing_error or error, "fault: shutting down", code=421, session=session,
        ),
        Case(
            step, "5xx", then(step, send(permanent)), error, "fault: refused",
            code=int(permanent[:3]), outcome="clean", recovery=recovery, session=session,
        ),
        Case(
            step, "4xx", then(step, send(transient)), error, "fault: try later",
            code=int(transient[:3]), outcome="clean", recovery=recovery, session=session,
        ),
    ]  # fmt: skip


RSET = (b"RSET\r\n", RSET_OK)


def _unsolicited_before(step: str, previous: str, op_error: str = "unsolicited") -> Case:
    """An unsolicited line right behind the reply before ``step``'s command: the
    client must notice it, close, and never send the command. Behind the reply to a
    message's end of data, that reply cannot be trusted: the fate is unknown."""
    session = SESSION_OF[step]
    prev = _exchange(session, previous)
    after_end = previous in ("final dot", "BDAT LAST")
    return Case(
        step,
        "unsolicited line before",
        lambda ctx: [*prev.lead(), send(prev.reply + EXTRA)],
        aiosmtp.SMTPDeliveryUnknownResponseError if after_end else aiosmtp.SMTPResponseException,
        op_error,
        at=previous,
        session=session,
    )


def _unsolicited_while_idle(step: str, session: Session, bug: str | None = None) -> Case:
    """A line that arrives while the client is idle, before it sends ``step``'s
    command: it must never be taken as the answer to that command."""
    return Case(
        step,
        "unsolicited line while idle",
        # test_fault opens the gate once the client has read the previous reply.
        lambda ctx: [send(EXTRA), read_to_eof()],
        aiosmtp.SMTPResponseException,
        "unsolicited",
        sent="maybe",
        idle=True,
        timeout=TIMEOUT,
        session=session,
        bug=bug,
    )


def _tls_failures(step: str) -> list[Case]:
    session = SESSION_OF[step]
    tls_error = aiosmtp.SMTPTLSError
    cert_error = aiosmtp.SMTPCertificateError

    def hello_then(*more: Step) -> Build:
        # Wait for the ClientHello, then do ``more``.
        return lambda ctx: [recv_until(b"\x16", lambda data: True), *more]

    cases = [
        Case(
            step, "TLS handshake failure",
            hello_then(send(b"this is not TLS\r\n" * 4), read_to_eof()),
            tls_error, "TLS failed",
        ),
        Case(
            step, "TLS version mismatch",
            lambda ctx: [start_tls(ctx.tls12_only, expect_failure=True)],
            tls_error, "TLS failed",
        ),
        Case(
            step, "untrusted certificate",
            lambda ctx: [start_tls(ctx.untrusted, expect_failure=True)],
            cert_error, "certificate verification failed.*(self.signed|unable to get local)",
        ),
        Case(
            step, "wrong host name",
            lambda ctx: [start_tls(ctx.wrong_name, expect_failure=True)],
            cert_error, "certificate verification failed.*(mismatch|match)",
        ),
        Case(
            step, "disconnect", hello_then(close()), aiosmtp.SMTPServerDisconnected,
            "while in the TLS handshake|closed by the server",
        ),
        Case(
            step, "silence", hello_then(read_to_eof()), aiosmtp.SMTPTimeoutError,
            r"timed out after 0\.3 s while in the TLS handshake", timeout=TIMEOUT,
        ),
    ]  # fmt: skip
    return [replace(case, sent="tls", session=session) for case in cases]


def _payload_faults() -> list[Case]:
    step = "payload"
    first_line = recv_until(b"\r\n")
    lost = aiosmtp.SMTPServerDisconnected
    blocked = r"timed out after 0\.3 s while sending"
    return [
        Case(
            step, "disconnect", lambda ctx: [first_line, reset()],
            lost, "connection lost while sending", sent="prefix",
        ),
        Case(
            step, "421", lambda ctx: [first_line, send(b"421 4.3.2 fault\r\n"), reset()],
            lost, "connection lost while sending", sent="prefix",
        ),
        Case(
            step, "server reads nothing", lambda ctx: [stop_reading(), close()],
            aiosmtp.SMTPTimeoutError, blocked, sent="prefix", timeout=TIMEOUT,
            rcvbuf=SMALL_RCVBUF,
        ),
        Case(
            step, "half-close read", lambda ctx: [shutdown_read(), stop_reading(), close()],
            aiosmtp.SMTPTimeoutError, blocked, sent="prefix", timeout=TIMEOUT,
            rcvbuf=SMALL_RCVBUF,
        ),
        # The server stops talking early but takes in the whole message: the client
        # learns it only at the reply, after the end of the data.
        Case(
            step, "half-close write", lambda ctx: [first_line, shutdown_write(),
                                                   recv_until(b"\r\n.\r\n")],
            aiosmtp.SMTPDeliveryUnknownError, "closed by the server.*may have been delivered",
        ),
    ]  # fmt: skip


def _catalogue() -> list[Case]:
    cases: list[Case] = []
    for step in SESSION_OF:
        if step not in ("TLS handshake", "implicit TLS", "payload"):
            cases += _reply_faults(step)

    # Refusals, step by step, with what smtplib raises for each.
    cases += [
        Case(
            "greeting", "421", lambda ctx: [send(b"421 4.3.2 fault: shutting down\r\n")],
            aiosmtp.SMTPConnectError, "fault: shutting down", code=421,
        ),
        Case(
            "greeting", "5xx", lambda ctx: [send(b"554 5.3.2 fault: refused\r\n")],
            aiosmtp.SMTPConnectError, "fault: refused", code=554,
        ),
        Case(
            "greeting", "4xx", lambda ctx: [send(b"450 4.3.2 fault: try later\r\n")],
            aiosmtp.SMTPConnectError, "fault: try later", code=450,
        ),
        Case(
            "EHLO", "421", then("EHLO", send(b"421 4.3.2 fault: shutting down\r\n"),
                                shutdown_write()),
            aiosmtp.SMTPServerDisconnected, "421 .*fault: shutting down",
        ),
        # EHLO refused: HELO, as smtplib does; refused too: SMTPHeloError, in step.
        Case(
            "EHLO", "5xx", then("EHLO", send(b"502 5.5.1 fault: no EHLO\r\n"),
                                expect(f"HELO {CLIENT_NAME}\r\n".encode()),
                                send(b"550 5.7.1 fault: refused\r\n")),
            aiosmtp.SMTPHeloError, "fault: refused", code=550, outcome="clean",
        ),
        Case(
            "EHLO", "4xx", then("EHLO", send(b"451 4.3.0 fault: try later\r\n"),
                                expect(f"HELO {CLIENT_NAME}\r\n".encode()),
                                send(b"250 test.example\r\n")),
            None, outcome="ok",
        ),
    ]  # fmt: skip
    cases += _refusals(
        "STARTTLS",
        aiosmtp.SMTPResponseException,
        b"501 5.5.4 fault: refused\r\n",
        b"454 4.7.0 fault: try later\r\n",
    )
    cases += _refusals(
        "AUTH",
        aiosmtp.SMTPAuthenticationError,
        b"535 5.7.8 fault: refused\r\n",
        b"454 4.7.0 fault: try later\r\n",
    )
    cases += _refusals(
        "MAIL",
        aiosmtp.SMTPSenderRefused,
        b"550 5.7.1 fault: refused\r\n",
        b"451 4.3.0 fault: try later\r\n",
        recovery=RSET,
    )
    cases += _refusals(
        "RCPT",
        aiosmtp.SMTPRecipientsRefused,
        b"550 5.1.1 fault: refused\r\n",
        b"450 4.2.1 fault: try later\r\n",
        recovery=RSET,
    )
    for step in ("DATA", "final dot", "BDAT", "BDAT LAST"):
        cases += _refusals(
            step,
            aiosmtp.SMTPDataError,
            b"554 5.6.0 fault: refused\r\n",
            b"451 4.3.0 fault: try later\r\n",
            recovery=RSET,
        )
    # QUIT: smtplib returns whatever the answer; the session is over either way.
    cases += [
        Case("QUIT", fault, then("QUIT", send(reply)), None, outcome="ok",
             returns=_parsed(reply))
        for fault, reply in [
            ("421", b"421 4.3.2 fault: shutting down\r\n"),
            ("5xx", b"554 5.3.2 fault: refused\r\n"),
            ("4xx", b"451 4.3.0 fault: try later\r\n"),
        ]
    ]  # fmt: skip

    # AUTH: a challenge that is not base64.
    cases.append(
        Case(
            "AUTH", "garbage challenge", then("AUTH", send(b"334 !!not base64!!\r\n")),
            aiosmtp.SMTPResponseException, "not base64", session=AUTH_SESSION,
        )
    )  # fmt: skip

    # STARTTLS: plaintext behind the 220 (CVE-2011-0411).
    cases.append(
        Case(
            "STARTTLS", "plaintext injected after 220",
            then("STARTTLS", send(b"220 2.0.0 ready\r\n250-injected\r\n250 AUTH PLAIN\r\n")),
            aiosmtp.SMTPResponseException, "after the STARTTLS 220", session=TLS_SESSION,
        )
    )  # fmt: skip
    cases += _tls_failures("TLS handshake")
    cases += [
        case
        for case in _tls_failures("implicit TLS")
        if case.fault in ("TLS handshake failure", "untrusted certificate", "wrong host name")
    ]
    cases += _payload_faults()
    cases.append(
        Case(
            "BDAT", "server reads nothing", lambda ctx: [stop_reading(), close()],
            aiosmtp.SMTPTimeoutError, r"timed out after 0\.3 s while (sending|reading a reply)",
            sent="prefix", timeout=TIMEOUT, rcvbuf=SMALL_RCVBUF, session=BDAT_SESSION,
        )
    )  # fmt: skip

    # Unsolicited lines.
    cases += [
        _unsolicited_before("EHLO", "greeting"),
        _unsolicited_before("STARTTLS", "EHLO"),
        _unsolicited_before("AUTH", "EHLO"),
        _unsolicited_before("MAIL", "EHLO"),
        _unsolicited_before("RCPT", "MAIL"),
        _unsolicited_before("DATA", "RCPT"),
        _unsolicited_before("payload", "DATA"),
        _unsolicited_before("BDAT", "RCPT"),
        _unsolicited_before("QUIT", "final dot"),
    ]
    cases += [
        _unsolicited_while_idle("EHLO", PLAIN),
        _unsolicited_while_idle("STARTTLS", TLS_SESSION),
        _unsolicited_while_idle("AUTH", AUTH_SESSION),
        _unsolicited_while_idle("MAIL", PLAIN_EHLO),
        _unsolicited_while_idle("QUIT", PLAIN),
    ]
    return cases


CASES = [replace(case, session=case.session or SESSION_OF[case.step]) for case in _catalogue()]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def test_the_catalogue_is_large_and_distinct() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 60
    steps = {case.step for case in CASES}
    assert steps >= {
        "greeting", "EHLO", "STARTTLS", "TLS handshake", "AUTH", "MAIL", "RCPT", "DATA",
        "payload", "final dot", "BDAT", "QUIT",
    }  # fmt: skip


# -- running a case ------------------------------------------------------------------------


def _good_session(session: Session, ctx: Contexts) -> list[Step]:
    """The script for the explicit connect() after the fault: one whole transaction."""
    steps: list[Step] = [start_tls(ctx.server)] if session.implicit_tls else []
    return [*steps, *PLAIN.normal(ctx)]


def _in_step(recovery: tuple[bytes, ...]) -> list[Step]:
    steps: list[Step] = []
    if recovery:
        steps += [expect(recovery[0]), send(recovery[1])]
    return [
        *steps,
        expect(b"NOOP\r\n"),
        send(NOOP_OK),
        expect(b"RSET\r\n"),
        send(RSET_OK),
        expect(b"QUIT\r\n"),
        send(b"221 2.0.0 bye\r\n"),
    ]


async def _operation(name: str, smtp: aiosmtp.SMTP, session: Session) -> Any:
    if name == "enter":
        return await smtp.__aenter__()  # what `async with SMTP(host, port)` does
    if name == "ehlo":
        return await smtp.ehlo()
    if name == "starttls":
        return await smtp.starttls()
    if name == "login":
        return await smtp.login("alice", "secret")
    if name == "sendmail":
        return await smtp.sendmail("a@x.org", ["b@x.org"], session.message)
    assert name == "quit"
    return await smtp.quit()


def _wait(gate: threading.Event) -> None:
    if not gate.wait(5):
        raise AssertionError("the test never opened the gate")


async def _wait_for_unsolicited_input(smtp: aiosmtp.SMTP) -> None:
    with anyio.fail_after(5):
        while not smtp.has_unsolicited_input():  # noqa: ASYNC110 (the socket, not a task)
            await anyio.sleep(0.005)


@pytest.mark.parametrize("case", _params())
async def test_fault(case: Case, fault_server: FaultServers, contexts: Contexts) -> None:
    session = case.session
    assert session is not None
    flat = session.flat()
    at = case.at or case.step
    index = next(i for i, (_, ex) in enumerate(flat) if ex.step == at)
    fault_op = flat[index][0]

    script = [step for _, ex in flat[:index] for step in ex.normal(contexts)]
    gate = threading.Event()
    if case.idle:
        # Not before the client has read the previous reply, or the line would
        # arrive with it (a case of its own: "unsolicited line before").
        script.append(call(lambda conn: _wait(gate)))
    script += case.steps(contexts)
    if case.outcome == "clean":
        script += _in_step(case.recovery)
    elif case.outcome == "ok":
        script += [step for _, ex in flat[index + 1 :] for step in ex.normal(contexts)]
    server = fault_server(script, _good_session(session, contexts), rcvbuf=case.rcvbuf)
    cls = aiosmtp.SMTP_SSL if session.implicit_tls else aiosmtp.SMTP
    context = contexts.tls13_client if case.fault == "TLS version mismatch" else contexts.client

    smtp = client(server, cls, timeout=case.timeout, context=context)
    try:
        with anyio.fail_after(LIMIT):
            names = [name for name, _ in session.ops]
            for name in names[:fault_op]:
                await _operation(name, smtp, session)
            if case.idle:
                gate.set()
                await _wait_for_unsolicited_input(smtp)

            # (1) The exception, its class exactly as named, and its text.
            if case.error is None:
                result = await _operation(names[fault_op], smtp, session)
            else:
                with pytest.raises(aiosmtp.SMTPException) as info:
                    await _operation(names[fault_op], smtp, session)
                assert type(info.value) is case.error, repr(info.value)
                assert re.search(case.match, str(info.value), re.DOTALL), str(info.value)
                if case.code is not None:
                    assert _code(info.value) == case.code
                if case.error is aiosmtp.SMTPRecipientsRefused:
                    assert isinstance(info.value, aiosmtp.SMTPRecipientsRefused)
                    assert list(info.value.recipients) == ["b@x.org"]

            # (2) Closed, or provably in step, or the session goes on.
            if case.outcome == "closed":
                assert smtp.is_closed
                with pytest.raises(aiosmtp.SMTPServerDisconnected):
                    await smtp.noop()
            elif case.outcome == "clean":
                assert not smtp.is_closed
                assert await smtp.noop() == (250, b"2.0.0 noop-ok")
                assert await smtp.rset() == (250, b"2.0.0 rset-ok")
                await smtp.quit()
            else:
                if case.returns is not None:
                    assert tuple(getattr(result, "reply", result)) == case.returns
                for name in names[fault_op + 1 :]:
                    await _operation(name, smtp, session)
                assert smtp.is_closed

            # (4) An explicit connect() and a whole transaction.
            server.release()  # a server that stopped reading goes on to hang up
            smtp.timeout = SLACK
            greeting = await smtp.connect(server.host, server.port)
            assert greeting == (220, b"test.example ESMTP\nfaults welcome")
            result = await smtp.sendmail("a@x.org", ["b@x.org"], MSG)
            assert result == {}
            assert result.reply == (250, b"2.0.0 queued\n2.0.0 as Q1")
            assert (await smtp.quit()).code == 221
    except BaseException:
        server.abandon()
        raise
    finally:
        await smtp.close()
    await server.finished()
    assert server.connections == 2
    # (3) Nothing sent after the failure: the whole first transcript.
    if case.outcome == "closed":
        _check_transcript(case, flat, index, server.transcripts()[0])


def _code(exc: BaseException) -> int:
    code = getattr(exc, "smtp_code", None)
    if code is None and isinstance(exc, aiosmtp.SMTPRecipientsRefused):
        code = next(iter(exc.recipients.values()))[0]
    assert isinstance(code, int), exc
    return code


def _check_transcript(
    case: Case, flat: list[tuple[int, Exchange]], index: int, transcript: bytes
) -> None:
    before = b"".join(ex.sent or b"" for _, ex in flat[:index])
    command = flat[index][1].sent or b""
    if case.sent == "all":
        assert transcript == before + command
    elif case.sent == "maybe":
        assert transcript in (before, before + command), transcript[len(before) :][:200]
    elif case.sent == "tls":
        rest = transcript[len(before) :]
        assert transcript.startswith(before)
        assert rest in (b"", b"\x16") or rest.startswith(b"\x16\x03"), rest[:40]
    else:
        assert transcript.startswith(before)
        assert (before + command).startswith(transcript)


# -- the pool: it reconnects by itself, retries what the server cannot have -------------------


@dataclass(frozen=True)
class PoolCase:
    step: str
    fault: str
    steps: Build
    #: None: retried once on a new connection and delivered; else what the caller gets.
    error: type[BaseException] | None = None
    #: The connection stays in step (RSET) and carries the next message.
    reuse: bool = False

    @property
    def id(self) -> str:
        return f"{self.step}-{self.fault}".replace(" ", "_")


POOL_CASES = [
    # Before the end of the data: the server cannot have the message.
    PoolCase("MAIL", "disconnect", then("MAIL", close())),
    PoolCase("MAIL", "half-close write", then("MAIL", shutdown_write())),
    PoolCase("RCPT", "421", then("RCPT", send(b"421 4.3.2 fault\r\n"), shutdown_write())),
    PoolCase("DATA", "silence", then("DATA")),
    PoolCase("payload", "disconnect", lambda ctx: [recv_until(b"\r\n"), reset()]),
    PoolCase("BDAT", "421", then("BDAT", send(b"421 4.3.2 fault\r\n"), shutdown_write())),
    # After it: the fate is unknown, never retried.
    PoolCase("final dot", "disconnect", then("final dot", close()),
             aiosmtp.SMTPDeliveryUnknownError),
    PoolCase("final dot", "silence", then("final dot"), SMTPDeliveryUnknownTimeoutError),
    PoolCase("BDAT LAST", "disconnect", then("BDAT LAST", close()),
             aiosmtp.SMTPDeliveryUnknownError),
    PoolCase("final dot", "garbage line", then("final dot", send(GARBAGE)),
             aiosmtp.SMTPDeliveryUnknownResponseError),
    # Nonsense, a refused connection: raised; the next message gets a new connection.
    PoolCase("RCPT", "garbage line", then("RCPT", send(GARBAGE)), aiosmtp.SMTPResponseException),
    PoolCase("greeting", "disconnect", lambda ctx: [close()], aiosmtp.SMTPServerDisconnected),
    # A refusal: raised, and the connection, in step again after RSET, is reused.
    PoolCase("RCPT", "5xx", then("RCPT", send(b"550 5.1.1 fault: refused\r\n")),
             aiosmtp.SMTPRecipientsRefused, reuse=True),
]  # fmt: skip


def _ends_of_data(transcript: bytes) -> int:
    return transcript.count(b"\r\n.\r\n") + len(re.findall(rb"BDAT \d+ LAST\r\n", transcript))


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in POOL_CASES])
async def test_pool_after_a_fault(
    case: PoolCase, fault_server: FaultServers, contexts: Contexts
) -> None:
    session = SESSION_OF[case.step]
    flat = session.flat()
    index = next(i for i, (_, ex) in enumerate(flat) if ex.step == case.step)
    first = [step for _, ex in flat[:index] for step in ex.normal(contexts)]
    first += case.steps(contexts)
    if case.reuse:
        # The client's RSET, then the next message on the same connection.
        transaction = [ex for _, ex in flat if ex.step in ("MAIL", "RCPT", "DATA", "final dot")]
        first += [expect(b"RSET\r\n"), send(RSET_OK)]
        first += [step for ex in transaction for step in ex.normal(contexts)]
        first += QUIT.normal(contexts)
        scripts = [first]
    else:
        scripts = [first, session.normal(contexts)]
    server = fault_server(*scripts)
    pool = aiosmtp.SMTPPool(
        server.host,
        server.port,
        tls="none",
        timeout=TIMEOUT,
        data_timeout=TIMEOUT,
        local_hostname=CLIENT_NAME,
    )
    try:
        with anyio.fail_after(LIMIT):
            async with pool:
                if case.error is None:
                    result = await pool.sendmail("a@x.org", ["b@x.org"], session.message)
                    assert server.connections == 2
                else:
                    with pytest.raises(aiosmtp.SMTPException) as info:
                        await pool.sendmail("a@x.org", ["b@x.org"], session.message)
                    assert type(info.value) is case.error, repr(info.value)
                    # Raised without a second try.
                    assert server.connections == 1
                    result = await pool.sendmail("a@x.org", ["b@x.org"], session.message)
                    assert server.connections == (1 if case.reuse else 2)
                assert result == {}
                assert result.reply == (250, b"2.0.0 queued\n2.0.0 as Q1")
    except BaseException:
        server.abandon()
        raise
    await server.finished()
    transcripts = server.transcripts()
    if case.error is None:
        # Delivered exactly once: no end of data on the broken connection.
        assert [_ends_of_data(transcript) for transcript in transcripts] == [0, 1]
    elif case.reuse:
        assert [_ends_of_data(transcript) for transcript in transcripts] == [1]
    else:
        after_end = case.step in ("final dot", "BDAT LAST")
        assert [_ends_of_data(transcript) for transcript in transcripts] == [int(after_end), 1]
    assert transcripts[-1].endswith(b"QUIT\r\n")
