"""``aiosmtp check HOST``: what a server offers, step by step, and whether it works.

Connects, shows the greeting and the EHLO features, upgrades to TLS (STARTTLS or
implicit) and shows the protocol, the cipher and the server's certificate, the
features again after TLS, the AUTH mechanisms, and with ``--user`` tries to log in.
The first step that fails ends the check with its exit status.

The TLS details come from the ``ssl.SSLObject`` of the handshake, caught through
the context's ``sslobject_class``: both asyncio and anyio make theirs with
``SSLContext.wrap_bio``, so no transport internals are needed.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
from typing import Any

import anyio

from ..client import SMTP, SMTP_SSL
from ..errors import SMTPAuthenticationError, SMTPException
from ..pool import _is_local
from ._common import (
    EXIT_AUTH,
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_REFUSED,
    exit_code_for,
    fail,
    make_context,
    read_password,
)
from ._session import Session, format_reply

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="the server to check")
    parser.add_argument(
        "--port", type=int, default=0, help="port (default: 465 with --tls implicit, else 25)"
    )
    parser.add_argument(
        "--tls",
        choices=("starttls", "implicit", "none"),
        help="starttls (the default, except on port 465), implicit (the default on 465), "
        "or none: do not try TLS",
    )
    parser.add_argument("--cafile", help="trust only the CA certificates in this PEM file")
    parser.add_argument(
        "--user",
        help="also try to log in as this user (password from $AIOSMTP_PASSWORD or asked "
        "for on the terminal)",
    )
    parser.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="try the login over a plaintext connection to a host that is not local",
    )
    parser.add_argument("--ehlo", metavar="NAME", help="the name to give in EHLO")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds for each network wait (%(default)s)"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print the conversation (-> sent, <- received; ~> <~ under TLS), "
        "credentials redacted",
    )


class _HandshakeRecorder:
    """Makes the context hand out SSLObjects that remember the last handshake."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.done: ssl.SSLObject | None = None
        recorder = self

        class RecordingSSLObject(ssl.SSLObject):
            def do_handshake(self) -> None:
                super().do_handshake()
                recorder.done = self

        context.sslobject_class = RecordingSSLObject


def _name(rdns: Any) -> str:
    return ", ".join(f"{key}={value}" for rdn in rdns for key, value in rdn)


def _print_tls(recorder: _HandshakeRecorder) -> None:
    tls = recorder.done
    if tls is None:  # pragma: no cover - the handshake just succeeded
        print("TLS: (no details)")
        return
    cipher = tls.cipher()
    if cipher is not None:
        name, _protocol, bits = cipher
        print(f"TLS: {tls.version()}, cipher {name} ({bits} bits)")
    cert = tls.getpeercert()
    if not cert:
        return
    print("certificate:")
    print(f"  subject: {_name(cert.get('subject', ())) or '(empty)'}")
    print(f"  issuer:  {_name(cert.get('issuer', ()))}")
    alt_names: Any = cert.get("subjectAltName", ())
    names = ", ".join(f"{kind}:{value}" for kind, value in alt_names)
    print(f"  SAN:     {names or '(none)'}")
    not_after = cert.get("notAfter")
    if isinstance(not_after, str):
        days = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
        print(f"  expires: {not_after} (in {days:.0f} days)")


def _print_features(smtp: SMTP, when: str) -> None:
    reply = smtp.ehlo_resp
    if not smtp.does_esmtp or reply is None:
        print(f"EHLO {when}: refused; HELO only, no extensions")
        return
    lines = reply.decode("utf-8", "replace").split("\n")
    print(f"EHLO {when}: {lines[0]}")
    for line in lines[1:]:
        print(f"  {line}")


def run(args: argparse.Namespace) -> int:
    port = args.port or (465 if args.tls == "implicit" else 25)
    tls = args.tls or ("implicit" if port == 465 else "starttls")
    context = make_context(args.cafile)
    recorder = _HandshakeRecorder(context)
    password = read_password(args.user, args.host) if args.user is not None else None
    session = Session(trace=sys.stdout if args.trace else None)
    client_class = SMTP_SSL if tls == "implicit" else SMTP
    smtp = client_class(
        timeout=args.timeout, local_hostname=args.ehlo, context=context, hooks=session
    )

    async def check() -> int:
        print(f"checking {args.host}:{port} (tls: {tls})")
        try:
            greeting = await smtp.connect(args.host, port)
            print(f"greeting: {' | '.join(format_reply(greeting))}")
            if greeting.code != 220:
                return fail(EXIT_REFUSED, f"FAIL: the server refused service ({greeting.code})")
            if tls == "implicit":
                _print_tls(recorder)
            await smtp.ehlo_or_helo_if_needed()
            _print_features(smtp, "(TLS)" if tls == "implicit" else "(plaintext)")
            if tls == "starttls":
                if not smtp.has_extn("starttls"):
                    return fail(EXIT_CONNECTION, "FAIL: the server does not offer STARTTLS")
                reply = await smtp.starttls()
                print(f"STARTTLS: {' | '.join(format_reply(reply))}")
                _print_tls(recorder)
                await smtp.ehlo_or_helo_if_needed()
                _print_features(smtp, "after STARTTLS")
            mechanisms = smtp.esmtp_features.get("auth", "").split()
            print(f"AUTH mechanisms: {' '.join(mechanisms) or '(none offered)'}")
            if args.user is not None and password is not None:
                code = await _login(smtp, args, password)
                if code != EXIT_OK:
                    return code
            reply = await smtp.quit()
            print(f"QUIT: {' | '.join(format_reply(reply))}")
        except SMTPException as exc:
            code = exit_code_for(
                exc, session, tls_required=tls != "none", user_given=args.user is not None
            )
            return fail(code, f"FAIL: {type(exc).__name__}: {exc}")
        finally:
            await smtp.close()
        print("OK")
        return EXIT_OK

    return anyio.run(check)


async def _login(smtp: SMTP, args: argparse.Namespace, password: str) -> int:
    if not (smtp.is_tls or _is_local(args.host) or args.allow_insecure_auth):
        return fail(
            EXIT_AUTH,
            f"FAIL: not sending credentials to {args.host} over a connection that is not "
            "encrypted (--allow-insecure-auth to do it anyway)",
        )
    if not smtp.has_extn("auth"):
        return fail(EXIT_AUTH, "FAIL: the server offers no AUTH")
    try:
        reply = await smtp.login(args.user, password)
    except SMTPAuthenticationError as exc:
        error = exc.smtp_error
        text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        return fail(EXIT_AUTH, f"FAIL: login as {args.user} refused: {exc.smtp_code} {text}")
    print(f"login as {args.user}: {' | '.join(format_reply(reply))}")
    return EXIT_OK
