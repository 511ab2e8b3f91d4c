"""SCRAM (RFC 5802, RFC 7677), SASLprep (RFC 4013) and tls-server-end-point (RFC 5929).

The expected values come from the RFCs' own examples, and otherwise from
``ReferenceServer`` below: the server's side of SCRAM written here from RFC 5802
section 3, with hashlib and hmac only, so that a proof the library computes is
checked by the server's equation (H(ClientProof XOR ClientSignature) == StoredKey),
not by the library's code. Channel binding data is computed from certificates made
here with ``cryptography`` (trustme's dependency), whose own parser names the
signature hash.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ssl
from dataclasses import dataclass, field

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosmtp.protocol import (
    PASSWORD_MECHANISMS,
    SCRAM_MECHANISMS,
    LocalProtocolError,
    SASLprepError,
    ScramClient,
    ScramError,
    ScramServerError,
    ScramVerificationError,
    choose_password_mechanisms,
    saslprep,
    tls_server_end_point,
)
from aiosmtp.protocol._scram import MAX_ITERATIONS, certificate_hash_name

HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# -- an independent server side ----------------------------------------------------------


@dataclass
class ReferenceServer:
    """SCRAM's server side, from RFC 5802 section 3 (what a server stores and checks).

    ``cbind_input`` is what the client's ``c=`` must hold: the GS2 header, plus the
    channel binding data for -PLUS.
    """

    mechanism: str
    user: str
    password: str
    cbind_input: bytes = b"n,,"
    salt: bytes = b"0123456789abcdef"
    iterations: int = 4096
    server_nonce: str = "Srv-nonce-3rfcNHYJY1ZVvWVs7j"
    client_first_bare: bytes = b""
    server_first: bytes = b""
    nonce: str = ""
    proofs_checked: list[bytes] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return HASHES[self.mechanism.removesuffix("-PLUS")]

    def keys(self) -> tuple[bytes, bytes]:
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), self.salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = hashlib.new(self.hash, client_key).digest()
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        return stored_key, server_key

    def first(self, client_first: bytes) -> bytes:
        header, _, bare = client_first.partition(b"n=")
        gs2_header = header
        assert gs2_header == self.cbind_input[: len(gs2_header)], (gs2_header, self.cbind_input)
        self.client_first_bare = b"n=" + bare
        attributes = dict(part.split(b"=", 1) for part in self.client_first_bare.split(b","))
        assert attributes[b"n"].decode() == self.user.replace("=", "=3D").replace(",", "=2C")
        self.nonce = attributes[b"r"].decode() + self.server_nonce
        self.server_first = (
            f"r={self.nonce},s={b64(self.salt).decode()},i={self.iterations}".encode()
        )
        return self.server_first

    def final(self, client_final: bytes) -> bytes:
        without_proof, _, proof_text = client_final.rpartition(b",p=")
        channel, nonce = without_proof.split(b",")
        assert channel == b"c=" + b64(self.cbind_input), channel
        assert nonce == f"r={self.nonce}".encode()
        auth_message = self.client_first_bare + b"," + self.server_first + b"," + without_proof
        stored_key, server_key = self.keys()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        proof = base64.b64decode(proof_text)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        assert hashlib.new(self.hash, client_key).digest() == stored_key, "wrong proof"
        self.proofs_checked.append(proof)
        return b"v=" + b64(hmac.new(server_key, auth_message, self.hash).digest())


def run_exchange(client: ScramClient, server: ReferenceServer) -> None:
    server_first = server.first(client.client_first())
    server_final = server.final(client.client_final(server_first))
    client.verify_server_final(server_final)
    assert client.verified


# -- the RFC examples ---------------------------------------------------------------------


def test_rfc5802_section5_scram_sha1() -> None:
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert client.client_first() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = client.client_final(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    assert final == (
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    assert not client.verified
    client.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    assert client.verified


def test_rfc7677_section3_scram_sha256() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert client.verified


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_the_reference_server_agrees(mechanism: str) -> None:
    client = ScramClient(mechanism, "alice", "correct horse")
    server = ReferenceServer(mechanism, "alice", "correct horse")
    run_exchange(client, server)
    assert len(server.proofs_checked) == 1


def test_a_wrong_password_fails_the_reference_server() -> None:
    # The reference server can fail: it is a check, not an echo.
    client = ScramClient("SCRAM-SHA-256", "alice", "wrong")
    server = ReferenceServer("SCRAM-SHA-256", "alice", "correct horse")
    server_first = server.first(client.client_first())
    with pytest.raises(AssertionError, match="wrong proof"):
        server.final(client.client_final(server_first))


@given(
    user=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    password=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    salt=st.binary(min_size=1, max_size=32),
    iterations=st.integers(1, 64),
    mechanism=st.sampled_from(["SCRAM-SHA-1", "SCRAM-SHA-256"]),
)
@settings(max_examples=60, deadline=None)
def test_any_credentials_prove_themselves(
    user: str, password: str, salt: bytes, iterations: int, mechanism: str
) -> None:
    client = ScramClient(mechanism, user, password)
    server = ReferenceServer(mechanism, user, password, salt=salt, iterations=iterations)
    run_exchange(client, server)


# -- names, nonces, GS2 headers -----------------------------------------------------------


def test_user_names_are_escaped() -> None:
    client = ScramClient("SCRAM-SHA-256", "a,b=c", "pw", nonce="abc")
    assert client.client_first() == b"n,,n=a=2Cb=3Dc,r=abc"
    server = ReferenceServer("SCRAM-SHA-256", "a,b=c", "pw")
    run_exchange(ScramClient("SCRAM-SHA-256", "a,b=c", "pw"), server)


def test_authzid_is_escaped_in_the_gs2_header() -> None:
    client = ScramClient("SCRAM-SHA-1", "user", "pw", authzid="ad=min,x", nonce="abc")
    assert client.client_first() == b"n,a=ad=3Dmin=2Cx,n=user,r=abc"


def test_user_and_password_are_saslprepped() -> None:
    # U+2168 (ROMAN NUMERAL NINE) is "IX" after NFKC; U+00AD (SOFT HYPHEN) vanishes;
    # U+00A0 (NO-BREAK SPACE) becomes a space.
    client = ScramClient("SCRAM-SHA-256", "\u2168", "pass\u00adword\u00a0x", nonce="abc")
    assert client.client_first() == b"n,,n=IX,r=abc"
    server = ReferenceServer("SCRAM-SHA-256", "IX", "password x")
    run_exchange(ScramClient("SCRAM-SHA-256", "\u2168", "pass\u00adword\u00a0x"), server)


def test_a_password_that_cannot_be_prepared_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(SASLprepError) as caught:
        ScramClient("SCRAM-SHA-256", "user", "bell\x07")
    assert isinstance(caught.value, ValueError)
    assert "bell" not in str(caught.value)  # the password is not repeated in the error


def test_random_nonces_differ_and_are_printable() -> None:
    firsts = {ScramClient("SCRAM-SHA-256", "u", "p").client_first() for _ in range(20)}
    assert len(firsts) == 20
    for first in firsts:
        nonce = first.split(b",r=")[1]
        assert len(nonce) >= 24
        assert all(0x21 <= byte <= 0x7E and byte != ord(",") for byte in nonce)


@pytest.mark.parametrize("nonce", ["", "a,b", "caf\u00e9", "sp ace"])
def test_a_bad_client_nonce_is_refused(nonce: str) -> None:
    with pytest.raises(LocalProtocolError):
        ScramClient("SCRAM-SHA-256", "u", "p", nonce=nonce)


@pytest.mark.parametrize(
    ("mechanism", "binding", "header"),
    [
        ("SCRAM-SHA-256", None, b"n,,"),
        ("SCRAM-SHA-256", b"\x01" * 32, b"y,,"),
        ("SCRAM-SHA-1", b"\x01" * 32, b"y,,"),
        ("SCRAM-SHA-256-PLUS", b"\x01" * 32, b"p=tls-server-end-point,,"),
        ("scram-sha-1-plus", b"\x02" * 32, b"p=tls-server-end-point,,"),
    ],
)
def test_gs2_header(mechanism: str, binding: bytes | None, header: bytes) -> None:
    client = ScramClient(mechanism, "u", "p", channel_binding=binding, nonce="abc")
    assert client.client_first() == header + b"n=u,r=abc"
    # c= carries the header, and the binding data only for -PLUS (RFC 5802 section 7).
    expected = header + (binding if client.plus and binding else b"")
    server = ReferenceServer(client.mechanism, "u", "p", cbind_input=expected)
    run_exchange(ScramClient(mechanism, "u", "p", channel_binding=binding), server)


def test_plus_needs_binding_data() -> None:
    with pytest.raises(LocalProtocolError, match="channel binding"):
        ScramClient("SCRAM-SHA-256-PLUS", "u", "p")


def test_unknown_mechanism() -> None:
    with pytest.raises(LocalProtocolError):
        ScramClient("SCRAM-SHA-512", "u", "p")


def test_calls_out_of_order_are_local_errors() -> None:
    client = ScramClient("SCRAM-SHA-256", "u", "p", nonce="abc")
    with pytest.raises(LocalProtocolError):
        client.client_final(b"r=abcdef,s=c2FsdA==,i=4096")
    client.client_first()
    with pytest.raises(LocalProtocolError):
        client.client_first()
    with pytest.raises(LocalProtocolError):
        client.verify_server_final(b"v=AAAA")


def test_repr_shows_no_secret() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "hunter2")
    assert "hunter2" not in repr(client)
    assert "user" not in repr(client)


# -- what the server sends, checked --------------------------------------------------------


def started(nonce: str = "abc") -> ScramClient:
    client = ScramClient("SCRAM-SHA-256", "u", "p", nonce=nonce)
    client.client_first()
    return client


@pytest.mark.parametrize(
    ("server_first", "match"),
    [
        (b"r=xyzdef,s=c2FsdA==,i=4096", "nonce"),  # not ours
        (b"r=abc,s=c2FsdA==,i=4096", "nonce"),  # ours, with nothing added
        (b"r=ab,s=c2FsdA==,i=4096", "nonce"),  # a prefix of ours
        (b"r=abc\x7fd,s=c2FsdA==,i=4096", "nonce"),
        (b"r=abcdef,s=not base64!,i=4096", "salt"),
        (b"r=abcdef,s=,i=4096", "salt"),
        (b"r=abcdef,s=c2FsdA==,i=0", "iteration"),
        (b"r=abcdef,s=c2FsdA==,i=-1", "iteration"),
        (b"r=abcdef,s=c2FsdA==,i=lots", "iteration"),
        (b"r=abcdef,s=c2FsdA==,i=", "iteration"),
        (b"r=abcdef,s=c2FsdA==,i=\xd9\xa4", "ASCII"),
        (f"r=abcdef,s=c2FsdA==,i={MAX_ITERATIONS + 1}".encode(), "iteration"),
        (b"m=must-know,r=abcdef,s=c2FsdA==,i=4096", "extension"),
        (b"s=c2FsdA==,r=abcdef,i=4096", "malformed"),
        (b"r=abcdef,s=c2FsdA==", "malformed"),
        (b"", "malformed"),
    ],
)
def test_a_bad_server_first_message_is_refused(server_first: bytes, match: str) -> None:
    client = started()
    with pytest.raises(ScramError, match=match):
        client.client_final(server_first)
    # The exchange is over: nothing more may be computed from it.
    with pytest.raises(LocalProtocolError):
        client.verify_server_final(b"v=AAAA")


def test_an_error_instead_of_the_server_first_message() -> None:
    with pytest.raises(ScramServerError) as caught:
        started().client_final(b"e=other-error")
    assert caught.value.server_error == "other-error"


@pytest.mark.parametrize("iterations", [1, 4095, MAX_ITERATIONS // 100])
def test_low_and_high_iteration_counts_are_accepted(iterations: int) -> None:
    # RFC 7677's "at least 4096" is the server's SHOULD; the client goes along
    # with any positive count up to MAX_ITERATIONS (see _scram.py).
    server = ReferenceServer("SCRAM-SHA-256", "u", "p", iterations=iterations)
    run_exchange(ScramClient("SCRAM-SHA-256", "u", "p"), server)


def test_server_extensions_after_the_iteration_count_are_ignored() -> None:
    client = started()
    client.client_final(b"r=abcdef,s=c2FsdA==,i=4096,x=future")


def rfc7677_client() -> ScramClient:
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    client.client_first()
    client.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    return client


GOOD_V = base64.b64decode(b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


@pytest.mark.parametrize(
    "server_final",
    [
        b"v=" + b64(GOOD_V[:-1] + bytes([GOOD_V[-1] ^ 1])),  # one bit off
        b"v=" + b64(GOOD_V[:-1]),  # one byte short
        b"v=" + b64(GOOD_V + b"\0"),  # one byte long
        b"v=",
        b"v=not base64",
        b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",  # no attribute name
        b"",
    ],
)
def test_a_wrong_server_signature_is_refused(server_final: bytes) -> None:
    client = rfc7677_client()
    with pytest.raises(ScramVerificationError):
        client.verify_server_final(server_final)
    assert not client.verified


def test_an_extension_after_the_server_signature_is_ignored() -> None:
    client = rfc7677_client()
    client.verify_server_final(b"v=" + b64(GOOD_V) + b",x=later")
    assert client.verified


@pytest.mark.parametrize(
    ("server_final", "text"),
    [(b"e=invalid-proof", "invalid-proof"), (b"e=other-error,x=1", "other-error")],
)
def test_a_server_error_carries_its_text(server_final: bytes, text: str) -> None:
    client = rfc7677_client()
    with pytest.raises(ScramServerError) as caught:
        client.verify_server_final(server_final)
    assert caught.value.server_error == text
    assert text in str(caught.value)
    assert not client.verified


# -- SASLprep (RFC 4013 section 3) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("I\u00adX", "IX"),  # 1: SOFT HYPHEN mapped to nothing
        ("user", "user"),  # 2: no transformation
        ("USER", "USER"),  # 3: case preserved
        ("\u00aa", "a"),  # 4: output is NFKC
        ("\u2168", "IX"),  # 5: output is NFKC, matches 1
        ("a\u2003b", "a b"),  # EM SPACE: non-ASCII space mapped to SPACE
        ("\u200bzero\ufeffwidth", "zerowidth"),  # more of B.1, mapped to nothing
        ("j\u00f6rg", "j\u00f6rg"),
        ("jo\u0308rg", "j\u00f6rg"),  # decomposed o + diaeresis, composed by NFKC
        ("\u0627\u0644\u0639", "\u0627\u0644\u0639"),  # all right-to-left: fine
        ("", ""),
    ],
)
def test_saslprep(given: str, expected: str) -> None:
    assert saslprep(given) == expected


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("\u0007", "ASCII control"),  # 6: prohibited character
        ("\u0627\u0031", "right-to-left"),  # 7: bidirectional check
        ("a\x7fb", "ASCII control"),
        ("a\u0085b", "non-ASCII control"),
        ("\ue000", "private use"),
        ("\ufdd0", "non-character"),
        ("\u2ff0", "inappropriate for canonical"),
        ("\u200e", "display properties"),
        ("\U000e0001", "tagging"),
        ("\u0627a\u0628", "mixes"),
    ],
)
def test_saslprep_refuses(given: str, match: str) -> None:
    with pytest.raises(SASLprepError, match=match):
        saslprep(given)


def test_saslprep_unassigned_code_points() -> None:
    # U+0221 was unassigned in Unicode 3.2, the version stringprep uses.
    assert saslprep("\u0221") == "\u0221"  # a query string may hold it
    with pytest.raises(SASLprepError, match="unassigned"):
        saslprep("\u0221", allow_unassigned=False)


# -- login()'s choice of mechanisms --------------------------------------------------------


def test_password_mechanisms_order() -> None:
    assert PASSWORD_MECHANISMS == (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
        "CRAM-MD5",
        "PLAIN",
        "LOGIN",
    )
    assert set(SCRAM_MECHANISMS) < set(PASSWORD_MECHANISMS)


EVERYTHING = ["LOGIN", "PLAIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"]
PLUS = ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]


@pytest.mark.parametrize(
    ("advertised", "binding", "expected"),
    [
        (EVERYTHING, False, ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]),
        (EVERYTHING, True, ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]),
        (
            EVERYTHING + PLUS,
            True,
            ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "CRAM-MD5", "PLAIN", "LOGIN"],
        ),
        (
            EVERYTHING + PLUS,
            False,
            ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"],
        ),
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "PLAIN"], True, ["SCRAM-SHA-1-PLUS", "PLAIN"]),
        (["SCRAM-SHA-256-PLUS"], False, []),
        (["XOAUTH2", "OAUTHBEARER"], True, []),
    ],
)
def test_choose_password_mechanisms(
    advertised: list[str], binding: bool, expected: list[str]
) -> None:
    assert choose_password_mechanisms(advertised, channel_binding=binding) == expected


# -- tls-server-end-point (RFC 5929 section 4) -------------------------------------------------


def make_certificate(key: object, algorithm: hashes.HashAlgorithm | None, **sign: object) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "binding.test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    certificate = builder.sign(key, algorithm, **sign)  # type: ignore[arg-type]
    return certificate.public_bytes(serialization.Encoding.DER)


def expected_binding(der: bytes) -> bytes | None:
    """RFC 5929 section 4.1, with cryptography's parser naming the signature hash."""
    certificate = x509.load_der_x509_certificate(der)
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None:
        return None  # Ed25519, Ed448: no single hash, no binding defined
    name = algorithm.name
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, der).digest()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("hash_algorithm", "used"),
    [
        (hashes.SHA224(), "sha224"),
        (hashes.SHA256(), "sha256"),
        (hashes.SHA384(), "sha384"),
        (hashes.SHA512(), "sha512"),
    ],
)
@pytest.mark.parametrize("key_type", ["rsa", "ecdsa"])
def test_binding_uses_the_certificates_signature_hash(
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    key_type: str,
    hash_algorithm: hashes.HashAlgorithm,
    used: str,
) -> None:
    key = rsa_key if key_type == "rsa" else ec_key
    der = make_certificate(key, hash_algorithm)
    assert tls_server_end_point(der) == expected_binding(der)
    assert tls_server_end_point(der) == hashlib.new(used, der).digest()
    assert certificate_hash_name(der) == used


@pytest.mark.parametrize(
    ("hash_algorithm", "used"),
    [(hashes.SHA256(), "sha256"), (hashes.SHA384(), "sha384"), (hashes.SHA512(), "sha512")],
)
def test_binding_of_an_rsassa_pss_certificate(
    rsa_key: rsa.RSAPrivateKey, hash_algorithm: hashes.HashAlgorithm, used: str
) -> None:
    pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=32)
    der = make_certificate(rsa_key, hash_algorithm, rsa_padding=pss)
    assert tls_server_end_point(der) == hashlib.new(used, der).digest()
    assert tls_server_end_point(der) == expected_binding(der)


SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")


@pytest.mark.parametrize(("last_arc", "name"), [(5, "sha1"), (4, "md5")])
def test_binding_of_sha1_and_md5_certificates_uses_sha256(
    rsa_key: rsa.RSAPrivateKey, last_arc: int, name: str
) -> None:
    # cryptography no longer signs with SHA-1 or MD5, so the algorithm identifiers
    # of a SHA-256 certificate are rewritten (the signature no longer verifies,
    # which the binding never looks at).
    der = make_certificate(rsa_key, hashes.SHA256())
    assert der.count(SHA256_WITH_RSA) == 2  # in the TBSCertificate and after it
    der = der.replace(SHA256_WITH_RSA, SHA256_WITH_RSA[:-1] + bytes([last_arc]))
    certificate = x509.load_der_x509_certificate(der)
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == name
    assert tls_server_end_point(der) == expected_binding(der)
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_no_binding_for_ed25519() -> None:
    der = make_certificate(ed25519.Ed25519PrivateKey.generate(), None)
    assert expected_binding(der) is None
    assert tls_server_end_point(der) is None


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x04\x00", b"junk" * 10])
def test_no_binding_for_garbage(der: bytes) -> None:
    assert tls_server_end_point(der) is None


def test_binding_of_a_trustme_certificate_and_a_plus_exchange(ca: trustme.CA) -> None:
    """The certificate the scripted TLS servers present, end to end: the binding
    data computed here goes into the reference server's expected c=."""
    pem = ca.issue_cert("localhost").cert_chain_pems[0].bytes()
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    binding = expected_binding(der)
    assert binding is not None
    assert tls_server_end_point(der) == binding
    for mechanism in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"):
        server = ReferenceServer(
            mechanism, "alice", "pw", cbind_input=b"p=tls-server-end-point,," + binding
        )
        run_exchange(ScramClient(mechanism, "alice", "pw", channel_binding=binding), server)
        # The same exchange with other binding data fails at the server.
        other = ScramClient(mechanism, "alice", "pw", channel_binding=b"\0" * len(binding))
        server = ReferenceServer(
            mechanism, "alice", "pw", cbind_input=b"p=tls-server-end-point,," + binding
        )
        server_first = server.first(other.client_first())
        with pytest.raises(AssertionError):
            server.final(other.client_final(server_first))
