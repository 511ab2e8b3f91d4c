"""Command: validated command lines, their bytes, and what may be logged of them."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    Command,
    CommandKind,
    ForbiddenCharacterError,
    LocalProtocolError,
    check_argument,
)

FORBIDDEN = ["\r", "\n", "\0"]

# Arguments a caller could pass to mail(), rcpt(), ehlo(), docmd()...
SMUGGLING = [
    "<a@example.com>\r\nRCPT TO:<victim@example.com>",
    "<a@example.com>\nDATA",
    "<a@example.com>\rRSET",
    "<a@example.com>\0",
    "\r\n",
    "\n",
    "\r",
    "\0",
    "x\r\n.\r\n",
]


def test_forbidden_character_error_is_both_kinds_of_error() -> None:
    assert issubclass(ForbiddenCharacterError, ValueError)
    assert issubclass(ForbiddenCharacterError, LocalProtocolError)


@pytest.mark.parametrize("argument", SMUGGLING)
def test_forbidden_characters_in_the_argument(argument: str) -> None:
    with pytest.raises(ForbiddenCharacterError):
        Command("MAIL", f"FROM:{argument}", CommandKind.MAIL)
    with pytest.raises(ForbiddenCharacterError):
        Command.make("RCPT", f"TO:{argument}")
    with pytest.raises(ValueError, match=r"forbidden (CR|LF|NUL)"):
        Command.make("EHLO", argument)
    with pytest.raises(ForbiddenCharacterError):
        check_argument("address", argument)


@pytest.mark.parametrize("char", FORBIDDEN)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_forbidden_characters_anywhere_in_the_verb(char: str, where: str) -> None:
    verb = {"start": char + "NOOP", "middle": "NO" + char + "OP", "end": "NOOP" + char}[where]
    with pytest.raises(ForbiddenCharacterError):
        Command(verb)
    with pytest.raises(ForbiddenCharacterError):
        Command.make(verb, "argument")
    with pytest.raises(ForbiddenCharacterError):
        Command.auth_response(verb)


@pytest.mark.parametrize("char", FORBIDDEN)
def test_error_names_the_character(char: str) -> None:
    name = {"\r": "CR", "\n": "LF", "\0": "NUL"}[char]
    with pytest.raises(ForbiddenCharacterError, match=name):
        check_argument("recipient", f"a{char}b")


@given(
    st.text(max_size=20),
    st.sampled_from(FORBIDDEN),
    st.text(max_size=20),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_any_forbidden_character_is_refused(
    before: str, char: str, after: str, in_verb: bool
) -> None:
    text = before + char + after
    verb, argument = (text, "") if in_verb else ("VRFY", text)
    with pytest.raises(ForbiddenCharacterError):
        Command.make(verb, argument)


@given(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), min_size=1, max_size=20),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_a_valid_command_is_exactly_one_line(verb: str, argument: str) -> None:
    line = Command.make(verb, argument).to_bytes("utf-8")
    assert line.endswith(b"\r\n")
    body = line[:-2]
    assert b"\r" not in body
    assert b"\n" not in body
    assert b"\0" not in body
    expected = f"{verb} {argument}" if argument else verb
    assert body == expected.encode()


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (Command.make("EHLO", "client.example"), b"EHLO client.example\r\n"),
        (Command.make("HELO", "client.example"), b"HELO client.example\r\n"),
        (Command.make("MAIL", "FROM:<a@example.com>"), b"MAIL FROM:<a@example.com>\r\n"),
        (Command.make("MAIL", "FROM:<>"), b"MAIL FROM:<>\r\n"),
        (
            Command.make("RCPT", "TO:<b@example.com> NOTIFY=NEVER"),
            b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\n",
        ),
        (Command.make("DATA"), b"DATA\r\n"),
        (Command.make("NOOP"), b"NOOP\r\n"),
        (Command.make("QUIT", ""), b"QUIT\r\n"),
        (Command("BDAT", "1024 LAST", CommandKind.BDAT_LAST), b"BDAT 1024 LAST\r\n"),
        (Command.make("AUTH", "PLAIN AGEAYg=="), b"AUTH PLAIN AGEAYg==\r\n"),
        (Command.auth_response("dXNlcg=="), b"dXNlcg==\r\n"),
        (Command.auth_response(""), b"\r\n"),
        (Command.auth_response("*"), b"*\r\n"),
    ],
)
def test_to_bytes(command: Command, wire: bytes) -> None:
    assert command.to_bytes() == wire
    assert command.to_bytes("ascii") == wire
    assert command.to_bytes("utf-8") == wire


def test_non_ascii_needs_utf8() -> None:
    command = Command.make("MAIL", "FROM:<jörg@exämple.com> SMTPUTF8")
    with pytest.raises(UnicodeEncodeError):
        command.to_bytes()
    # UnicodeEncodeError is a ValueError, which is what smtplib's callers catch.
    with pytest.raises(ValueError, match="ascii"):
        command.to_bytes("ascii")
    assert command.to_bytes("utf-8") == "MAIL FROM:<jörg@exämple.com> SMTPUTF8\r\n".encode()


def test_non_ascii_verb_needs_utf8() -> None:
    command = Command.make("VRFŸ")
    with pytest.raises(UnicodeEncodeError):
        command.to_bytes()
    assert command.to_bytes("utf-8") == b"VRF\xc5\xb8\r\n"


@pytest.mark.parametrize(
    ("verb", "kind"),
    [
        ("EHLO", CommandKind.EHLO),
        ("ehlo", CommandKind.EHLO),
        ("LHLO", CommandKind.EHLO),
        ("lhlo", CommandKind.EHLO),
        ("HELO", CommandKind.HELO),
        ("Helo", CommandKind.HELO),
        ("MAIL", CommandKind.MAIL),
        ("mail", CommandKind.MAIL),
        ("RCPT", CommandKind.RCPT),
        ("DATA", CommandKind.DATA),
        ("data", CommandKind.DATA),
        ("RSET", CommandKind.RSET),
        ("STARTTLS", CommandKind.STARTTLS),
        ("starttls", CommandKind.STARTTLS),
        ("AUTH", CommandKind.AUTH),
        ("QUIT", CommandKind.QUIT),
        ("quit", CommandKind.QUIT),
        ("NOOP", CommandKind.OTHER),
        ("VRFY", CommandKind.OTHER),
        ("EXPN", CommandKind.OTHER),
        ("HELP", CommandKind.OTHER),
        ("XCLIENT", CommandKind.OTHER),
        ("MAILX", CommandKind.OTHER),
        ("DAT", CommandKind.OTHER),
        ("", CommandKind.OTHER),
        # docmd("MAIL FROM:<a@b>") puts the whole line in the verb.
        ("MAIL FROM:<a@example.com>", CommandKind.MAIL),
        ("quit now", CommandKind.QUIT),
    ],
)
def test_kind_of_verb(verb: str, kind: CommandKind) -> None:
    assert CommandKind.of_verb(verb) is kind
    assert Command.make(verb).kind is kind


def test_defaults() -> None:
    command = Command("NOOP")
    assert command.argument == ""
    assert command.kind is CommandKind.OTHER
    assert command.sensitive is False
    assert Command.make("AUTH", "LOGIN").sensitive is False
    assert Command.make("AUTH", "PLAIN AGEAYg==", sensitive=True).sensitive is True


def test_auth_response_is_its_own_kind_and_sensitive() -> None:
    command = Command.auth_response("c2VjcmV0")
    assert command.kind is CommandKind.AUTH_RESPONSE
    assert command.sensitive is True
    assert command.argument == ""


def test_commands_are_frozen_values() -> None:
    command = Command.make("MAIL", "FROM:<a@example.com>")
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.argument = "FROM:<b@example.com>\r\nDATA"  # type: ignore[misc]
    assert command == Command("MAIL", "FROM:<a@example.com>", CommandKind.MAIL)
    assert hash(command) == hash(Command("MAIL", "FROM:<a@example.com>", CommandKind.MAIL))
    assert command != Command.make("MAIL", "FROM:<b@example.com>")


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (Command.make("MAIL", "FROM:<a@example.com>"), "MAIL FROM:<a@example.com>"),
        (Command.make("NOOP"), "NOOP"),
        (Command.make("EHLO", "client.example"), "EHLO client.example"),
        (Command.make("AUTH", "LOGIN"), "AUTH LOGIN"),
        (Command.make("AUTH", "CRAM-MD5"), "AUTH CRAM-MD5"),
        (Command.make("AUTH", "PLAIN AHRpbQB0YW5zdGFhZg=="), "AUTH PLAIN <redacted>"),
        (Command.make("auth", "PLAIN AHRpbQB0YW5zdGFhZg=="), "AUTH PLAIN <redacted>"),
        (
            Command.make("AUTH", "XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ=="),
            "AUTH XOAUTH2 <redacted>",
        ),
        (Command.make("AUTH", "PLAIN ="), "AUTH PLAIN <redacted>"),
        (Command.auth_response("dGFuc3RhYWY="), "<redacted>"),
        (Command.auth_response(""), "<redacted>"),
        (Command("XSECRET", "hunter2", CommandKind.OTHER, sensitive=True), "<redacted>"),
    ],
)
def test_redacted(command: Command, shown: str) -> None:
    assert command.redacted() == shown


@pytest.mark.parametrize(
    "command",
    [
        Command.make("AUTH", "PLAIN AHRpbQB0YW5zdGFhZg=="),
        Command.make("AUTH PLAIN AHRpbQB0YW5zdGFhZg=="),  # docmd() with the whole line
        Command("AUTH", "PLAIN AHRpbQB0YW5zdGFhZg==", CommandKind.AUTH, sensitive=True),
        Command.auth_response("AHRpbQB0YW5zdGFhZg=="),
        Command("x", "AHRpbQB0YW5zdGFhZg==", CommandKind.OTHER, sensitive=True),
        Command("AHRpbQB0YW5zdGFhZg==", "", CommandKind.OTHER, sensitive=True),
    ],
)
def test_redacted_never_shows_a_secret(command: Command) -> None:
    assert "AHRpbQB0YW5zdGFhZg==" not in command.redacted()
    assert "AHRpbQB0YW5zdGFhZg==" not in repr(command.redacted())


@given(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0 "), min_size=1, max_size=30)
)
@settings(max_examples=200, deadline=None)
def test_redacted_hides_any_auth_payload(payload: str) -> None:
    for command in (
        Command.make("AUTH", f"PLAIN {payload}"),
        Command.auth_response(payload),
    ):
        shown = command.redacted()
        assert shown in {"AUTH PLAIN <redacted>", "<redacted>"}
