"""The agent's Textual screen, driven by Textual's pilot, on the real broker, relay and API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from clients.agent.device import AgentDevice
from clients.agent.state import StateDir
from clients.agent.tui import AgentApp
from clients.rest import Api

pytestmark = pytest.mark.e2e


async def _until(pilot, check, timeout: float = 10.0) -> float:
    """Seconds until ``check()`` holds (pumping the app), or an AssertionError."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        await pilot.pause(0.05)
    raise AssertionError("condition not met in time")


def test_tui_shows_a_new_assignment_with_badge_and_acts_on_a_key(live_system, tmp_path: Path):
    system = live_system
    rider = system.make_agent()
    device = AgentDevice(Api(system.api_url), StateDir(tmp_path / "state"), mqtt_url=system.mqtt_url)
    device.login(rider["username"], rider["password"])
    device.connect()
    order = system.ready_order("ready")

    async def scenario() -> None:
        app = AgentApp(device)
        async with app.run_test() as pilot:
            await _until(pilot, lambda: device.worklist.version >= 1)
            assert app.badge == 0
            sent = time.monotonic()
            system.assign(order["id"], rider["id"])
            await _until(pilot, lambda: app.query_one("DataTable").row_count == 1)
            assert time.monotonic() - sent < 1.0
            assert app.badge == 1 and "1 new" in app.title
            details = str(app.query_one("#details").render())
            assert "1 Main St" in details and "2 x Tea" in details and "ring twice" in details
            assert details.startswith(f"#{order['number']} · {order['id']}")  # the number people say

            await pilot.press("s")  # seen: the badge goes down
            assert app.badge == 0 and app.title == "Worklist"

            await pilot.press("p")  # picked up, over REST
            await _until(pilot, lambda: device.worklist.orders[order["id"]]["status"] == "picked_up")
            await pilot.press("d")
            await _until(pilot, lambda: not device.worklist.orders)
            assert "no assignments" in str(app.query_one("#details").render())

    try:
        asyncio.run(scenario())
    finally:
        device.stop()
    assert system.admin.request("GET", f"/orders/{order['id']}")["status"] == "delivered"


def test_tui_reports_a_failed_delivery_with_a_reason_and_announces_a_cancellation(
    live_system, tmp_path: Path
):
    """`f` asks why (a reason, a note): the order goes to failed with them. An order cancelled
    by the shop is announced in the notices, and the header shows the broker link."""
    system = live_system
    rider = system.make_agent()
    device = AgentDevice(Api(system.api_url), StateDir(tmp_path / "state"), mqtt_url=system.mqtt_url)
    device.login(rider["username"], rider["password"])
    device.connect()
    failing, cancelled = system.ready_order("ready"), system.ready_order("ready")
    for order in (failing, cancelled):
        system.assign(order["id"], rider["id"])

    async def scenario() -> None:
        app = AgentApp(device)
        async with app.run_test() as pilot:
            await _until(pilot, lambda: app.query_one("DataTable").row_count == 2)
            assert "online" in app.sub_title
            system.admin.request("PATCH", f"/orders/{cancelled['id']}/status", {"status": "cancelled"})
            await _until(pilot, lambda: "CANCELLED" in str(app.query_one("#notices").render()))
            assert cancelled["id"] in str(app.query_one("#notices").render())

            await pilot.press("p")  # the one order left is highlighted
            await _until(pilot, lambda: device.worklist.orders[failing["id"]]["status"] == "picked_up")
            await pilot.press("f")
            await pilot.press("down", "down", "enter")  # refused
            await pilot.press(*"nobody has that number", "enter")
            await _until(pilot, lambda: not device.worklist.orders)

    try:
        asyncio.run(scenario())
    finally:
        device.stop()
    stored = system.admin.request("GET", f"/orders/{failing['id']}")
    assert stored["status"] == "failed"
    assert stored["failure"] == {"reason": "refused", "note": "nobody has that number"}
