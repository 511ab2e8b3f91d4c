"""From an ``email.message.Message`` to an envelope and wire bytes, as smtplib does it.

The rules are smtplib's ``send_message``: one ``Resent-*`` block at most and, if
present, its fields are used; ``Sender`` is preferred over ``From``; the
recipients are To, Bcc and Cc (in that order); Bcc and Resent-Bcc are never
transmitted, and the caller's message is never changed; non-ASCII addresses need
SMTPUTF8 and make the message go out as UTF-8 with ``BODY=8BITMIME``.
"""

from __future__ import annotations

import copy
import email.generator
import email.message
import email.utils
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import SMTPNotSupportedError
from .protocol import check_argument

__all__ = ["Envelope", "address_only", "envelope_addresses", "flatten_message", "quote_address"]


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipients: list[str]
    data: bytes
    mail_options: tuple[str, ...]


# A bare addr-spec made of atoms only: parseaddr would return it unchanged, and
# parsing it costs more than everything else about a small message.
_SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def quote_address(address: str) -> str:
    """The ``<addr>`` form for MAIL and RCPT, from anything parseaddr understands.

    CR, LF and NUL are refused in what the caller gave, before parsing: parseaddr
    would quietly cut the address at a line break and hide the smuggling attempt.
    """
    if _SIMPLE_ADDRESS.fullmatch(address):
        return f"<{address}>"
    check_argument("address", address)
    name, addr = email.utils.parseaddr(address)
    if (name, addr) == ("", ""):
        # Unparseable (or "<>"): send it as given, bracketed once.
        return address if address.strip().startswith("<") else f"<{address}>"
    return f"<{addr}>"


def address_only(address: str) -> str:
    """The bare address for VRFY and EXPN (CR, LF and NUL refused first)."""
    check_argument("address", address)
    name, addr = email.utils.parseaddr(address)
    return address if (name, addr) == ("", "") else addr


def _copy_tree(part: email.message.Message) -> email.message.Message:
    """Copy the message's structure, sharing the leaves' content.

    Deleting Bcc from the copy, and the generator choosing a boundary for a
    multipart part that has none, then change the copy only: the caller's message
    stays exactly as it was, nested parts included.
    """
    clone = copy.copy(part)  # own header list on write: Message replaces it, not edits
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        clone.set_payload(
            [
                _copy_tree(child) if isinstance(child, email.message.Message) else child
                for child in children
            ]
        )
    return clone


def envelope_addresses(
    msg: email.message.Message, from_addr: str | None, to_addrs: str | Sequence[str] | None
) -> tuple[str, list[str]]:
    """The sender and recipients ``send_message`` uses: the caller's, or smtplib's
    rules on the headers (one Resent- block at most, Sender over From, To + Bcc + Cc)."""
    resent = msg.get_all("Resent-Date")
    if resent is None:
        prefix = ""
    elif len(resent) == 1:
        prefix = "Resent-"
    else:
        raise ValueError("message has more than one 'Resent-' header block")
    if from_addr is None:
        # RFC 5322 section 3.6.2: Sender, when present, is who sent it.
        field = msg[prefix + "Sender"] if (prefix + "Sender") in msg else msg[prefix + "From"]
        parsed = email.utils.getaddresses([str(field)] if field is not None else [])
        from_addr = parsed[0][1] if parsed else ""
    if to_addrs is None:
        fields = [
            str(value)
            for value in (msg[prefix + "To"], msg[prefix + "Bcc"], msg[prefix + "Cc"])
            if value is not None
        ]
        return from_addr, [addr for _, addr in email.utils.getaddresses(fields)]
    return from_addr, [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)


def flatten_message(
    msg: email.message.Message,
    from_addr: str | None,
    to_addrs: str | Sequence[str] | None,
    mail_options: Sequence[str],
    *,
    server_has_smtputf8: bool,
) -> Envelope:
    from_addr, recipients = envelope_addresses(msg, from_addr, to_addrs)

    outgoing = _copy_tree(msg)
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]

    international = not all(addr.isascii() for addr in (from_addr, *recipients))
    if international and not server_has_smtputf8:
        raise SMTPNotSupportedError(
            "One or more source or delivery addresses require internationalized email "
            "support, but the server does not advertise the required SMTPUTF8 capability"
        )
    buffer = io.BytesIO()
    if international:
        generator = email.generator.BytesGenerator(buffer, policy=msg.policy.clone(utf8=True))  # type: ignore[call-arg]
        mail_options = (*mail_options, "SMTPUTF8", "BODY=8BITMIME")
    else:
        generator = email.generator.BytesGenerator(buffer)
    generator.flatten(outgoing, linesep="\r\n")
    return Envelope(from_addr, recipients, buffer.getvalue(), tuple(mail_options))
