"""The core's DSN value and encodings (RFC 3461, RFC 6533), and the MAIL/RCPT
parameter planner (SIZE, REQUIRETLS, DSN, BODY): pure functions, no I/O."""

from __future__ import annotations

import re
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    DSN,
    EightBitUnknown,
    ExtensionNotOffered,
    LocalProtocolError,
    MessageTooLarge,
    plan_envelope,
    size_limit,
    utf8_addr_xtext,
    xtext_decode,
    xtext_encode,
)
from aiosmtp.protocol._dsn import dsn_option_conflicts

# -- xtext (RFC 3461 section 4) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("alice@example.org", "alice@example.org"),
        # "+" and "=" are the two printable characters xtext must encode.
        ("a+b=c", "a+2Bb+3Dc"),
        ("two words", "two+20words"),
        ("tab\there", "tab+09here"),
        ("del\x7f", "del+7F"),
        # Every other printable character stands for itself.
        ("!\"#$%&'()*,-./:;<>?[\\]^_`{|}~", "!\"#$%&'()*,-./:;<>?[\\]^_`{|}~"),
        (b"\x00\xff", "+00+FF"),
    ],
)
def test_xtext_encode(text: str | bytes, encoded: str) -> None:
    assert xtext_encode(text) == encoded
    raw = text if isinstance(text, bytes) else text.encode("ascii")
    assert xtext_decode(encoded) == raw


def test_xtext_encode_refuses_non_ascii_text() -> None:
    with pytest.raises(ValueError, match="jörg"):
        xtext_encode("jörg@example.org")


@pytest.mark.parametrize(
    "bad", ["+", "+2", "+2b", "+GG", "a=b", "a b", "caf\u00e9", "x\r\n", "+ 20"]
)
def test_xtext_decode_refuses_what_is_not_xtext(bad: str) -> None:
    with pytest.raises(ValueError, match="xtext"):
        xtext_decode(bad)


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_xtext_round_trip_and_alphabet(raw: bytes) -> None:
    encoded = xtext_encode(raw)
    assert xtext_decode(encoded) == raw
    # Only xchars and upper-case hexchars: safe in any esmtp-value.
    assert re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*", encoded)


# -- utf-8-addr-xtext (RFC 6533 section 3) -------------------------------------------------


@pytest.mark.parametrize(
    ("address", "encoded"),
    [
        ("ascii@example.org", "ascii@example.org"),
        ("jörg@exämple.org", "j\\x{F6}rg@ex\\x{E4}mple.org"),
        ("用户@例子.广告", "\\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}"),
        ("\U0001d518@x.org", "\\x{1D518}@x.org"),  # outside the BMP
        # The ASCII characters QCHAR leaves out: "+", "=", "\", space, DEL.
        ('"a b+c=d\\e"@x.org', '"a\\x{20}b\\x{2B}c\\x{3D}d\\x{5C}e"@x.org'),
        ("del\x7f@x.org", "del\\x{7F}@x.org"),
    ],
)
def test_utf8_addr_xtext(address: str, encoded: str) -> None:
    assert utf8_addr_xtext(address) == encoded
    assert encoded.isascii()


@pytest.mark.parametrize("address", ["a\x00b@x.org", "a\nb@x.org", "a\x1fb@x.org", "\ud800@x"])
def test_utf8_addr_xtext_refuses_what_has_no_form(address: str) -> None:
    with pytest.raises(ValueError, match="cannot"):
        utf8_addr_xtext(address)


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)


def _decode_utf8_addr_xtext(text: str) -> str:
    return re.sub(r"\\x\{([0-9A-F]{2,6})\}", lambda m: chr(int(m.group(1), 16)), text)


@given(st.text(st.characters(min_codepoint=0x21, exclude_categories=SURROGATES), max_size=30))
@settings(max_examples=300, deadline=None)
def test_utf8_addr_xtext_round_trip(address: str) -> None:
    encoded = utf8_addr_xtext(address)
    assert encoded.isascii()
    assert " " not in encoded
    assert "+" not in encoded
    assert "=" not in encoded
    assert _decode_utf8_addr_xtext(encoded) == address
    # HEXPOINT: upper-case, no leading zeros beyond two digits.
    for point in re.findall(r"\\x\{([^}]*)\}", encoded):
        assert re.fullmatch(r"[0-9A-F]{2,6}", point)
        assert len(point) == 2 or point[0] != "0"


# -- DSN -------------------------------------------------------------------------------------


def test_dsn_defaults_ask_for_nothing_but_orcpt() -> None:
    dsn = DSN()
    assert dsn.mail_parameters() == ()
    assert dsn.rcpt_parameters("bob@example.org") == ("ORCPT=rfc822;bob@example.org",)
    assert DSN(orcpt=False).rcpt_parameters("bob@example.org") == ()


@pytest.mark.parametrize(
    ("notify", "stored", "wire"),
    [
        ("NEVER", {"NEVER"}, "NOTIFY=NEVER"),
        ("never", {"NEVER"}, "NOTIFY=NEVER"),
        ({"NEVER"}, {"NEVER"}, "NOTIFY=NEVER"),
        ("SUCCESS", {"SUCCESS"}, "NOTIFY=SUCCESS"),
        ({"DELAY", "SUCCESS"}, {"SUCCESS", "DELAY"}, "NOTIFY=SUCCESS,DELAY"),
        (["failure", "delay"], {"FAILURE", "DELAY"}, "NOTIFY=FAILURE,DELAY"),
        (
            frozenset({"DELAY", "FAILURE", "SUCCESS"}),
            {"SUCCESS", "FAILURE", "DELAY"},
            "NOTIFY=SUCCESS,FAILURE,DELAY",
        ),
    ],
)
def test_dsn_notify_is_normalised(notify: object, stored: set[str], wire: str) -> None:
    dsn = DSN(notify=notify, orcpt=False)  # type: ignore[arg-type]
    assert dsn.notify == frozenset(stored)
    assert dsn.rcpt_parameters("x@y.org") == (wire,)
    assert dsn == DSN(notify=frozenset(stored), orcpt=False)
    assert hash(dsn) == hash(DSN(notify=frozenset(stored), orcpt=False))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"notify": {"NEVER", "SUCCESS"}}, "NEVER must stand alone"),
        ({"notify": "SOMETIMES"}, "'SOMETIMES'"),
        ({"notify": {"SUCCESS", "SOON"}}, "'SOON'"),
        ({"notify": set()}, "empty"),
        ({"notify": "SUCCESS,FAILURE"}, "'SUCCESS,FAILURE'"),
        ({"notify": [1]}, "1"),
        ({"ret": "BODY"}, "'BODY'"),
        ({"ret": ""}, "''"),
        ({"envid": ""}, "''"),
        ({"envid": "caf\u00e9"}, "'café'"),
        ({"envid": "line\r\nbreak"}, "line"),
        ({"envid": "x" * 101}, "100"),
        ({"envid": "+" * 34}, "100"),  # 102 characters once encoded
    ],
)
def test_dsn_refuses_bad_values_naming_them(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        DSN(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"notify": 3}, {"orcpt": "yes"}])
def test_dsn_refuses_wrong_types(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        DSN(**kwargs)  # type: ignore[arg-type]


def test_dsn_is_frozen() -> None:
    dsn = DSN(ret="FULL")
    with pytest.raises(AttributeError):
        dsn.ret = "HDRS"  # type: ignore[misc]


def test_dsn_mail_and_rcpt_parameters() -> None:
    dsn = DSN(notify={"SUCCESS", "FAILURE"}, ret="hdrs", envid="QQ 314159+1=2")  # type: ignore[arg-type]
    assert dsn.ret == "HDRS"
    assert dsn.mail_parameters() == ("RET=HDRS", "ENVID=QQ+20314159+2B1+3D2")
    assert dsn.rcpt_parameters("a+b@example.org") == (
        "NOTIFY=SUCCESS,FAILURE",
        "ORCPT=rfc822;a+2Bb@example.org",
    )
    # RFC 6533: an internationalized recipient is of type utf-8, in 7-bit form.
    assert dsn.rcpt_parameters("zoë@example.org") == (
        "NOTIFY=SUCCESS,FAILURE",
        "ORCPT=utf-8;zo\\x{EB}@example.org",
    )


def test_dsn_envid_of_exactly_100_encoded_characters() -> None:
    assert DSN(envid="x" * 100).mail_parameters() == ("ENVID=" + "x" * 100,)


def test_overlong_orcpt_is_refused() -> None:
    address = "a" * 482 + "@example.org"  # 501 characters with "rfc822;"
    with pytest.raises(ValueError, match="orcpt=False"):
        DSN().rcpt_parameters(address)
    assert DSN(orcpt=False).rcpt_parameters(address) == ()
    (longest,) = DSN().rcpt_parameters(address[1:])
    assert len(longest) == len("ORCPT=") + 500


@pytest.mark.parametrize(
    ("dsn", "mail", "rcpt", "conflicts"),
    [
        (DSN(ret="FULL"), ["RET=HDRS"], [], ["RET=HDRS"]),
        (DSN(ret="FULL"), ["ret=full"], [], ["ret=full"]),
        (DSN(envid="x"), ["ENVID=y", "SMTPUTF8"], [], ["ENVID=y"]),
        (DSN(notify="NEVER", orcpt=False), [], ["NOTIFY=SUCCESS"], ["NOTIFY=SUCCESS"]),
        (DSN(), [], ["ORCPT=rfc822;x@y"], ["ORCPT=rfc822;x@y"]),
        # What the DSN leaves unset, a raw option may set.
        (DSN(notify="NEVER"), ["RET=HDRS", "ENVID=x"], [], []),
        (DSN(ret="FULL", orcpt=False), [], ["NOTIFY=SUCCESS", "ORCPT=rfc822;x@y"], []),
    ],
)
def test_dsn_option_conflicts(
    dsn: DSN, mail: list[str], rcpt: list[str], conflicts: list[str]
) -> None:
    assert dsn_option_conflicts(dsn, mail, rcpt) == conflicts


# -- the planner: SIZE ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "limit"),
    [
        ({}, None),
        ({"size": ""}, None),
        ({"size": "0"}, None),
        ({"size": "10240000"}, 10240000),
        ({"size": " 1000 "}, 1000),
        ({"size": "lots"}, None),
        ({"size": "-5"}, None),
        ({"size": "\u0661\u0662"}, None),  # Arabic-Indic digits are not a number here
    ],
)
def test_size_limit(features: dict[str, str], limit: int | None) -> None:
    assert size_limit(features) == limit


@pytest.mark.parametrize(
    ("size", "limit", "refused"),
    [(1000, "1000", False), (1001, "1000", True), (None, "1000", False), (10**9, "0", False)],
)
def test_size_precheck(size: int | None, limit: str, refused: bool) -> None:
    features = {"size": limit}
    if not refused:
        assert plan_envelope(features, recipients=["b@x"], size=size).mail == ()
        return
    with pytest.raises(MessageTooLarge) as caught:
        plan_envelope(features, recipients=["b@x"], size=size)
    assert isinstance(caught.value, LocalProtocolError)
    assert (caught.value.size, caught.value.limit) == (size, int(limit))
    assert f"message of {size} bytes exceeds the server's limit of {limit} bytes" in str(
        caught.value
    )


# -- the planner: REQUIRETLS ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "advertised", "named"),
    [
        (False, True, ["not encrypted"]),
        (True, False, ["does not advertise REQUIRETLS"]),
        (False, False, ["not encrypted", "does not advertise REQUIRETLS"]),
    ],
)
def test_require_tls_refused(tls: bool, advertised: bool, named: list[str]) -> None:
    features = {"requiretls": ""} if advertised else {}
    with pytest.raises(ExtensionNotOffered) as caught:
        plan_envelope(features, recipients=["b@x"], tls=tls, require_tls=True)
    assert caught.value.extension == "REQUIRETLS"
    for part in named:
        assert part in str(caught.value)
    if len(named) == 1:
        other = {"not encrypted", "does not advertise REQUIRETLS"} - set(named)
        assert other.pop() not in str(caught.value)


def test_require_tls_granted() -> None:
    features = {"requiretls": ""}
    plan = plan_envelope(features, recipients=["b@x"], tls=True, require_tls=True)
    assert plan.mail == ("REQUIRETLS",)
    # Given raw as well: once.
    plan = plan_envelope(
        features, recipients=["b@x"], mail_options=["REQUIRETLS"], tls=True, require_tls=True
    )
    assert plan.mail == ()


# -- the planner: DSN ---------------------------------------------------------------------------


def test_dsn_needs_the_extension() -> None:
    with pytest.raises(ExtensionNotOffered, match="DSN") as caught:
        plan_envelope({"size": "100"}, recipients=["b@x"], dsn=DSN(notify="NEVER"))
    assert caught.value.extension == "DSN"


def test_dsn_parameters_per_recipient() -> None:
    dsn = DSN(notify={"FAILURE"}, ret="FULL", envid="e1")
    plan = plan_envelope({"dsn": ""}, recipients=["a@x.org", "zoë@x.org"], dsn=dsn)
    assert plan.mail == ("RET=FULL", "ENVID=e1")
    assert plan.rcpt == (
        ("NOTIFY=FAILURE", "ORCPT=rfc822;a@x.org"),
        ("NOTIFY=FAILURE", "ORCPT=utf-8;zo\\x{EB}@x.org"),
    )
    assert plan_envelope({"dsn": ""}, recipients=["a@x.org"]).rcpt is None


def test_dsn_conflict_is_a_value_error_before_anything_else() -> None:
    # The caller's contradiction is reported even where DSN is not offered at all.
    with pytest.raises(ValueError, match="NOTIFY=NEVER"):
        plan_envelope(
            {},
            recipients=["b@x"],
            rcpt_options=["NOTIFY=NEVER"],
            dsn=DSN(notify="SUCCESS"),
            require_tls=True,
        )


# -- the planner: BODY= -------------------------------------------------------------------------

E8 = {"8bitmime": ""}
BIN = {"binarymime": "", "chunking": ""}


@pytest.mark.parametrize(
    ("features", "bdat", "eight_bit", "declared", "body"),
    [
        ({}, False, False, [], None),
        (E8, False, False, [], None),  # 7-bit: no declaration, as smtplib
        (E8, False, True, [], "BODY=8BITMIME"),
        (E8, False, None, [], "BODY=8BITMIME"),  # unknown: declared, harmless
        ({**E8, **BIN}, True, True, [], "BODY=8BITMIME"),
        (BIN, True, True, [], "BODY=BINARYMIME"),
        (BIN, True, None, [], "BODY=BINARYMIME"),
        (BIN, False, True, [], None),  # no BDAT: BINARYMIME is no route
        ({}, False, True, [], None),  # smtplib's default: send anyway
        (E8, False, True, ["BODY=7BIT"], None),  # the caller's BODY= wins
        (E8, False, True, ["body=8bitmime"], None),
    ],
)
def test_body_parameter(
    features: dict[str, str],
    bdat: bool,
    eight_bit: bool | None,
    declared: list[str],
    body: str | None,
) -> None:
    plan = plan_envelope(
        features, recipients=["b@x"], bdat=bdat, eight_bit=eight_bit, mail_options=declared
    )
    assert plan.mail == (() if body is None else (body,))


@pytest.mark.parametrize(
    ("features", "bdat", "eight_bit", "declared", "error"),
    [
        ({}, False, True, [], ExtensionNotOffered),
        (BIN, False, True, [], ExtensionNotOffered),
        ({}, False, None, [], EightBitUnknown),
        ({}, False, True, ["BODY=8BITMIME"], ExtensionNotOffered),
        (E8, False, True, ["BODY=BINARYMIME"], ExtensionNotOffered),
        ({}, False, True, ["BODY=7BIT"], ValueError),
    ],
)
def test_strict_8bit_refusals(
    features: dict[str, str],
    bdat: bool,
    eight_bit: bool | None,
    declared: list[str],
    error: type[Exception],
) -> None:
    with pytest.raises(error) as caught:
        plan_envelope(
            features,
            recipients=["b@x"],
            bdat=bdat,
            eight_bit=eight_bit,
            mail_options=declared,
            strict_8bit=True,
        )
    if isinstance(caught.value, ExtensionNotOffered):
        assert "8BITMIME" in str(caught.value) or "BINARYMIME" in str(caught.value)


@pytest.mark.parametrize(
    ("features", "bdat", "eight_bit", "declared", "body"),
    [
        ({}, False, False, [], None),
        ({}, False, None, ["BODY=7BIT"], None),  # the caller vouches for a stream
        (E8, False, True, [], "BODY=8BITMIME"),
        (BIN, True, True, [], "BODY=BINARYMIME"),
        (BIN, True, True, ["BODY=BINARYMIME"], None),
    ],
)
def test_strict_8bit_granted(
    features: dict[str, str],
    bdat: bool,
    eight_bit: bool | None,
    declared: list[str],
    body: str | None,
) -> None:
    plan = plan_envelope(
        features,
        recipients=["b@x"],
        bdat=bdat,
        eight_bit=eight_bit,
        mail_options=declared,
        strict_8bit=True,
    )
    assert plan.mail == (() if body is None else (body,))


def test_everything_at_once_in_order() -> None:
    features = {"size": "5000", "dsn": "", "8bitmime": "", "requiretls": ""}
    plan = plan_envelope(
        features,
        recipients=["a@x.org"],
        tls=True,
        size=4000,
        eight_bit=True,
        dsn=DSN(ret="HDRS", envid="id", notify="NEVER"),
        require_tls=True,
        strict_8bit=True,
    )
    assert plan.mail == ("BODY=8BITMIME", "RET=HDRS", "ENVID=id", "REQUIRETLS")
    assert plan.rcpt == (("NOTIFY=NEVER", "ORCPT=rfc822;a@x.org"),)


def test_a_missing_extension_is_reported_before_the_size() -> None:
    # Both would refuse; the one the caller can act on without the server goes first.
    with pytest.raises(ExtensionNotOffered):
        plan_envelope({"size": "10"}, recipients=["b@x"], size=11, dsn=DSN())
