"""Delivery Status Notifications (RFC 3461) as a typed value, and its encodings.

``DSN`` is what a caller asks for; it is checked when it is built, so that a bad
value fails where it was written, not when the server answers. It knows how to
become the ESMTP parameters of MAIL (RET, ENVID) and of each RCPT (NOTIFY,
ORCPT); whether the server may be sent them is the client's business.

Two encodings carry text that could otherwise break a command line:

* xtext (RFC 3461 section 4): every byte outside ``!``..``~``, and ``+`` and
  ``=`` themselves, becomes ``+`` and two upper-case hex digits;
* utf-8-addr-xtext (RFC 6533 section 3): for the ``utf-8`` address type of an
  internationalized ORCPT, ASCII stays as it is except ``\\``, ``+``, ``=``, space
  and controls, and every other character becomes ``\\x{HEX}`` (its code point).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Literal, cast

__all__ = [
    "DSN",
    "NOTIFY_KEYWORDS",
    "dsn_option_conflicts",
    "utf8_addr_xtext",
    "xtext_decode",
    "xtext_encode",
]

#: RFC 3461 section 4.1: the conditions NOTIFY may list (or NEVER, alone).
NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")
_RET_VALUES = ("FULL", "HDRS")
#: RFC 3461 sections 4.4 and 4.2: the longest ENVID and ORCPT values, counted here
#: after encoding (the stricter reading).
MAX_ENVID_LENGTH = 100
MAX_ORCPT_LENGTH = 500

_HEX = "0123456789ABCDEF"


def _is_xchar(byte: int) -> bool:
    # xchar: "!" to "~", except "+" and "=" (RFC 3461 section 4).
    return 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D)


def xtext_encode(value: str | bytes) -> str:
    """The xtext form of ``value`` (a ``str`` must be ASCII: xtext encodes octets
    of an ASCII text, RFC 3461 section 4)."""
    if isinstance(value, str):
        if not value.isascii():
            raise ValueError(f"xtext encodes ASCII text only, not {value!r}")
        value = value.encode("ascii")
    return "".join(
        chr(byte) if _is_xchar(byte) else f"+{_HEX[byte >> 4]}{_HEX[byte & 15]}" for byte in value
    )


def xtext_decode(text: str) -> bytes:
    """The octets an xtext stands for; ValueError if it is not valid xtext."""
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "+":
            pair = text[index + 1 : index + 3]
            if len(pair) != 2 or any(digit not in _HEX for digit in pair):
                raise ValueError(f"bad hexchar at {index} in xtext {text!r}")
            out.append(int(pair, 16))
            index += 3
            continue
        if not (char.isascii() and _is_xchar(ord(char))):
            raise ValueError(f"{char!r} at {index} is not allowed in xtext {text!r}")
        out.append(ord(char))
        index += 1
    return bytes(out)


# RFC 6533 section 3, HEXPOINT: the ASCII code points that may be written as
# \x{..}: "\" itself, the xtext specials "+" "=" and space, DEL, and the controls
# 01-09 and 10-19 (the grammar has no form for 0A-0F or 1A-1F).
_ENCODABLE_ASCII = frozenset(
    [*range(0x01, 0x0A), *range(0x10, 0x1A), 0x20, 0x2B, 0x3D, 0x5C, 0x7F]
)


def _is_qchar(code: int) -> bool:
    # QCHAR: printable ASCII except SP, "+", "=" and "\" (RFC 6533 section 3).
    return 0x21 <= code <= 0x7E and code not in (0x2B, 0x3D, 0x5C)


def utf8_addr_xtext(address: str) -> str:
    """The utf-8-addr-xtext form of an (internationalized) address, RFC 6533: pure
    ASCII on the wire, whatever the address holds."""
    parts = []
    for char in address:
        code = ord(char)
        if _is_qchar(code):
            parts.append(char)
        elif code >= 0x80 or code in _ENCODABLE_ASCII:
            if 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"a lone surrogate cannot be encoded: {address!r}")
            parts.append(f"\\x{{{code:02X}}}")
        else:
            raise ValueError(f"character {char!r} cannot appear in an address: {address!r}")
    return "".join(parts)


def _normalize_notify(notify: object) -> frozenset[str] | None:
    if notify is None:
        return None
    if isinstance(notify, str):
        words: list[object] = [notify]
    elif isinstance(notify, Iterable):
        words = list(notify)
    else:
        raise TypeError(f"DSN notify must be None, 'NEVER' or a set of conditions, not {notify!r}")
    normalized = set()
    for word in words:
        if not isinstance(word, str) or word.upper() not in (*NOTIFY_KEYWORDS, "NEVER"):
            raise ValueError(
                f"DSN notify: {word!r} is not one of NEVER, {', '.join(NOTIFY_KEYWORDS)}"
            )
        normalized.add(word.upper())
    if not normalized:
        raise ValueError("DSN notify: an empty set asks for nothing; pass None or 'NEVER'")
    if "NEVER" in normalized and len(normalized) > 1:
        raise ValueError(
            f"DSN notify: NEVER must stand alone, not with {sorted(normalized - {'NEVER'})}"
        )
    return frozenset(normalized)


@dataclass(frozen=True, slots=True)
class DSN:
    """What delivery status notifications to ask for (RFC 3461).

    ``notify``: None (the server's default, usually FAILURE and DELAY), ``"NEVER"``,
    or a set of ``"SUCCESS"``, ``"FAILURE"``, ``"DELAY"`` (stored as a frozenset).
    ``ret``: None, ``"FULL"`` (return the whole message) or ``"HDRS"`` (its headers).
    ``envid``: an envelope identifier of printable ASCII, returned in every notice.
    ``orcpt``: send each recipient as the original recipient (ORCPT), so notices
    name the address the caller used, whatever the servers rewrote it to.
    """

    notify: Set[str] | Literal["NEVER", "SUCCESS", "FAILURE", "DELAY"] | None = None
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    orcpt: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "notify", _normalize_notify(self.notify))
        if self.ret is not None:
            if not isinstance(self.ret, str) or self.ret.upper() not in _RET_VALUES:
                raise ValueError(f"DSN ret: {self.ret!r} is not FULL or HDRS")
            object.__setattr__(self, "ret", self.ret.upper())
        if self.envid is not None:
            if not isinstance(self.envid, str) or not self.envid:
                raise ValueError(f"DSN envid: {self.envid!r} is not a non-empty string")
            # RFC 3461 section 4.4: printable US-ASCII only.
            if not all(" " <= char <= "~" for char in self.envid):
                raise ValueError(
                    f"DSN envid: {self.envid!r} holds characters other than printable ASCII"
                )
            if len(xtext_encode(self.envid)) > MAX_ENVID_LENGTH:
                raise ValueError(
                    f"DSN envid: {self.envid!r} is longer than {MAX_ENVID_LENGTH} "
                    "characters as xtext"
                )
        if not isinstance(self.orcpt, bool):
            raise TypeError(f"DSN orcpt: {self.orcpt!r} is not True or False")

    def mail_parameters(self) -> tuple[str, ...]:
        """The MAIL parameters: RET and ENVID, when asked for."""
        params = []
        if self.ret is not None:
            params.append(f"RET={self.ret}")
        if self.envid is not None:
            params.append(f"ENVID={xtext_encode(self.envid)}")
        return tuple(params)

    def rcpt_parameters(self, address: str) -> tuple[str, ...]:
        """The parameters of the RCPT for ``address`` (the bare address): NOTIFY and
        ORCPT. ORCPT is ``rfc822;`` + xtext for an ASCII address, ``utf-8;`` +
        utf-8-addr-xtext (RFC 6533) for an internationalized one."""
        params = []
        if self.notify is not None:
            notify = cast(frozenset[str], self.notify)
            words = [word for word in ("NEVER", *NOTIFY_KEYWORDS) if word in notify]
            params.append("NOTIFY=" + ",".join(words))
        if self.orcpt and address:
            if address.isascii():
                value = "rfc822;" + xtext_encode(address)
            else:
                value = "utf-8;" + utf8_addr_xtext(address)
            if len(value) > MAX_ORCPT_LENGTH:
                raise ValueError(
                    f"ORCPT for {address!r} is longer than {MAX_ORCPT_LENGTH} characters; "
                    "pass DSN(orcpt=False)"
                )
            params.append(f"ORCPT={value}")
        return tuple(params)


def _keyword(option: str) -> str:
    return option.split("=", 1)[0].strip().upper()


def dsn_option_conflicts(
    dsn: DSN, mail_options: Iterable[str], rcpt_options: Iterable[str]
) -> list[str]:
    """The raw options that ask again for what ``dsn`` already sets (RFC 5321
    section 4.1.2 allows no parameter twice): each as "RET=..." and the like."""
    mail_set = {"RET": dsn.ret is not None, "ENVID": dsn.envid is not None}
    rcpt_set = {"NOTIFY": dsn.notify is not None, "ORCPT": dsn.orcpt}
    conflicts = [option for option in mail_options if mail_set.get(_keyword(option))]
    conflicts += [option for option in rcpt_options if rcpt_set.get(_keyword(option))]
    return conflicts
