"""The browser fixtures of the admin dashboard's tests: Debian's chromium, the real system behind a TCP proxy.

One system per test module (broker with its WebSocket listener and password/ACL files, API
under granian, relay); the page reaches the broker through a proxy a test can cut. A test
module imports the fixtures it uses by name (``from tests.dashboard_fixtures import ...``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.processes import ROOT, free_port
from harness.system import System, make_system
from tests.tcp_proxy import TcpProxy

CHROMIUM = Path(os.environ.get("ORDERBUS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> list[str]:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (make install)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not (ROOT / "clients/admin/node_modules/mqtt/dist/mqtt.esm.js").exists():
        missing.append("mqtt.js (make admin-deps)")
    return missing


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        message = "the dashboard's browser tests need " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def proxy() -> Iterator[TcpProxy]:
    # The broker's WebSocket port: chosen now, bound by the broker.
    instance = TcpProxy("127.0.0.1", free_port()).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, proxy: TcpProxy) -> Iterator[System]:
    """One system for the module: broker, relay, API; dashboards connect through the proxy."""
    tmp = tmp_path_factory.mktemp("dashboard")
    sys_ = make_system(
        tmp,
        ORDERBUS_BROKER_WS_PORT=str(proxy.target[1]),
        ORDERBUS_PUBLIC_MQTT_WS_URL=f"ws://127.0.0.1:{proxy.port}/mqtt",
    )
    sys_.password = (tmp / "var" / "admin-password").read_text().strip()
    sys_.base = sys_.api_url.removesuffix("/api/v1")
    try:
        yield sys_
    finally:
        sys_.close()


@pytest.fixture
def page(browser, system: System):
    """A fresh browser context on a desktop-sized window; fails on page errors or CSP violations."""
    with watched_context(browser, viewport={"width": 1366, "height": 900}) as context:
        yield context.new_page()


@contextmanager
def watched_context(browser, **options: Any) -> Iterator[Any]:
    """A browser context (``options`` as Playwright's ``new_context`` takes them) whose pages
    fail the test on a page error or a CSP violation; its console is printed on failure."""
    context = browser.new_context(**options)
    problems: list[str] = []
    console: list[str] = []

    def watch(page) -> None:
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

        def on_console(msg) -> None:
            console.append(f"{msg.type}: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text:
                problems.append(f"console: {msg.text}")

        page.on("console", on_console)

    context.on("page", watch)
    yield context
    print("browser console:", *console, sep="\n  ")  # shown when the test fails
    context.close()
    assert not problems, "\n".join(problems)


# What a test module binds: ``browser, proxy, system, page = FIXTURES``.
FIXTURES = (browser, proxy, system, page)
