"""The command line: ``python -m aiosmtp`` and the ``aiosmtp`` script.

``send`` sends one message, ``check`` inspects a server, ``demo`` runs the client
against a server it starts itself. Only the chosen command's module is imported.
Exit statuses are listed in ``_common.EXIT_CODES`` and shown by ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ._common import EXIT_CODES, EXIT_USAGE, UsageError, fail

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with exit status 1 for usage errors (2 means "partly refused")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from . import _check, _send

    parser = _Parser(
        prog="aiosmtp",
        description="aiosmtp command line: send a message, check a server, run the demo",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    send = commands.add_parser(
        "send",
        help="send one message",
        description="Send one message (TLS required by default; see --tls).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _send.add_arguments(send)
    check = commands.add_parser(
        "check",
        help="show what a server offers (greeting, EHLO, TLS, certificate, AUTH)",
        description="Connect to a server and show its greeting, its EHLO features before "
        "and after STARTTLS, the TLS version, cipher and certificate, and its AUTH "
        "mechanisms; with --user, try to log in.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _check.add_arguments(check)
    demo = commands.add_parser(
        "demo",
        help="send through an in-process aiosmtpd server (STARTTLS, AUTH, PIPELINING)",
    )
    demo.add_argument("--messages", type=int, default=300, help="size of the burst")
    demo.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "send":
            from . import _send

            return _send.run(args)
        if args.command == "check":
            from . import _check

            return _check.run(args)
        from .._demo import run_demo

        return run_demo(messages=args.messages, backend=args.backend)
    except UsageError as exc:
        return fail(EXIT_USAGE, f"error: {exc}")
    except KeyboardInterrupt:
        return 130
