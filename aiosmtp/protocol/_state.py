"""The session states and every move between them, in two tables.

Theory of operation: the state is what the server has confirmed, so it moves when a
reply arrives, by ``REPLY_TRANSITIONS``; the only moves made when bytes are *sent*
are the ends of a message body (the final "." or ``BDAT ... LAST``): once those are
on the wire, the server has left the data phase whatever it answers.

What may be sent is decided by ``SENDABLE``. With PIPELINING (RFC 2920) several
commands may wait for their replies at once, so a command sent in READY may be
answered in TRANSACTION; the tables are written so that every such order is
covered. A command that RFC 2920 section 3.1 allows only at the end of a group
(``LAST_IN_GROUP``) blocks further sends until its reply has arrived.
"""

from __future__ import annotations

import enum

from ._commands import CommandKind

__all__ = [
    "LAST_IN_GROUP",
    "REPLY_TRANSITIONS",
    "SENDABLE",
    "WAITS_FOR_MORE",
    "Outcome",
    "State",
]


class State(enum.Enum):
    """Where the session is, as far as the server has confirmed."""

    # Enum hashes by name in Python; members are singletons, so identity is
    # enough, and the hot path looks them up in sets and dicts many times a message.
    __hash__ = object.__hash__

    GREETING = "greeting"  # connected, the server's greeting not read yet
    READY = "ready"  # no mail transaction open
    TRANSACTION = "transaction"  # MAIL accepted, recipients and data may follow
    DATA = "data"  # DATA answered 354: message bytes may be sent
    AUTH = "auth"  # AUTH answered 334: a response line is due
    TLS_PENDING = "TLS pending"  # STARTTLS answered 220: the driver must upgrade
    CLOSED = "closed"  # QUIT answered, 421 received, connection lost or poisoned


class Outcome(enum.Enum):
    """What kind of answer a reply code is."""

    __hash__ = object.__hash__  # see State

    POSITIVE = 2  # 2xx
    INTERMEDIATE = 3  # 3xx
    NEGATIVE = 4  # 4xx or 5xx

    @classmethod
    def of(cls, code: int) -> Outcome:
        first = code // 100
        if first == 2:
            return cls.POSITIVE
        if first == 3:
            return cls.INTERMEDIATE
        return cls.NEGATIVE


_K = CommandKind
_S = State
_COMMANDS = frozenset(
    {_K.EHLO, _K.HELO, _K.MAIL, _K.RCPT, _K.DATA, _K.BDAT, _K.BDAT_LAST, _K.RSET}
    | {_K.STARTTLS, _K.AUTH, _K.QUIT, _K.OTHER}
)

#: What may be sent in each state (besides message data in DATA).
SENDABLE: dict[State, frozenset[CommandKind]] = {
    _S.GREETING: frozenset(),
    _S.READY: _COMMANDS,
    _S.TRANSACTION: _COMMANDS,
    _S.DATA: frozenset({_K.END_OF_DATA}),
    _S.AUTH: frozenset({_K.AUTH_RESPONSE}),
    _S.TLS_PENDING: frozenset(),
    _S.CLOSED: frozenset(),
}

#: Commands after which nothing may be sent before their reply (RFC 2920 3.1).
LAST_IN_GROUP = frozenset(
    {_K.GREETING, _K.EHLO, _K.HELO, _K.DATA, _K.STARTTLS, _K.AUTH, _K.AUTH_RESPONSE}
    | {_K.QUIT, _K.OTHER}
)

#: Commands that a 3xx reply may answer; a 3xx to anything else is nonsense.
WAITS_FOR_MORE = frozenset({_K.DATA, _K.AUTH, _K.AUTH_RESPONSE, _K.OTHER})

_P, _I, _N = Outcome.POSITIVE, Outcome.INTERMEDIATE, Outcome.NEGATIVE
_OPEN = (_S.READY, _S.TRANSACTION)

#: (state when the reply arrives, command it answers, outcome) -> next state.
#: A combination that is not listed leaves the state as it is. A 421 reply closes
#: the session whatever it answers (RFC 5321 section 3.8), and is not listed.
REPLY_TRANSITIONS: dict[tuple[State, CommandKind, Outcome], State] = {
    # A failed greeting still allows QUIT (RFC 5321 section 3.1).
    (_S.GREETING, _K.GREETING, _P): _S.READY,
    (_S.GREETING, _K.GREETING, _N): _S.READY,
    # EHLO and HELO end any open transaction (RFC 5321 section 4.1.4).
    **{(state, kind, _P): _S.READY for state in _OPEN for kind in (_K.EHLO, _K.HELO)},
    **{(state, _K.RSET, _P): _S.READY for state in _OPEN},
    (_S.READY, _K.MAIL, _P): _S.TRANSACTION,
    # RFC 3030 section 4.2: after a refused BDAT the transaction stays open until
    # RSET, so only an accepted last chunk ends it.
    (_S.TRANSACTION, _K.BDAT_LAST, _P): _S.READY,
    # 354 after a refused MAIL can only come from a broken server, but it still
    # puts the server in the data phase, and the client must end it.
    **{(state, _K.DATA, _I): _S.DATA for state in _OPEN},
    **{(state, _K.STARTTLS, _P): _S.TLS_PENDING for state in _OPEN},
    **{(state, _K.AUTH, _I): _S.AUTH for state in _OPEN},
    (_S.AUTH, _K.AUTH_RESPONSE, _I): _S.AUTH,
    (_S.AUTH, _K.AUTH_RESPONSE, _P): _S.READY,
    (_S.AUTH, _K.AUTH_RESPONSE, _N): _S.READY,
    **{(state, _K.QUIT, outcome): _S.CLOSED for state in _OPEN for outcome in (_P, _N)},
}
