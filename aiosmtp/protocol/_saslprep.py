"""SASLprep (RFC 4013): the stringprep profile SCRAM applies to names and passwords.

Two people typing the same password on different keyboards may produce different
code points for it (a no-break space, a composed or decomposed "ö", a Roman numeral
"Ⅸ"); SASLprep maps them to one form before the password is hashed, so that the
salted password the server stored and the one the client computes agree.

The steps, in RFC 4013 section 2's order: map (non-ASCII spaces to SPACE, the
"commonly mapped to nothing" characters removed), normalise (NFKC), refuse the
prohibited characters, check the bidirectional rule (RFC 3454 section 6). Unassigned
code points are allowed: SCRAM prepares both as "query" strings (RFC 5802 section
2.2), and so may only be stricter when storing.
"""

from __future__ import annotations

import stringprep
import unicodedata

from ._errors import LocalProtocolError

__all__ = ["SASLprepError", "saslprep"]

# RFC 4013 section 2.3: the tables whose characters may not appear in the output.
_PROHIBITED = (
    ("non-ASCII space", stringprep.in_table_c12),
    ("ASCII control character", stringprep.in_table_c21),
    ("non-ASCII control character", stringprep.in_table_c22),
    ("private use character", stringprep.in_table_c3),
    ("non-character code point", stringprep.in_table_c4),
    ("surrogate code point", stringprep.in_table_c5),
    ("character inappropriate for plain text", stringprep.in_table_c6),
    ("character inappropriate for canonical representation", stringprep.in_table_c7),
    ("character that changes display properties", stringprep.in_table_c8),
    ("tagging character", stringprep.in_table_c9),
)


class SASLprepError(LocalProtocolError, ValueError):
    """The string cannot be prepared: it holds a prohibited character or breaks the
    bidirectional rule. Nothing was sent."""


def saslprep(text: str, *, allow_unassigned: bool = True) -> str:
    """``text`` prepared by RFC 4013; raises SASLprepError where it is not allowed.

    ``allow_unassigned=False`` prepares a stored string (RFC 3454 section 7).
    """
    if text.isascii() and all(" " <= char <= "~" for char in text):
        return text  # printable ASCII is its own preparation: the common case, fast
    # Section 2.1: map.
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    # Section 2.2: normalise.
    prepared = unicodedata.normalize("NFKC", mapped)
    # Section 2.3: prohibit; section 2.5: unassigned code points.
    for index, char in enumerate(prepared):
        for name, in_table in _PROHIBITED:
            if in_table(char):
                raise SASLprepError(
                    f"SASLprep: {name} U+{ord(char):04X} at position {index} is prohibited"
                )
        if not allow_unassigned and stringprep.in_table_a1(char):
            raise SASLprepError(f"SASLprep: unassigned code point U+{ord(char):04X}")
    # Section 2.4 (RFC 3454 section 6): a string with right-to-left characters may
    # hold no left-to-right ones, and must start and end with right-to-left ones.
    if any(stringprep.in_table_d1(char) for char in prepared):
        if any(stringprep.in_table_d2(char) for char in prepared):
            raise SASLprepError(
                "SASLprep: mixes right-to-left and left-to-right characters (RFC 3454 6)"
            )
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SASLprepError(
                "SASLprep: a right-to-left string must start and end with a "
                "right-to-left character (RFC 3454 6)"
            )
    return prepared
