"""EHLO reply parsing (RFC 5321 section 4.1.1.1), with smtplib's exact results.

The keys are the lower-cased keywords and the values their parameters, so that
``esmtp_features`` is the same dict smtplib builds. AUTH is special in both: the
mechanisms of every AUTH line, and of the pre-RFC ``AUTH=...`` form some old
servers still send, accumulate into one space-separated string.
"""

from __future__ import annotations

__all__ = ["parse_ehlo_features"]

_KEYWORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def parse_ehlo_features(message: bytes) -> dict[str, str]:
    """Map each extension keyword of a 250 EHLO reply to its parameters.

    The first line is the server's greeting name and is skipped.
    """
    features: dict[str, str] = {}
    for line in message.decode("latin-1").split("\n")[1:]:
        if line[:5].lower() == "auth=":
            features["auth"] = features.get("auth", "") + " " + line[5:]
            continue
        if not line or not line[0].isascii() or not line[0].isalnum():
            continue
        end = 1
        while end < len(line) and line[end] in _KEYWORD_CHARS:
            end += 1
        keyword = line[:end].lower()
        params = line[end:].strip()
        if keyword == "auth":
            features["auth"] = features.get("auth", "") + " " + params
        else:
            features[keyword] = params
    return features
