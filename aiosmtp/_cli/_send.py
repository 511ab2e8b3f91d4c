"""``aiosmtp send``: build one message from the arguments and send it through the pool.

The message is built and flattened here, before any connection: what ``--dry-run``
prints is exactly what would be sent (the envelope on stderr, the message on
stdout; Bcc recipients are in the envelope and not in the message). Sending goes
through ``SMTPPool`` with one connection, so the TLS policy, the refusal to send
credentials in plaintext and the retry rules are those of ``aiosmtp.send``.
"""

from __future__ import annotations

import argparse
import email.utils
import io
import mimetypes
import sys
from email.message import EmailMessage
from pathlib import Path

import anyio

from ..message import Envelope, flatten_message
from ..pool import SMTPPool, TLSMode
from ._common import (
    EXIT_OK,
    EXIT_PARTIAL,
    UsageError,
    exit_code_for,
    fail,
    make_context,
    read_password,
)
from ._progress import LARGE_MESSAGE, ProgressBar
from ._session import Session, format_reply

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="localhost", help="server (default: %(default)s)")
    server.add_argument(
        "--port", type=int, default=0, help="port (default: 465 with --tls implicit, else 25)"
    )
    server.add_argument(
        "--tls",
        choices=("starttls", "implicit", "opportunistic", "none"),
        help="starttls: required (the default, except on port 465); implicit: TLS from "
        "the first byte (the default on 465); opportunistic: STARTTLS when offered; "
        "none: plaintext",
    )
    server.add_argument("--cafile", help="trust only the CA certificates in this PEM file")
    server.add_argument(
        "--user",
        help="log in as this user; the password comes from $AIOSMTP_PASSWORD or is "
        "asked for on the terminal (never on the command line)",
    )
    server.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="send credentials over a plaintext connection to a host that is not local",
    )
    server.add_argument("--ehlo", metavar="NAME", help="the name to give in EHLO")
    server.add_argument(
        "--timeout", type=float, default=60.0, help="seconds for each network wait (%(default)s)"
    )
    server.add_argument(
        "--data-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the reply to the message (%(default)s, RFC 5321)",
    )
    message = parser.add_argument_group("message")
    message.add_argument("--from", dest="sender", required=True, help="the sender")
    for name, what in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc (not shown in the message)")):
        message.add_argument(
            f"--{name}", action="append", default=[], metavar="ADDRESS", help=f"{what}; repeat"
        )
    message.add_argument("--subject", default="", help="the subject")
    body = message.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="the text of the message")
    body.add_argument(
        "--body-file", metavar="PATH", help="read the text from this file ('-': standard input)"
    )
    message.add_argument(
        "--attach", action="append", default=[], metavar="PATH", help="attach a file; repeat"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the envelope (stderr) and the message (stdout); send nothing",
    )
    parser.add_argument("--trace", action="store_true", help="print the SMTP conversation")
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: for messages of 1 MiB or more, when stderr "
        "is a terminal)",
    )


def _body_text(args: argparse.Namespace) -> str:
    if args.body is not None:
        return str(args.body)
    if args.body_file is None:
        return ""
    try:
        if args.body_file == "-":
            data = sys.stdin.buffer.read()
        else:
            data = Path(args.body_file).read_bytes()
        return data.decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read --body-file: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--body-file {args.body_file} is not UTF-8 text") from None


def _attach(msg: EmailMessage, path_text: str) -> None:
    path = Path(path_text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --attach: {exc}") from None
    kind, encoding = mimetypes.guess_type(path.name)
    if kind is None or encoding is not None:
        # A compressed file (.tar.gz) is sent as the bytes it is.
        kind = "application/octet-stream"
    maintype, subtype = kind.split("/", 1)
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)


def build_message(args: argparse.Namespace) -> EmailMessage:
    if not (args.to or args.cc or args.bcc):
        raise UsageError("no recipient: give --to, --cc or --bcc")
    msg = EmailMessage()
    try:
        msg["From"] = args.sender
        for header, addresses in (("To", args.to), ("Cc", args.cc), ("Bcc", args.bcc)):
            if addresses:
                msg[header] = ", ".join(addresses)
        msg["Subject"] = args.subject
        msg["Date"] = email.utils.formatdate(localtime=True)
        domain = email.utils.parseaddr(args.sender)[1].rpartition("@")[2] or "aiosmtp.invalid"
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
        msg.set_content(_body_text(args))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build the message: {exc}") from None
    for path in args.attach:
        _attach(msg, path)
    return msg


def _print_dry_run(envelope: Envelope, bcc: set[str]) -> None:
    options = f" {' '.join(envelope.mail_options)}" if envelope.mail_options else ""
    print(f"MAIL FROM:<{envelope.sender}>{options}", file=sys.stderr)
    for recipient in envelope.recipients:
        note = "  (Bcc: not in the message)" if recipient in bcc else ""
        print(f"RCPT TO:<{recipient}>{note}", file=sys.stderr)
    print(f"(dry run: nothing sent; the message, {len(envelope.data)} bytes:)", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.buffer.write(envelope.data)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    msg = build_message(args)
    try:
        envelope = flatten_message(msg, None, None, (), server_has_smtputf8=True)
    except (ValueError, UnicodeError) as exc:
        raise UsageError(f"cannot build the message: {exc}") from None
    if args.dry_run:
        bcc = {address for _, address in email.utils.getaddresses(args.bcc)}
        _print_dry_run(envelope, bcc)
        return EXIT_OK
    port = args.port or (465 if args.tls == "implicit" else 25)
    tls: TLSMode = args.tls or ("implicit" if port == 465 else "starttls")
    context = make_context(args.cafile) if tls != "none" else None
    password = None
    if args.user is not None:
        password = read_password(args.user, args.host, stdin_taken=args.body_file == "-")
    session = Session(trace=sys.stdout if args.trace else None)
    show_progress = args.progress == "always" or (
        args.progress == "auto" and len(envelope.data) >= LARGE_MESSAGE and sys.stderr.isatty()
    )
    progress = ProgressBar(len(envelope.data), sys.stderr) if show_progress else None

    async def deliver() -> int:
        async with SMTPPool(
            args.host,
            port,
            max_connections=1,
            tls=tls,
            context=context,
            username=args.user,
            password=password,
            timeout=args.timeout,
            data_timeout=args.data_timeout,
            local_hostname=args.ehlo,
            allow_insecure_auth=args.allow_insecure_auth,
            hooks=session,
        ) as pool:
            result = await pool.sendmail(
                envelope.sender,
                envelope.recipients,
                io.BytesIO(envelope.data),
                envelope.mail_options,
                progress=progress,
            )
        if progress is not None:
            progress.finish()
        reply = " | ".join(format_reply(result.reply))
        accepted = len(envelope.recipients) - len(result)
        print(f"sent to {accepted} of {len(envelope.recipients)} recipients: {reply}")
        for recipient, (code, text) in result.items():
            print(f"refused {recipient}: {code} {text.decode('utf-8', 'replace')}")
        return EXIT_PARTIAL if result else EXIT_OK

    try:
        return anyio.run(deliver)
    except Exception as exc:
        if progress is not None:
            progress.finish()
        code = exit_code_for(
            exc, session, tls_required=tls in ("starttls", "implicit"), user_given=bool(args.user)
        )
        return fail(code, f"{type(exc).__name__}: {exc}")
