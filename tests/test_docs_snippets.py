"""The guide's code cannot rot: every python block in docs/ must compile, and every
block marked runnable runs, as a user would run it, against a real server.

A runnable block is a complete program preceded by a marker line::

    <!-- docs: run server=tls messages=1 -->

``server`` picks what it talks to: ``plain`` (aiosmtpd with PIPELINING, refusing
``nobody@example.com``), ``tls`` (STARTTLS and AUTH), ``implicit-tls`` (TLS from the
first byte, and AUTH), ``lmtp`` (an LMTP server on a Unix socket) or ``none`` (no
network at all). ``messages`` is how many messages the server must have received.

The block keeps the names a reader would use: ``"mail.example.com", PORT`` becomes the
test server's loopback address and port, and ``"/var/run/dovecot/lmtp"`` the test's
socket. Certificates are trustme's, made trusted for the snippet through
``SSL_CERT_FILE``, so the snippet's default, verifying context is the one tested. The
password comes from ``$SMTP_PASSWORD``, as the guide recommends.
"""

from __future__ import annotations

import ast
import os
import re
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import UnixSocketController
from aiosmtpd.lmtp import LMTP as LMTPServer
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from .servers import USERS, RecordingHandler, RunningServer, aiosmtpd_server

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_MARKER = re.compile(r"<!--\s*docs:\s*(run|skip)\b(.*?)-->")
_HOST_PORT = re.compile(r'"mail\.example\.com",\s*\d+')
_LMTP_SOCKET = '"/var/run/dovecot/lmtp"'
_SERVERS = ("plain", "tls", "implicit-tls", "lmtp", "none")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    run: bool
    server: str
    messages: int | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _options(text: str) -> dict[str, str]:
    options = {}
    for item in text.split():
        key, _, value = item.partition("=")
        options[key] = value
    return options


def python_blocks() -> list[Block]:
    blocks = []
    for path in sorted(DOCS.rglob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        marker: re.Match[str] | None = None
        index = 0
        while index < len(lines):
            line = lines[index]
            if line.startswith("```"):
                start = index
                end = start + 1
                while not lines[end].startswith("```"):
                    end += 1
                if line.strip() == "```python":
                    options = _options(marker.group(2)) if marker else {}
                    run = marker is not None and marker.group(1) == "run"
                    messages = options.get("messages")
                    blocks.append(
                        Block(
                            page=str(path.relative_to(DOCS)),
                            line=start + 1,
                            code="\n".join(lines[start + 1 : end]) + "\n",
                            run=run,
                            server=options.get("server", "plain"),
                            messages=int(messages) if messages is not None else None,
                        )
                    )
                index = end + 1
                marker = None
                continue
            if line.strip():
                marker = _MARKER.search(line)
            index += 1
    return blocks


BLOCKS = python_blocks()
RUNNABLE = [block for block in BLOCKS if block.run]


def test_the_guide_has_runnable_blocks() -> None:
    # The extraction itself is under test: a marker it stopped seeing would make
    # every page untested without a failure.
    assert len(RUNNABLE) >= 27
    assert {block.server for block in RUNNABLE} == set(_SERVERS)
    for block in RUNNABLE:
        assert block.server in _SERVERS, block.id
        assert (block.messages is None) == (block.server == "none"), block.id


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block_compiles(block: Block) -> None:
    # Fragments may await at the top level (they live inside the reader's coroutine).
    compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


# -- the servers -------------------------------------------------------------------------


@dataclass
class LMTPHandler(RecordingHandler):
    """Answers the end of the data once per recipient, as RFC 2033 asks (aiosmtpd's
    LMTP class only changes the greeting command)."""

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await super().handle_DATA(server, session, envelope)
        return "\r\n".join(f"250 2.0.0 <{rcpt}> delivered" for rcpt in envelope.rcpt_tos)


class LMTPController(UnixSocketController):
    def factory(self) -> SMTPServer:
        return LMTPServer(self.handler, **self.SMTP_kwargs)


@contextmanager
def lmtp_server() -> Iterator[tuple[str, RecordingHandler]]:
    handler = LMTPHandler()
    # AF_UNIX paths are limited to about 104 bytes: a short directory of its own.
    with tempfile.TemporaryDirectory(prefix="lmtp") as directory:
        path = str(Path(directory) / "s")
        controller = LMTPController(handler, unix_socket=path)
        controller.start()
        try:
            yield path, handler
        finally:
            controller.stop()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _run(code: str, ca_file: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["SSL_CERT_FILE"] = ca_file
    env["SMTP_PASSWORD"] = USERS["alice"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_runnable_block(block: Block, server_context: ssl.SSLContext, ca_file: str) -> None:
    with ExitStack() as stack:
        code = block.code
        received: RecordingHandler | None = None
        if block.server == "lmtp":
            path, received = stack.enter_context(lmtp_server())
            assert _LMTP_SOCKET in code, f"{block.id}: no LMTP socket path to replace"
            code = code.replace(_LMTP_SOCKET, repr(path))
        elif block.server != "none":
            handler = RecordingHandler(refuse_rcpt={"nobody@example.com"})
            options: dict[str, Any] = {
                "plain": {},
                "tls": {"starttls_context": server_context, "auth": True},
                "implicit-tls": {"implicit_tls_context": server_context, "auth": True},
            }[block.server]
            server: RunningServer = stack.enter_context(
                aiosmtpd_server(handler=handler, **options)
            )
            received = handler
            code, count = _HOST_PORT.subn(f'"localhost", {server.port}', code)
            assert count, f"{block.id}: no host and port to replace"
        else:
            assert "mail.example.com" not in code, f"{block.id}: would use the network"
        completed = _run(code, ca_file)
        assert completed.returncode == 0, f"{block.id}:\n{completed.stderr}"
        if received is not None:
            assert len(received.messages) == block.messages, completed.stdout
