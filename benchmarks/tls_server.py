"""aiosmtpd with STARTTLS (a trustme certificate) and AUTH, for the session rows.

It runs in a process of its own, so that its CPU time is not charged to the client
being measured. It writes the CA certificate to ``CAFILE`` for the clients to
trust, prints ``{"listening": PORT}`` when ready, accepts ``bench`` /
``bench-password`` (PLAIN or LOGIN, over TLS only), advertises PIPELINING (which
aiosmtpd handles but does not announce), discards every message, and stops when
its standard input is closed::

    python benchmarks/tls_server.py CAFILE
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = "bench"
PASSWORD = "bench-password"


class DiscardingHandler:
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: discarded"


def check_password(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="aiosmtpd with STARTTLS and AUTH.")
    parser.add_argument("cafile", help="where to write the CA certificate (PEM)")
    args = parser.parse_args(argv)

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca.cert_pem.write_to_path(args.cafile)

    port = free_port()
    controller = Controller(
        DiscardingHandler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=check_password,
        auth_require_tls=True,
    )
    controller.start()
    try:
        print(json.dumps({"listening": port}), flush=True)
        sys.stdin.buffer.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
