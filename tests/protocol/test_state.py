"""Properties of the transition tables, checked on the tables themselves.

SMTPConnection's behaviour is tested in test_connection.py; here the tables must be
complete, closed under the states they mention, and agree with the RFCs they cite.
"""

from __future__ import annotations

import itertools

import pytest

from aiosmtp.protocol import CommandKind, State
from aiosmtp.protocol._state import (
    LAST_IN_GROUP,
    REPLY_TRANSITIONS,
    SENDABLE,
    WAITS_FOR_MORE,
    Outcome,
)

K = CommandKind
S = State
POS, MID, NEG = Outcome.POSITIVE, Outcome.INTERMEDIATE, Outcome.NEGATIVE
OPEN = (S.READY, S.TRANSACTION)
SENT_COMMANDS = frozenset(K) - {K.GREETING, K.END_OF_DATA, K.AUTH_RESPONSE, K.RECIPIENT_STATUS}


def test_every_state_has_a_sendable_entry() -> None:
    assert set(SENDABLE) == set(State)


def test_nothing_is_sent_before_the_greeting_during_a_tls_upgrade_or_after_the_end() -> None:
    assert SENDABLE[S.GREETING] == frozenset()
    assert SENDABLE[S.TLS_PENDING] == frozenset()
    assert SENDABLE[S.CLOSED] == frozenset()


def test_only_the_end_of_data_in_data() -> None:
    assert SENDABLE[S.DATA] == {K.END_OF_DATA}


def test_only_auth_responses_in_auth() -> None:
    assert SENDABLE[S.AUTH] == {K.AUTH_RESPONSE}


@pytest.mark.parametrize("state", OPEN)
def test_every_real_command_may_be_sent_when_open(state: State) -> None:
    assert SENDABLE[state] == SENT_COMMANDS


@pytest.mark.parametrize("state", list(State))
def test_pseudo_commands_are_never_sendable_outside_their_phase(state: State) -> None:
    assert K.GREETING not in SENDABLE[state]
    assert K.RECIPIENT_STATUS not in SENDABLE[state]
    if state is not S.DATA:
        assert K.END_OF_DATA not in SENDABLE[state]
    if state is not S.AUTH:
        assert K.AUTH_RESPONSE not in SENDABLE[state]


def test_rfc2920_last_in_group() -> None:
    # RFC 2920 section 3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP only at the
    # end of a group; STARTTLS (RFC 3207 4.2) and AUTH exchanges wait likewise.
    for kind in (K.EHLO, K.HELO, K.DATA, K.QUIT, K.OTHER, K.STARTTLS, K.AUTH):
        assert kind in LAST_IN_GROUP
    assert K.AUTH_RESPONSE in LAST_IN_GROUP
    assert K.GREETING in LAST_IN_GROUP  # the client speaks only after the greeting
    # RSET, MAIL and RCPT may appear anywhere in a group; BDAT too (RFC 3030 4.2);
    # the message content may be followed by the next commands.
    for kind in (K.RSET, K.MAIL, K.RCPT, K.BDAT, K.BDAT_LAST, K.END_OF_DATA):
        assert kind not in LAST_IN_GROUP


def test_waits_for_more_is_exactly_what_3xx_may_answer() -> None:
    assert {K.DATA, K.AUTH, K.AUTH_RESPONSE} <= WAITS_FOR_MORE
    for kind in (K.GREETING, K.EHLO, K.HELO, K.MAIL, K.RCPT, K.RSET, K.QUIT, K.STARTTLS):
        assert kind not in WAITS_FOR_MORE
    for kind in (K.END_OF_DATA, K.BDAT, K.BDAT_LAST, K.RECIPIENT_STATUS):
        assert kind not in WAITS_FOR_MORE


def test_intermediate_transitions_only_for_commands_that_wait_for_more() -> None:
    for state, kind, outcome in REPLY_TRANSITIONS:
        if outcome is MID:
            assert kind in WAITS_FOR_MORE, (state, kind)


def test_no_transition_out_of_closed_or_into_greeting() -> None:
    for (state, _, _), target in REPLY_TRANSITIONS.items():
        assert state is not S.CLOSED
        assert target is not S.GREETING


def test_replies_arrive_only_in_states_where_something_can_be_awaited() -> None:
    # DATA and TLS_PENDING are entered on the reply to a last-in-group command,
    # so no reply can arrive in them.
    for state, _, _ in REPLY_TRANSITIONS:
        assert state not in (S.DATA, S.TLS_PENDING, S.CLOSED)


def test_each_transition_answers_a_command_sendable_somewhere() -> None:
    awaitable = set().union(*SENDABLE.values()) | {K.GREETING}
    for state, kind, _ in REPLY_TRANSITIONS:
        assert kind in awaitable, (state, kind)
        if kind is K.GREETING:
            assert state is S.GREETING
        else:
            assert state is not S.GREETING


def test_greeting_leads_to_ready_whatever_it_says() -> None:
    # RFC 5321 section 3.1: after a 554 greeting the client may still QUIT.
    assert REPLY_TRANSITIONS[S.GREETING, K.GREETING, POS] is S.READY
    assert REPLY_TRANSITIONS[S.GREETING, K.GREETING, NEG] is S.READY
    assert (S.GREETING, K.GREETING, MID) not in REPLY_TRANSITIONS


@pytest.mark.parametrize(
    ("state", "kind"), list(itertools.product(OPEN, [K.EHLO, K.HELO, K.RSET]))
)
def test_ehlo_helo_rset_end_a_transaction(state: State, kind: CommandKind) -> None:
    assert REPLY_TRANSITIONS[state, kind, POS] is S.READY
    # A refused EHLO/HELO/RSET changes nothing.
    assert (state, kind, NEG) not in REPLY_TRANSITIONS


def test_mail_opens_a_transaction_only_when_accepted() -> None:
    assert REPLY_TRANSITIONS[S.READY, K.MAIL, POS] is S.TRANSACTION
    assert (S.READY, K.MAIL, NEG) not in REPLY_TRANSITIONS
    assert (S.READY, K.MAIL, MID) not in REPLY_TRANSITIONS


def test_recipients_do_not_move_the_state() -> None:
    for state, kind, _ in REPLY_TRANSITIONS:
        assert kind is not K.RCPT, state


@pytest.mark.parametrize("state", OPEN)
def test_data_phase_is_entered_on_354_only(state: State) -> None:
    assert REPLY_TRANSITIONS[state, K.DATA, MID] is S.DATA
    assert (state, K.DATA, POS) not in REPLY_TRANSITIONS
    assert (state, K.DATA, NEG) not in REPLY_TRANSITIONS
    entries = {key for key, target in REPLY_TRANSITIONS.items() if target is S.DATA}
    assert entries == {(s, K.DATA, MID) for s in OPEN}


def test_tls_pending_is_entered_on_a_positive_starttls_only() -> None:
    entries = {key for key, target in REPLY_TRANSITIONS.items() if target is S.TLS_PENDING}
    assert entries == {(s, K.STARTTLS, POS) for s in OPEN}


def test_auth_state_is_entered_on_334_and_left_on_anything_else() -> None:
    entries = {key for key, target in REPLY_TRANSITIONS.items() if target is S.AUTH}
    assert entries == {(s, K.AUTH, MID) for s in OPEN} | {(S.AUTH, K.AUTH_RESPONSE, MID)}
    assert REPLY_TRANSITIONS[S.AUTH, K.AUTH_RESPONSE, POS] is S.READY
    assert REPLY_TRANSITIONS[S.AUTH, K.AUTH_RESPONSE, NEG] is S.READY


def test_auth_state_answers_every_outcome() -> None:
    # In AUTH only an AUTH response can be awaited, so every outcome is listed.
    for outcome in Outcome:
        assert (S.AUTH, K.AUTH_RESPONSE, outcome) in REPLY_TRANSITIONS


def test_last_bdat_ends_the_transaction_only_when_accepted() -> None:
    # RFC 3030 section 4.2: after a refused BDAT the transaction stays open.
    assert REPLY_TRANSITIONS[S.TRANSACTION, K.BDAT_LAST, POS] is S.READY
    assert (S.TRANSACTION, K.BDAT_LAST, NEG) not in REPLY_TRANSITIONS
    for outcome in Outcome:
        assert (S.TRANSACTION, K.BDAT, outcome) not in REPLY_TRANSITIONS


@pytest.mark.parametrize(("state", "outcome"), list(itertools.product(OPEN, [POS, NEG])))
def test_quit_closes(state: State, outcome: Outcome) -> None:
    assert REPLY_TRANSITIONS[state, K.QUIT, outcome] is S.CLOSED


def test_every_state_is_reachable_from_the_greeting() -> None:
    # Besides the replies, two moves are made by the driver: the end of the data
    # (DATA -> READY) and start_tls_done() (TLS_PENDING -> READY); close() goes to
    # CLOSED from anywhere.
    edges = {(state, target) for (state, _, _), target in REPLY_TRANSITIONS.items()}
    edges |= {(S.DATA, S.READY), (S.TLS_PENDING, S.READY)}
    reached = {S.GREETING}
    frontier = [S.GREETING]
    while frontier:
        current = frontier.pop()
        for source, target in edges:
            if source is current and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)


def test_every_state_but_closed_can_get_back_to_ready() -> None:
    edges = {(state, target) for (state, _, _), target in REPLY_TRANSITIONS.items()}
    edges |= {(S.DATA, S.READY), (S.TLS_PENDING, S.READY)}
    for start in set(State) - {S.CLOSED}:
        reached = {start}
        frontier = [start]
        while frontier:
            current = frontier.pop()
            for source, target in edges:
                if source is current and target not in reached:
                    reached.add(target)
                    frontier.append(target)
        assert S.READY in reached, start


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        *[(200, POS), (220, POS), (250, POS), (299, POS), (334, MID), (354, MID), (399, MID)],
        *[(400, NEG), (421, NEG), (450, NEG), (500, NEG), (535, NEG), (554, NEG), (599, NEG)],
    ],
)
def test_outcome_of_code(code: int, outcome: Outcome) -> None:
    assert Outcome.of(code) is outcome
