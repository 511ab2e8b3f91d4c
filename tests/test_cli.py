"""The command line, run as users run it: ``python -m aiosmtp ...`` in a subprocess,
against aiosmtpd and scripted servers on loopback.

Checked: every exit status of the table in ``--help``, what ``--dry-run`` prints
(and that Bcc is not in it), STARTTLS against a trustme CA given with ``--cafile``,
the swaks-like ``--trace`` with credentials redacted, the password taken from
AIOSMTP_PASSWORD or from the terminal (and never echoed), the progress bar.
"""

from __future__ import annotations

import base64
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import pytest
import trustme

from .scripted import (
    CLIENT_NAME,
    ScriptedServers,
    Step,
    close,
    ehlo_ok,
    expect,
    greet,
    quit_ok,
    recv_until,
    send,
    stop_reading,
)
from .servers import RunningServer, free_port

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "alice", "correct horse"
SECRETS = [
    PASSWORD,
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    base64.b64encode(PASSWORD.encode()).decode(),
]


def cli_env(password: str | None = PASSWORD) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AIOSMTP_PASSWORD", None)
    if password is not None:
        env["AIOSMTP_PASSWORD"] = password
    # The worktree's aiosmtp, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "aiosmtp", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env() if env is None else env,
        cwd=ROOT,
        # No controlling terminal: nothing can ever wait for a password typed there.
        start_new_session=True,
        check=False,
    )
    for secret in SECRETS:
        assert secret not in completed.stdout
        assert secret not in completed.stderr
    return completed


@pytest.fixture(scope="session")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class Address(Protocol):
    host: str
    port: int


def server_args(server: Address, *more: str) -> list[str]:
    return ["--host", server.host, "--port", str(server.port), "--ehlo", CLIENT_NAME, *more]


MESSAGE_ARGS = ["--from", "a@example.com", "--to", "b@example.com", "--body", "hi"]


# -- help and usage ----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["send"], ["check"]])
def test_help_documents_the_exit_codes(command: list[str]) -> None:
    completed = run_cli(*command, "--help")
    assert completed.returncode == 0
    assert "exit status:" in completed.stdout
    for code in range(7):
        assert re.search(rf"^  {code}  \w", completed.stdout, re.MULTILINE), code


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["frobnicate"], "invalid choice"),
        (["send", "--to", "b@x.org"], "--from"),
        (["send", "--from", "a@x.org", "--body", "hi"], "no recipient"),
        (["send", *MESSAGE_ARGS, "--attach", "/nonexistent/file"], "cannot read --attach"),
        (["send", *MESSAGE_ARGS, "--subject", "two\nlines"], "cannot build the message"),
        (["send", *MESSAGE_ARGS, "--cafile", "/nonexistent.pem"], "cannot load --cafile"),
        (["check", "127.0.0.1", "--tls", "sometimes"], "invalid choice"),
    ],
)
def test_usage_errors_exit_1(args: list[str], error: str) -> None:
    completed = run_cli(*args)
    assert completed.returncode == 1, completed.stderr
    assert error in completed.stderr
    assert completed.stdout == ""


# -- send --dry-run --------------------------------------------------------------


def test_dry_run_prints_the_message_and_sends_nothing(tmp_path: Path) -> None:
    picture = tmp_path / "dot.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    completed = run_cli(
        "send", "--host", "127.0.0.1", "--port", str(free_port()), "--dry-run",
        "--from", "Alice <a@example.com>", "--to", "b@example.com", "--cc", "c@example.com",
        "--bcc", "hidden@example.com", "--subject", "Dry", "--body-file", "-",
        "--attach", str(picture),
        stdin=b"Line one\n.line with a dot\n",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    envelope = completed.stderr.splitlines()
    assert envelope[:4] == [
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.com>",
        "RCPT TO:<hidden@example.com>  (Bcc: not in the message)",
        "RCPT TO:<c@example.com>",
    ]
    message = completed.stdout
    assert "From: Alice <a@example.com>" in message
    assert "To: b@example.com" in message
    assert "Cc: c@example.com" in message
    assert "Subject: Dry" in message
    assert "Message-ID: <" in message
    assert "hidden@example.com" not in message
    assert "Bcc" not in message
    assert "Line one" in message
    assert ".line with a dot" in message
    assert "Content-Type: image/png\n" in message
    assert 'filename="dot.png"' in message


# -- send ------------------------------------------------------------------------


def test_send_over_starttls_with_auth_and_trace(
    smtpd_tls: RunningServer, cafile: str, tmp_path: Path
) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached text\n")
    completed = run_cli(
        "send", *server_args(smtpd_tls), "--cafile", cafile, "--user", USER,
        "--from", "a@example.com", "--to", "b@example.com", "--bcc", "c@example.com",
        "--subject", "Over TLS", "--body", "Hello.", "--attach", str(attachment), "--trace",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "sent to 2 of 2 recipients: 250 " in out
    assert f"-> EHLO {CLIENT_NAME}" in out
    assert "-> STARTTLS" in out
    assert "<- 220 " in out
    assert "=== TLS started" in out
    assert f"~> EHLO {CLIENT_NAME}" in out
    assert "~> AUTH PLAIN <redacted>" in out
    assert "<~ 235 " in out
    assert "~> MAIL FROM:<a@example.com>" in out
    assert "=== Message accepted" in out
    [received] = smtpd_tls.messages
    assert received.rcpt_tos == ["b@example.com", "c@example.com"]
    assert b"Subject: Over TLS" in received.content
    assert b"c@example.com" not in received.content
    assert b'filename="notes.txt"' in received.content
    assert b"Content-Type: text/plain" in received.content


def test_the_password_is_asked_on_the_terminal_and_not_echoed(
    smtpd_tls: RunningServer, cafile: str
) -> None:
    master, slave = open_pty()
    terminal = os.ttyname(slave)
    # A new session that takes the pty as its controlling terminal, so that getpass
    # talks to /dev/tty as it would for a user.
    code = (
        "import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR)); "
        "from aiosmtp.__main__ import main; sys.exit(main(sys.argv[2:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, terminal, "send", *server_args(smtpd_tls),
         "--cafile", cafile, "--user", USER, *MESSAGE_ARGS],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env(password=None), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        # The slave stays open here too: reading the master fails (EIO) while no
        # process has it open, and the child opens it only once started.
        seen = read_until(master, b"Password for alice at 127.0.0.1: ")
        os.write(master, PASSWORD.encode() + b"\n")
        out, err = process.communicate(timeout=30)
        seen += read_available(master)
    finally:
        process.kill()
        os.close(slave)
        os.close(master)
    assert process.returncode == 0, err
    assert b"sent to 1 of 1 recipients" in out
    for secret in SECRETS:
        assert secret.encode() not in seen + out + err
    assert len(smtpd_tls.messages) == 1


def open_pty() -> tuple[int, int]:
    try:
        return pty.openpty()
    except OSError as exc:  # pragma: no cover - a machine without pseudo-terminals
        pytest.skip(f"no pseudo-terminal: {exc}")


def read_until(fd: int, wanted: bytes, timeout: float = 20) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {wanted!r}, only {data!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            data += os.read(fd, 1024)
    return data


def read_available(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the other side is closed
            break
        if not chunk:
            break
        data += chunk
    return data


def test_no_password_and_no_terminal_exits_1(smtpd_tls: RunningServer, cafile: str) -> None:
    completed = run_cli(
        "send", *server_args(smtpd_tls), "--cafile", cafile, "--user", USER,
        "--from", "a@x.org", "--to", "b@x.org", "--body-file", "-",
        env=cli_env(password=None), stdin=b"the body\n",
    )  # fmt: skip
    assert completed.returncode == 1
    assert "AIOSMTP_PASSWORD" in completed.stderr
    assert smtpd_tls.messages == []


def test_partly_refused_exits_2(smtpd: RunningServer) -> None:
    smtpd.handler.refuse_rcpt = {"nobody@example.com"}
    completed = run_cli(
        "send", *server_args(smtpd, "--tls", "none"), "--from", "a@example.com",
        "--to", "b@example.com", "--to", "nobody@example.com", "--body", "hi",
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert "sent to 1 of 2 recipients" in completed.stdout
    assert "refused nobody@example.com: 550 5.1.1 No such user" in completed.stdout
    assert len(smtpd.messages) == 1


def test_all_refused_exits_3(smtpd: RunningServer) -> None:
    smtpd.handler.refuse_rcpt = {"nobody@example.com"}
    completed = run_cli(
        "send", *server_args(smtpd, "--tls", "none"), "--from", "a@example.com",
        "--to", "nobody@example.com", "--body", "hi",
    )  # fmt: skip
    assert completed.returncode == 3, completed.stderr
    assert "SMTPRecipientsRefused" in completed.stderr
    assert smtpd.messages == []


def plain_start() -> list[Step]:
    return [greet(), *ehlo_ok()]


@pytest.mark.parametrize(
    "exchange",
    [
        pytest.param(
            [expect(b"MAIL FROM:<a@example.com>\r\n"), send(b"550 5.7.1 not you\r\n")],
            id="sender",
        ),
        pytest.param(
            [
                expect(b"MAIL FROM:<a@example.com>\r\n"),
                send(b"250 ok\r\n"),
                expect(b"RCPT TO:<b@example.com>\r\n"),
                send(b"250 ok\r\n"),
                expect(b"DATA\r\n"),
                send(b"354 go\r\n"),
                recv_until(b"\r\n.\r\n"),
                send(b"554 5.7.1 spam\r\n"),
            ],
            id="data",
        ),
    ],
)
def test_refused_exits_3(scripted: ScriptedServers, exchange: list[Step]) -> None:
    server = scripted(
        *plain_start(), *exchange, expect(b"RSET\r\n"), send(b"250 ok\r\n"), quit_ok()
    )
    completed = run_cli("send", *server_args(server, "--tls", "none"), *MESSAGE_ARGS)
    assert completed.returncode == 3, completed.stderr


def test_nothing_listening_exits_4() -> None:
    completed = run_cli(
        "send", "--host", "127.0.0.1", "--port", str(free_port()), "--tls", "none", *MESSAGE_ARGS
    )
    assert completed.returncode == 4
    assert "SMTPConnectError" in completed.stderr


def test_no_starttls_exits_4(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("PIPELINING"))
    completed = run_cli("send", *server_args(server), *MESSAGE_ARGS)
    assert completed.returncode == 4, completed.stderr
    assert "STARTTLS" in completed.stderr


def test_untrusted_certificate_exits_4(smtpd_tls: RunningServer) -> None:
    completed = run_cli("send", *server_args(smtpd_tls), *MESSAGE_ARGS)
    assert completed.returncode == 4, completed.stderr
    assert "SMTPCertificateError" in completed.stderr
    assert smtpd_tls.messages == []


def test_timeout_exits_4(scripted: ScriptedServers) -> None:
    server = scripted(stop_reading())  # no greeting
    completed = run_cli(
        "send", *server_args(server, "--tls", "none", "--timeout", "0.3"), *MESSAGE_ARGS
    )
    assert completed.returncode == 4, completed.stderr
    assert "SMTPTimeoutError" in completed.stderr


def test_wrong_password_exits_5(smtpd_tls: RunningServer, cafile: str) -> None:
    completed = run_cli(
        "send", *server_args(smtpd_tls, "--cafile", cafile, "--user", USER), *MESSAGE_ARGS,
        env=cli_env(password="wrong"),
    )  # fmt: skip
    assert completed.returncode == 5, completed.stderr
    assert "SMTPAuthenticationError" in completed.stderr
    assert "wrong" not in completed.stderr
    assert smtpd_tls.messages == []


def test_no_auth_offered_exits_5(scripted: ScriptedServers) -> None:
    server = scripted(greet(), ehlo_ok("PIPELINING"))
    completed = run_cli(
        "send", *server_args(server, "--tls", "none", "--user", USER), *MESSAGE_ARGS
    )
    assert completed.returncode == 5, completed.stderr


def test_lost_after_the_data_exits_6(scripted: ScriptedServers) -> None:
    server = scripted(
        greet(),
        ehlo_ok("PIPELINING"),
        expect(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        recv_until(b"\r\n.\r\n"),
        close(),
    )
    completed = run_cli("send", *server_args(server, "--tls", "none"), *MESSAGE_ARGS)
    assert completed.returncode == 6, completed.stderr
    assert "SMTPDeliveryUnknownError" in completed.stderr


def test_progress_bar(smtpd: RunningServer, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    args = ["send", *server_args(smtpd, "--tls", "none"), *MESSAGE_ARGS, "--attach", str(big)]
    completed = run_cli(*args, "--progress", "always")
    assert completed.returncode == 0, completed.stderr
    # (Text mode shows the bar's carriage returns as line ends.)
    assert completed.stderr.lstrip().startswith("sending [")
    assert "] 100% " in completed.stderr
    # Auto: stderr is not a terminal here, so no bar.
    completed = run_cli(*args)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert len(smtpd.messages) == 2


def test_progress_bar_on_a_terminal(smtpd: RunningServer, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    master, slave = open_pty()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtp", "send", *server_args(smtpd, "--tls", "none"),
         *MESSAGE_ARGS, "--attach", str(big)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        env=cli_env(), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        seen = read_until(master, b"] 100% ")
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        os.close(master)
    assert process.returncode == 0
    assert b"\rsending [" in seen
    assert b"sent to 1 of 1" in out


# -- check -----------------------------------------------------------------------


def check_args(server: Address, *more: str) -> list[str]:
    return ["check", server.host, "--port", str(server.port), "--ehlo", CLIENT_NAME, *more]


def test_check_starttls_with_login_and_trace(smtpd_tls: RunningServer, cafile: str) -> None:
    completed = run_cli(*check_args(smtpd_tls, "--cafile", cafile, "--user", USER, "--trace"))
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert re.search(r"^greeting: 220 ", out, re.MULTILINE)
    before, after = out.split("EHLO after STARTTLS", 1)
    assert "EHLO (plaintext)" in before
    assert "  STARTTLS\n" in before
    assert "  AUTH LOGIN PLAIN\n" in after
    assert "STARTTLS" not in after.split("AUTH mechanisms")[0]
    assert re.search(r"^TLS: TLSv1\.[23], cipher \S+ \(\d+ bits\)$", out, re.MULTILINE)
    assert "  subject: " in out
    assert "  issuer:  organizationName=trustme" in out
    assert "DNS:localhost" in out
    assert "IP Address:127.0.0.1" in out
    assert re.search(r"^  expires: .* GMT \(in \d+ days\)$", out, re.MULTILINE)
    assert "AUTH mechanisms: LOGIN PLAIN" in out
    assert "login as alice: 235 " in out
    assert out.rstrip().endswith("OK")
    # The transcript: plaintext, then encrypted, credentials redacted.
    assert f"-> EHLO {CLIENT_NAME}\n" in out
    assert "-> STARTTLS\n" in out
    assert f"~> EHLO {CLIENT_NAME}\n" in out
    assert "~> AUTH PLAIN <redacted>\n" in out
    assert "<~ 235 " in out
    assert "~> QUIT" in out


def test_check_implicit_tls(smtpd_implicit_tls: RunningServer, cafile: str) -> None:
    completed = run_cli(*check_args(smtpd_implicit_tls, "--tls", "implicit", "--cafile", cafile))
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert out.index("TLS: TLSv1") < out.index("EHLO (TLS)")
    assert "STARTTLS:" not in out


def test_check_plaintext(smtpd: RunningServer) -> None:
    completed = run_cli(*check_args(smtpd, "--tls", "none"))
    assert completed.returncode == 0, completed.stderr
    assert "TLS:" not in completed.stdout
    assert "AUTH mechanisms: (none offered)" in completed.stdout


def test_check_failures_name_the_step(
    scripted: ScriptedServers, smtpd_tls: RunningServer, cafile: str
) -> None:
    refused = scripted(greet(b"554 5.3.2 go away\r\n"))
    completed = run_cli(*check_args(refused))
    assert completed.returncode == 3
    assert "refused service (554)" in completed.stderr

    no_tls = scripted(greet(), ehlo_ok("PIPELINING"))
    completed = run_cli(*check_args(no_tls))
    assert completed.returncode == 4
    assert "does not offer STARTTLS" in completed.stderr

    completed = run_cli(*check_args(smtpd_tls))  # no --cafile: not trusted
    assert completed.returncode == 4
    assert "SMTPCertificateError" in completed.stderr

    completed = run_cli(
        *check_args(smtpd_tls, "--cafile", cafile, "--user", USER, "--trace"),
        env=cli_env(password="wrong"),
    )
    assert completed.returncode == 5
    assert "login as alice refused: 535" in completed.stderr
    assert "wrong" not in completed.stdout + completed.stderr
    for secret in (base64.b64encode(f"\0{USER}\0wrong".encode()).decode(),):
        assert secret not in completed.stdout
