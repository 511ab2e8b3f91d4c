"""The sans-IO core imports no networking, no event loop, and nothing of the client.

API.md: no module in ``aiosmtp.protocol`` imports anyio, asyncio, trio, socket, ssl,
smtplib or email, and ``import aiosmtp.protocol`` works with anyio absent (the
package's ``__init__`` loads the client lazily, PEP 562). Checked twice: statically
on the source, and by running the core in a fresh interpreter where those modules
cannot be imported at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aiosmtp.protocol

FORBIDDEN = frozenset({"anyio", "asyncio", "trio", "socket", "ssl", "smtplib", "email"})
PROTOCOL_DIR = Path(aiosmtp.protocol.__file__).parent
CORE_MODULES = sorted(PROTOCOL_DIR.glob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an ``import`` statement anywhere in ``tree`` names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def dynamic_imports(tree: ast.AST) -> list[str]:
    """Calls that could import a module by name, hiding it from the check above."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in {"__import__", "import_module"}:
                found.append(ast.unparse(node))
    return found


def test_the_core_modules_are_all_there() -> None:
    names = {path.stem for path in CORE_MODULES}
    expected = {"_reply", "_receivebuffer", "_commands", "_ehlo", "_data", "_sasl"}
    expected |= {"_state", "_connection", "_errors", "__init__"}
    assert expected <= names


def test_imported_modules_finds_every_form() -> None:
    tree = ast.parse(
        "import a.b\nfrom c import d\nfrom . import e\n"
        "def f():\n    import g\nif TYPE_CHECKING:\n    from h.i import j\n"
    )
    assert imported_modules(tree) == {"a.b", "c", "g", "h.i"}
    assert dynamic_imports(ast.parse("importlib.import_module('x')\n__import__('y')")) == [
        "importlib.import_module('x')",
        "__import__('y')",
    ]


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda path: path.name)
def test_no_forbidden_import_in_the_source(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for module in imported_modules(tree):
        assert module.split(".")[0] not in FORBIDDEN, f"{path.name} imports {module}"
        # Absolute imports of the package would pull in more than the core.
        if module.split(".")[0] == "aiosmtp":
            assert module.startswith("aiosmtp.protocol"), f"{path.name} imports {module}"
    assert dynamic_imports(tree) == [], path.name


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


BLOCK_FORBIDDEN = """
import sys

BLOCKED = ("anyio", "asyncio", "trio", "socket", "ssl", "smtplib", "email")
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
for name in BLOCKED:
    sys.modules[name] = None  # "import name" now raises ImportError
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"blocking {name} did not work")
"""

SESSION_WITHOUT_NETWORKING = (
    BLOCK_FORBIDDEN
    + """
import aiosmtp
import aiosmtp.protocol as core

conn = core.SMTPConnection()
wire = b""


def receive(data):
    conn.receive_data(data)
    replies = []
    while (reply := conn.next_reply()) is not core.NEED_DATA:
        replies.append(reply)
    return replies


assert receive(b"220 mx ESMTP\\r\\n") == [(220, b"mx ESMTP")]
wire += conn.send(core.Command.make("EHLO", "client.example"))
(ehlo,) = receive(b"250-mx\\r\\n250-PIPELINING\\r\\n250 AUTH PLAIN\\r\\n")
assert core.parse_ehlo_features(ehlo.message) == {"pipelining": "", "auth": " PLAIN"}
plain = core.encode_response(core.plain_response("tim", "tanstaaf"), initial=True)
wire += conn.send(core.Command.make("AUTH", "PLAIN " + plain, sensitive=True))
assert receive(b"235 2.7.0 ok\\r\\n")[0].code == 235
wire += conn.send_many([
    core.Command.make("MAIL", "FROM:<a@example.com>"),
    core.Command.make("RCPT", "TO:<b@example.com>"),
    core.Command.make("DATA"),
])
replies = receive(b"250 ok\\r\\n250 ok\\r\\n354 go\\r\\n")
assert [reply.code for reply in replies] == [250, 250, 354]
assert conn.state is core.State.DATA
wire += conn.send_data(b"Subject: hi\\n\\n.body")
wire += conn.end_data()
assert receive(b"250 2.0.0 queued\\r\\n")[0].enhanced_status == "2.0.0"
wire += conn.send(core.Command.make("QUIT"))
assert receive(b"221 bye\\r\\n")[0].code == 221
assert conn.state is core.State.CLOSED
assert wire == (
    b"EHLO client.example\\r\\nAUTH PLAIN AHRpbQB0YW5zdGFhZg==\\r\\n"
    b"MAIL FROM:<a@example.com>\\r\\nRCPT TO:<b@example.com>\\r\\nDATA\\r\\n"
    b"Subject: hi\\r\\n\\r\\n..body\\r\\n.\\r\\nQUIT\\r\\n"
), wire

# The reply type is reachable from the package without the client...
assert aiosmtp.Reply is core.Reply
assert aiosmtp.Reply(250, b"ok") == (250, b"ok")
assert "aiosmtp.client" not in sys.modules
# ...and only asking for the client fails, with ImportError.
try:
    aiosmtp.SMTP
except ImportError:
    pass
else:
    raise SystemExit("aiosmtp.SMTP was importable without anyio")
print("core ok")
"""
)


def test_core_runs_a_session_with_networking_blocked() -> None:
    result = run_python(SESSION_WITHOUT_NETWORKING)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "core ok"


def test_client_needs_what_was_blocked() -> None:
    # Guards the test above: with the same blocking, the client cannot load, so
    # the session there really ran without it.
    result = run_python(BLOCK_FORBIDDEN + "import aiosmtp.client\n")
    assert result.returncode != 0
    assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr


def test_importing_the_core_loads_nothing_forbidden() -> None:
    # Without any blocking: importing the core must not load them as a side effect.
    code = f"""
    import sys
    before = set(sys.modules)
    import aiosmtp.protocol
    import aiosmtp
    aiosmtp.Reply
    loaded = set(sys.modules) - before
    forbidden = sorted(
        name for name in loaded if name.split(".")[0] in {sorted(FORBIDDEN)!r}
    )
    client = sorted(
        name for name in loaded
        if name.startswith("aiosmtp.") and not name.startswith("aiosmtp.protocol")
    )
    print(forbidden, client)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"
