"""The shape of the code, checked: which package may import which, where asyncio and sockets
may appear, how long a module may grow, and that routes never hide in address strings.

These are the rules of docs/architecture.md; a change that breaks one should change the
document (and this file) on purpose, not by accident.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "stunproto",
    "rvproto",
    "noiseproto",
    "iokit",
    "netsim",
    "natprobe",
    "rendezvous",
    "peer",
    "natlab",
)
# Who may import whom (first-party packages only). netsim stands alone so that it can drive
# anyone's sans-I/O objects; the wire layers know nothing of either side; the server and
# the peer never import each other.
ALLOWED: dict[str, frozenset[str]] = {
    "stunproto": frozenset(),
    "rvproto": frozenset({"stunproto"}),
    "noiseproto": frozenset(),
    "iokit": frozenset({"stunproto"}),
    "netsim": frozenset(),
    "natprobe": frozenset({"stunproto", "iokit"}),
    "rendezvous": frozenset({"stunproto", "rvproto", "noiseproto", "iokit"}),
    "peer": frozenset({"stunproto", "rvproto", "noiseproto", "iokit", "natprobe"}),
    "natlab": frozenset(PACKAGES) - {"natlab"},
}
# A composition root may wire in another package: the rendezvous's publish gateway is a
# peer running in the server's process (rendezvous --publish-ports), and only the server's
# CLI starts it. No core of the server imports the peer's package.
COMPOSITION_ROOTS: dict[str, frozenset[str]] = {"rendezvous/gateway.py": frozenset({"peer"})}
COMPOSITION_USERS: dict[str, frozenset[str]] = {
    "rendezvous.gateway": frozenset({"rendezvous/cli.py"})
}
MAX_LINES = 400
LENGTH_LIMITED = (
    "stunproto",
    "rvproto",
    "noiseproto",
    "iokit",
    "netsim",
    "natprobe",
    "rendezvous",
    "peer",
)
# The modules that may touch the event loop, sockets or the clock (everything else is
# sans-I/O): adapters, command-line tools, the packages that are I/O by nature, and the
# rendezvous's name store (SQLite, handed to the core as an object).
IO_MODULES = ("asyncio", "time", "uvloop", "selectors", "sqlite3")
# From ``socket``, a core may use the address conversions, nothing that opens anything.
SOCKET_PURE = frozenset({"inet_pton", "inet_ntop", "AF_INET", "AF_INET6"})
IO_ALLOWED = re.compile(
    r"^(iokit|natlab|natprobe)/|/adapters/|/cli\.py$|/__main__\.py$"
    r"|^peer/(chat|localaddr|transfer_cli|transfer_streams|tunnel_cli)\.py$|^rendezvous/(registry|registry_writer|gateway)\.py$"
)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _socket_uses(path: Path) -> set[str]:
    """What a module takes from ``socket`` (``socket.X`` and ``from socket import X``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    used: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "socket"
        ):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "socket":
            used.update(alias.name for alias in node.names)
    return used


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_depend_one_way(package: str) -> None:
    wrong = []
    for path in _modules(package):
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = ALLOWED[package] | COMPOSITION_ROOTS.get(_relative(path), frozenset())
            if top in PACKAGES and top != package and top not in allowed:
                wrong.append(f"{_relative(path)} imports {name}")
            users = COMPOSITION_USERS.get(name)
            if users is not None and _relative(path) not in users:
                wrong.append(f"{_relative(path)} imports the composition root {name}")
    assert not wrong, "\n".join(wrong)


def test_server_and_peer_never_import_each_other() -> None:
    # The rule the issue names first, spelt out apart from the table above: the server's
    # one exception is its publish gateway's composition root (COMPOSITION_ROOTS).
    assert "peer" not in ALLOWED["rendezvous"] and "rendezvous" not in ALLOWED["peer"]
    assert set(COMPOSITION_ROOTS) == {"rendezvous/gateway.py"}


@pytest.mark.parametrize("package", LENGTH_LIMITED)
def test_modules_stay_short(package: str) -> None:
    long = [
        f"{_relative(path)}: {lines} lines"
        for path in _modules(package)
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("package", ("stunproto", "rvproto", "netsim", "rendezvous", "peer"))
def test_cores_do_no_io(package: str) -> None:
    wrong = []
    for path in _modules(package):
        if IO_ALLOWED.search(_relative(path)):
            continue
        wrong += [
            f"{_relative(path)} imports {name}"
            for name in _imports(path)
            if name.split(".")[0] in IO_MODULES
        ]
        wrong += [
            f"{_relative(path)} uses socket.{name}" for name in _socket_uses(path) - SOCKET_PURE
        ]
    assert not wrong, "\n".join(wrong)


def test_nothing_shadows_the_standard_library() -> None:
    import sys

    shadowing = [
        _relative(path)
        for package in PACKAGES
        for path in _modules(package)
        if path.stem in sys.stdlib_module_names and path.stem != "__main__"
    ]
    assert not shadowing, shadowing


# Routing tags once prefixed to host strings ("relay:1.2.3.4", "sock3|1.2.3.4", "tcp:1.2.3.4").
_TAGS = re.compile(r"""["'](relay|tcp):|sock\{|\bRELAY_TAG\b|\bSOCKET_TAG\b|\bturn_local_for\b""")


def test_no_routes_in_address_strings() -> None:
    found = [
        f"{_relative(path)}:{number}: {line.strip()}"
        for package in (*PACKAGES, "tests", "bench")
        for path in _modules(package)
        if path.name != "test_architecture.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _TAGS.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_checks_see_the_code() -> None:
    # A negative control: the walkers above must find modules and imports at all.
    assert len(_modules("peer")) > 10
    assert "stunproto.attributes" in _imports(ROOT / "rvproto" / "messages.py")
    assert _TAGS.search('RELAY_TAG = "relay:"')
    assert _TAGS.search('f"sock{index}|{host}"')
    assert _TAGS.search('("tcp:" + listen[0], listen[1])')
    assert not _TAGS.search('"relayed"') and not _TAGS.search('int(resp["sock"])')
    assert _socket_uses(ROOT / "stunproto" / "attributes.py") <= SOCKET_PURE
