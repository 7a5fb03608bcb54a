"""Driving the admin dashboard from a test: log in, read the board, wait for rows, compare with the database.

Plain functions over a Playwright page and a :class:`harness.system.System`;
the fixtures are in tests/test_admin_dashboard.py.
"""

from __future__ import annotations

import json
import time

import pytest

from clients.rest import Api
from harness.processes import ROOT
from harness.system import System

SHOTS = ROOT / "test-artifacts" / "dashboard"
LIVE = 1.0  # seconds: a change made elsewhere is on the open page within this


def open_dashboard(page, system: System, password: str | None = None) -> None:
    page.goto(f"{system.base}/admin/")
    page.fill("#login-username", "admin")
    page.fill("#login-password", password or system.password)
    page.click("#login-submit")
    page.wait_for_selector('#conn[data-state="connected"]', timeout=15000)


def place(system: System, name: str = "Ada", api: Api | None = None) -> dict:
    return (api or system.admin).request(
        "POST",
        "/orders",
        {
            "customer": {"name": name, "phone": "+1 555 0100", "address": "1 Main St"},
            "items": [{"name": "Margherita", "quantity": 2, "unit_price_cents": 1299}],
            "notes": "ring twice",
        },
    )


def label(order: dict) -> str:
    """What the page calls an order: ``#<number>``, or the first 6 characters of its id after the prefix."""
    number = order.get("number")
    return f"#{number}" if isinstance(number, int) else order["id"].split("_", 1)[-1][:6]


def wait_row(page, order_id: str, status: str, since: float, within: float = LIVE) -> float:
    """Wait for the order's row to show ``status``; returns the seconds since ``since``."""
    page.wait_for_selector(f'#orders li[data-id="{order_id}"][data-status="{status}"]', state="attached")
    elapsed = time.monotonic() - since
    assert elapsed < within, f"{order_id} showed {status} after {elapsed:.2f} s (limit {within} s)"
    return elapsed


def rows(page) -> list[tuple[str, str]]:
    return [
        tuple(r)
        for r in page.eval_on_selector_all(
            "#orders li", "els => els.map(e => [e.dataset.id, e.dataset.status])"
        )
    ]


def count(page, tab: str) -> int:
    return int(page.inner_text(f'#tabs [data-tab="{tab}"] .count'))


def database_state(system: System) -> dict[str, str]:
    state, cursor = {}, None
    while True:
        page = system.admin.request("GET", f"/orders?limit=200{f'&cursor={cursor}' if cursor else ''}")
        state.update({o["id"]: o["status"] for o in page["orders"]})
        cursor = page["next_cursor"]
        if not cursor:
            return state


def converges(page, system: System, timeout: float = 15.0) -> None:
    """The page shows exactly the database's orders and statuses, each once."""
    deadline = time.monotonic() + timeout
    while True:
        shown, want = rows(page), database_state(system)
        ids = [i for i, _ in shown]
        if len(ids) == len(set(ids)) and dict(shown) == want:
            return
        if time.monotonic() > deadline:
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            diff = {k: (dict(shown).get(k), v) for k, v in want.items() if dict(shown).get(k) != v}
            pytest.fail(f"page did not converge: duplicates {dupes}, (page, database) differ: {diff}")
        time.sleep(0.2)


WIDER_THAN_THE_WINDOW = """() => {
  const clipped = (e) => { for (let a = e.parentElement; a; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== "visible") return true; } return false; };
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !clipped(e))
    .map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
    .slice(0, 8);
}"""


def assert_fits_the_width(page) -> None:
    """Nothing on the page sticks out to the right: no sideways scrolling on a phone."""
    wide = page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth")
    assert not wide, f"wider than the window: {page.evaluate(WIDER_THAN_THE_WINDOW)}"


def unlabelled_controls(page) -> list[str]:
    """Controls without a name a screen reader can say (no label, no aria-label, no text)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('input, select, textarea, button')]"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')"
        " && !e.textContent.trim()).map(e => e.id || e.outerHTML)"
    )


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def agent_device(system: System, agent: dict):
    """The agent's device, as far as presence goes: its own broker login, its id as client id."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=agent["id"])
    client.username_pw_set(agent["mqtt"]["username"], agent["mqtt"]["password"])
    client.connect("127.0.0.1", int(system.env["ORDERBUS_BROKER_PORT"]))
    client.loop_start()
    return client


def presence(client, agent: dict, state: str) -> None:
    from datetime import UTC, datetime

    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    body = json.dumps({"agent_id": agent["id"], "state": state, "at": at})
    client.publish(f"agents/{agent['id']}/presence", body, qos=1, retain=True).wait_for_publish(5)
