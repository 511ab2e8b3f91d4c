"""SCRAM (RFC 5802, RFC 7677): the client side of the exchange, as a state object.

Theory of operation: ``ScramClient`` holds what one exchange needs and computes each
message from the last one received; it performs no I/O, so the driver (the async
client, or a test) sends what it returns and feeds it what the server said::

    scram = ScramClient("SCRAM-SHA-256", user, password)
    send(scram.client_first())                # AUTH SCRAM-SHA-256 <base64>
    send(scram.client_final(server_first))    # answers the first 334
    scram.verify_server_final(server_final)   # the second 334: v=... or e=...

Every check RFC 5802 asks of a client is made here, and each failure raises a
``ScramError``: the server's nonce must extend ours, its salt must be base64, its
iteration count a positive number, a mandatory extension (``m=``) is refused, an
``e=`` error is raised with the server's text (``ScramServerError``), and the server
signature is compared in constant time (``ScramVerificationError``); until it has
been verified the server has proved nothing, whatever its reply code says.

Iteration counts: RFC 7677 section 4 says a server SHOULD use at least 4096. That
is a choice about the strength of the server's stored keys, which the client cannot
mend, so a lower count (down to 1) is accepted. A count above ``MAX_ITERATIONS`` is
refused: the client would spend seconds of CPU on it, and only a hostile server
asks for that.

Channel binding (the ``-PLUS`` mechanisms, RFC 5802 section 6) uses
``tls-server-end-point`` (RFC 5929 section 4): a hash of the server's certificate,
which the driver passes in as DER bytes (``tls_server_end_point``). The GS2 header
then says ``p=tls-server-end-point``; with binding data but a mechanism without
``-PLUS`` it says ``y`` ("I could bind, but you did not offer it": a server that does
offer it then knows a man in the middle stripped the -PLUS names), and ``n`` where
the client has no binding data.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets

from ._errors import LocalProtocolError, ProtocolError
from ._saslprep import saslprep

__all__ = [
    "CHANNEL_BINDING_TYPE",
    "MAX_ITERATIONS",
    "SCRAM_MECHANISMS",
    "ScramClient",
    "ScramError",
    "ScramServerError",
    "ScramVerificationError",
    "escape_saslname",
    "tls_server_end_point",
]

#: The SCRAM mechanisms aiosmtp knows, strongest first.
SCRAM_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1")
#: The channel binding type of the -PLUS mechanisms (RFC 5929 section 4).
CHANNEL_BINDING_TYPE = "tls-server-end-point"
#: The largest iteration count accepted (see the theory of operation).
MAX_ITERATIONS = 1_000_000

_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


class ScramError(ProtocolError):
    """The SCRAM exchange cannot go on: the server's message is malformed or fails
    a check. The client must not trust the session's authentication."""


class ScramServerError(ScramError):
    """The server ended the exchange with ``e=``; ``server_error`` is its text."""

    def __init__(self, server_error: str) -> None:
        super().__init__(f"the server reported a SCRAM error: {server_error}")
        self.server_error = server_error


class ScramVerificationError(ScramError):
    """The server signature is wrong or missing: the server does not know the
    password (or someone stands between client and server)."""


class _Step(enum.Enum):
    CLIENT_FIRST = "client-first"
    CLIENT_FINAL = "client-final"
    VERIFY = "verify"
    DONE = "done"
    FAILED = "failed"


def escape_saslname(name: str) -> str:
    """RFC 5802 section 5.1: "," and "=" in a name are sent as "=2C" and "=3D"."""
    return name.replace("=", "=3D").replace(",", "=2C")


def _check_nonce(nonce: str) -> None:
    # RFC 5802 section 7: printable ASCII except ",".
    if not nonce or any(not ("!" <= char <= "~") or char == "," for char in nonce):
        raise LocalProtocolError(f"a SCRAM nonce must be printable ASCII without ',': {nonce!r}")


class ScramClient:
    """One SCRAM exchange, client side.

    ``channel_binding`` is the ``tls-server-end-point`` data of the TLS session
    (``tls_server_end_point(der)``), or None without TLS or without a usable
    certificate; it is required for a -PLUS mechanism. ``nonce`` is for tests
    (RFC vectors); by default 24 random bytes from ``secrets``.

    Raises ``SASLprepError`` (a ValueError) at once when the user name or the
    password cannot be prepared: nothing needs to be sent to find that out.
    """

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        *,
        channel_binding: bytes | None = None,
        authzid: str = "",
        nonce: str | None = None,
    ) -> None:
        mechanism = mechanism.upper()
        if mechanism not in SCRAM_MECHANISMS:
            raise LocalProtocolError(f"not a SCRAM mechanism aiosmtp knows: {mechanism}")
        self.mechanism = mechanism
        self.plus = mechanism.endswith("-PLUS")
        self._hash = _HASHES[mechanism.removesuffix("-PLUS")]
        if self.plus and channel_binding is None:
            raise LocalProtocolError(f"{mechanism} needs channel binding data")
        # RFC 5802 section 5.1: the user name is prepared and escaped; the password
        # is prepared (section 2.2: both as query strings).
        user = escape_saslname(saslprep(username))
        self._password = saslprep(password).encode()
        if self.plus:
            flag = f"p={CHANNEL_BINDING_TYPE}"
        elif channel_binding is not None:
            flag = "y"
        else:
            flag = "n"
        authz = f"a={escape_saslname(saslprep(authzid))}" if authzid else ""
        self._gs2_header = f"{flag},{authz},".encode()
        # Only -PLUS sends the binding data itself; "y" and "n" send the header alone.
        self._cbind_input = self._gs2_header
        if self.plus and channel_binding is not None:
            self._cbind_input += channel_binding
        if nonce is None:
            nonce = secrets.token_urlsafe(24)
        _check_nonce(nonce)
        self._nonce = nonce
        self._client_first_bare = f"n={user},r={nonce}".encode()
        self._server_signature = b""
        self._step = _Step.CLIENT_FIRST

    def __repr__(self) -> str:
        # Never the password, nor anything derived from it.
        return f"<ScramClient {self.mechanism} at {self._step.value}>"

    @property
    def verified(self) -> bool:
        """Whether the server proved it knows the password (its signature matched)."""
        return self._step is _Step.DONE

    def _expect(self, step: _Step) -> None:
        if self._step is not step:
            raise LocalProtocolError(f"SCRAM: {step.value} called at {self._step.value}")

    def _fail(self, error: ScramError) -> ScramError:
        self._step = _Step.FAILED
        return error

    def client_first(self) -> bytes:
        """The client-first-message: the AUTH command's initial response."""
        self._expect(_Step.CLIENT_FIRST)
        self._step = _Step.CLIENT_FINAL
        return self._gs2_header + self._client_first_bare

    def client_final(self, server_first: bytes) -> bytes:
        """Check the server-first-message and answer it with the client proof.

        This runs PBKDF2 with the server's iteration count: up to ``MAX_ITERATIONS``
        rounds, so a driver on an event loop may want it in a worker thread.
        """
        self._expect(_Step.CLIENT_FINAL)
        try:
            nonce, salt, iterations = self._parse_server_first(server_first)
        except ScramError as exc:
            raise self._fail(exc) from None
        channel_binding = base64.b64encode(self._cbind_input)
        without_proof = b"c=" + channel_binding + b",r=" + nonce
        auth_message = self._client_first_bare + b"," + server_first + b"," + without_proof
        salted = hashlib.pbkdf2_hmac(self._hash, self._password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        self._step = _Step.VERIFY
        return without_proof + b",p=" + base64.b64encode(proof)

    def _parse_server_first(self, message: bytes) -> tuple[bytes, bytes, int]:
        try:
            text = message.decode("ascii")
        except UnicodeDecodeError:
            raise ScramError(f"server-first-message is not ASCII: {message[:80]!r}") from None
        if text.startswith("e="):
            # Not in RFC 5802's grammar here, but it can only mean one thing.
            raise ScramServerError(text[2:])
        if text.startswith("m="):
            raise ScramError("the server requires a SCRAM extension aiosmtp does not know (m=)")
        parts = text.split(",")
        if len(parts) < 3 or [part[:2] for part in parts[:3]] != ["r=", "s=", "i="]:
            raise ScramError(f"malformed server-first-message: {text[:80]!r}")
        nonce, salt_text, iterations_text = (part[2:] for part in parts[:3])
        # RFC 5802 section 5.1: the server's nonce starts with ours and adds its own.
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ScramError("the server's nonce does not extend the client's nonce")
        try:
            _check_nonce(nonce)
        except LocalProtocolError:
            raise ScramError(f"the server's nonce has forbidden characters: {nonce!r}") from None
        try:
            salt = base64.b64decode(salt_text, validate=True)
        except (binascii.Error, ValueError):
            raise ScramError(f"the server's salt is not base64: {salt_text[:80]!r}") from None
        if not salt:
            raise ScramError("the server's salt is empty")
        if not iterations_text.isdigit() or not iterations_text.isascii():
            raise ScramError(f"the server's iteration count is not a number: {iterations_text!r}")
        iterations = int(iterations_text)
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise ScramError(
                f"the server's iteration count {iterations} is outside 1..{MAX_ITERATIONS}"
            )
        return nonce.encode(), salt, iterations

    def verify_server_final(self, server_final: bytes) -> None:
        """Check the server-final-message: ``v=`` with the server signature, or
        ``e=`` with an error (raised as ScramServerError)."""
        self._expect(_Step.VERIFY)
        attribute = server_final.split(b",", 1)[0]
        if attribute.startswith(b"e="):
            raise self._fail(ScramServerError(attribute[2:].decode("ascii", "replace")))
        if not attribute.startswith(b"v="):
            raise self._fail(
                ScramVerificationError(
                    f"no server signature in the server-final-message: {server_final[:80]!r}"
                )
            )
        try:
            signature = base64.b64decode(attribute[2:], validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        # Constant time: how much of a forged signature matched must not show.
        if not hmac.compare_digest(signature, self._server_signature):
            raise self._fail(ScramVerificationError("the server signature does not match"))
        self._step = _Step.DONE


# -- tls-server-end-point (RFC 5929 section 4) -------------------------------------------

# The certificate's signatureAlgorithm -> the hash of its signature. RFC 5929 4.1:
# MD5 and SHA-1 are replaced by SHA-256; an algorithm with no single hash function
# (Ed25519, Ed448) has no tls-server-end-point binding defined, and neither does an
# algorithm unknown here.
_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.4": "sha256",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5": "sha256",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.10045.4.1": "sha256",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.10040.4.3": "sha256",  # dsa-with-sha1
    "2.16.840.1.101.3.4.3.1": "sha224",  # dsa-with-sha224
    "2.16.840.1.101.3.4.3.2": "sha256",  # dsa-with-sha256
}
_RSASSA_PSS = "1.2.840.113549.1.1.10"
# The hash functions an RSASSA-PSS signature names in its parameters.
_DIGESTS = {
    "1.3.14.3.2.26": "sha256",  # SHA-1, upgraded
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.4": "sha224",
}

_SEQUENCE = 0x30
_OID = 0x06
_CONTEXT_0 = 0xA0


class _DERError(ValueError):
    pass


def _tlv(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """The DER element at ``offset``: (tag, content start, content end)."""
    if offset + 2 > end:
        raise _DERError("truncated")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or start + size > end:
            raise _DERError("bad length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    if start + length > end:
        raise _DERError("truncated")
    return tag, start, start + length


def _oid(content: bytes) -> str:
    if not content:
        raise _DERError("empty OID")
    first = content[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def _algorithm(data: bytes, start: int, end: int) -> tuple[str, int, int]:
    """An AlgorithmIdentifier's OID, and where its parameters are."""
    tag, content, content_end = _tlv(data, start, end)
    if tag != _SEQUENCE:
        raise _DERError("AlgorithmIdentifier is not a SEQUENCE")
    tag, oid_start, oid_end = _tlv(data, content, content_end)
    if tag != _OID:
        raise _DERError("AlgorithmIdentifier without an OID")
    return _oid(data[oid_start:oid_end]), oid_end, content_end


def _pss_hash(data: bytes, start: int, end: int) -> str | None:
    # RSASSA-PSS-params (RFC 4055 section 3.1): hashAlgorithm [0] DEFAULT sha1.
    if start == end:
        return _DIGESTS["1.3.14.3.2.26"]
    tag, content, content_end = _tlv(data, start, end)
    if tag != _SEQUENCE:
        raise _DERError("RSASSA-PSS parameters are not a SEQUENCE")
    if content == content_end:
        return _DIGESTS["1.3.14.3.2.26"]
    tag, inner, inner_end = _tlv(data, content, content_end)
    if tag != _CONTEXT_0:
        return _DIGESTS["1.3.14.3.2.26"]
    oid, _, _ = _algorithm(data, inner, inner_end)
    return _DIGESTS.get(oid)


def certificate_hash_name(der: bytes) -> str | None:
    """The hash RFC 5929 section 4.1 uses for this certificate, or None where the
    binding is undefined (an unknown or hash-less signature algorithm)."""
    try:
        tag, content, end = _tlv(der, 0, len(der))
        if tag != _SEQUENCE:
            raise _DERError("not a certificate")
        # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
        _, _, tbs_end = _tlv(der, content, end)
        oid, params, params_end = _algorithm(der, tbs_end, end)
        if oid == _RSASSA_PSS:
            return _pss_hash(der, params, params_end)
        return _SIGNATURE_HASHES.get(oid)
    except _DERError:
        return None


def tls_server_end_point(der: bytes) -> bytes | None:
    """The ``tls-server-end-point`` channel binding data of a DER certificate (the
    server's, as ``getpeercert(binary_form=True)`` gives it), or None where RFC 5929
    defines none for it."""
    name = certificate_hash_name(der)
    return None if name is None else hashlib.new(name, der).digest()
