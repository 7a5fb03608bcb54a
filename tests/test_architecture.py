"""The rooms of the code and what each may import (docs/architecture.md), held against the code.

Every ``import`` of every Python file of the installed packages is read (static, with
``ast``, so nothing is run) and checked against the table below. A new import that
crosses a wall fails here with the file, the line and the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The service's rooms, bottom up; a room may import the rooms listed for it, itself, the
# shared modules and the contract. (The process entry points sit beside them: see below.)
SHARED = {"order_service.config", "order_service.errors", "order_service.lifecycle", "order_service.faults"}
ROOMS: dict[str, set[str]] = {
    "store": set(),
    "accounts": {"store"},
    "catalog": {"store"},
    "orders": {"store", "accounts", "catalog"},
    "outbox": {"store", "accounts"},
    "dispatch": {"store", "accounts", "orders", "outbox"},
    "webhooks": {"store", "accounts", "orders"},
    "push": {"store"},
    "api": {"store", "accounts", "catalog", "orders", "outbox", "dispatch", "webhooks", "push"},
    "ops": {"store", "accounts", "catalog", "orders", "outbox", "dispatch", "webhooks"},
}
# Modules that put a process together from rooms.
ENTRY_POINTS = {"order_service.relay", "order_service.__main__", "order_service.api_server"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.append((node.lineno, base))
            # ``from order_service import lifecycle``, ``from broker import credfiles``: modules
            found += [
                (node.lineno, f"{base}.{alias.name}")
                for alias in node.names
                if base in ("order_service", "broker")
            ]
    return found


def _files(*packages: str) -> list[Path]:
    return sorted(
        p for package in packages for p in (ROOT / package).rglob("*.py") if "node_modules" not in p.parts
    )


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "order_service" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOMS else None


def test_each_room_imports_only_the_rooms_below_it():
    broken = []
    for path in _files("order_service"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        room = _room(module)
        for line, name in _imports(path):
            target = _room(name)
            if module in ENTRY_POINTS or target is None or target == room:
                continue
            if room is None:  # a shared module (config, errors, lifecycle, faults) imports no room
                broken.append(f"{path.relative_to(ROOT)}:{line} shared module imports {name}")
            elif target not in ROOMS[room]:
                broken.append(f"{path.relative_to(ROOT)}:{line} {room}/ may not import {name}")
    assert broken == []


def test_shared_modules_exist():
    """Positive control for the rule above: the names it allows are real modules."""
    for name in SHARED | ENTRY_POINTS:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name
    for room in ROOMS:
        assert (ROOT / "order_service" / room / "__init__.py").is_file(), room


@pytest.mark.parametrize("package", ["contract", "bridges", "clients", "broker"])
def test_outside_the_service_nothing_imports_its_internals(package):
    """The contract, the bridges, the clients and the broker know the service only through
    its public interfaces (REST, MQTT, the broker's login files)."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files(package)
        for line, name in _imports(path)
        if name == "order_service" or name.startswith("order_service.")
    ]
    assert found == []


# What the service may import of the embedded broker: the login files' formats; and the
# relay's entry point the broker itself (ORDERBUS_BROKER_IN_RELAY).
BROKER_MODULES = {"broker.credfiles", "broker.channel"}
BROKER_IN_RELAY = {"order_service.relay": {"broker.server"}}


def test_the_service_imports_of_the_broker_only_what_it_may():
    found, seen = [], set()
    for path in _files("order_service"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for line, name in _imports(path):
            if name.startswith("broker."):
                seen.add(name)
                if name not in BROKER_MODULES | BROKER_IN_RELAY.get(module, set()):
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert found == []
    assert seen == {"broker.credfiles", "broker.channel", "broker.server"}  # positive control: it sees each


@pytest.mark.parametrize("package", ["order_service", "contract", "broker", "bridges", "clients", "harness"])
def test_installed_code_never_imports_the_tests(package):
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files(package)
        for line, name in _imports(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert found == []


def test_the_checker_sees_a_crossing(tmp_path):
    """Positive control: an import across a wall is found by the same reader."""
    sample = ROOT / "order_service" / "store" / "_architecture_probe.py"
    sample.write_text("from order_service.api import app\nfrom ..orders import service\n")
    try:
        names = [name for _, name in _imports(sample)]
    finally:
        sample.unlink()
    assert names == ["order_service.api", "order_service.orders"]
    assert _room(names[0]) == "api" and "api" not in ROOMS["store"]


def test_no_module_is_much_over_400_lines():
    """Modules stay readable in one sitting: about 400 lines at most."""
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _files("order_service", "contract", "bridges")
        if (n := len(p.read_text().splitlines())) > 450
    ]
    assert long == []
