"""The security suite's list (tests/security_suite.py) names tests that exist.

A test renamed or moved would otherwise drop out of ``make security`` without a word.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.security_suite import ALL, SECURITY_TESTS, is_security_test

TESTS = Path(__file__).resolve().parent


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_listed_test_exists() -> None:
    missing = []
    for file_name, names in SECURITY_TESTS.items():
        path = TESTS / file_name
        if not path.is_file():
            missing.append(file_name)
            continue
        if names != ALL:
            missing += [f"{file_name}::{name}" for name in sorted(set(names) - _test_functions(path))]
    assert not missing, f"tests/security_suite.py names tests that do not exist: {missing}"


def test_the_suite_has_its_own_files_and_the_listed_tests_only() -> None:
    """The rule the marker hook applies: test_security_* files whole, the others by name."""
    assert is_security_test("test_security_mqtt_acl.py", "test_anything")
    assert is_security_test("test_broker_malformed.py", "test_anything")
    assert is_security_test("test_api_lifecycle.py", "test_stale_if_match_is_412")
    assert not is_security_test("test_api_lifecycle.py", "test_full_walk_to_delivered")
    assert not is_security_test("test_relay.py", "test_wakes_on_commit_not_on_its_poll")
