"""The courier app shares its position (issue 19): Debian's chromium at a phone's size with
the geolocation permission, the real processes (broker, API, relay). As the phone moves
(``context.set_geolocation``) the agent's retained ``agents/<id>/location`` follows, the
order's ETA changes once it is picked up, and logging out stops sharing and clears it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urlsplit

import pytest

from harness.system import System
from tests.courier_page import IMAGES, PHONE, WAIT, card, log_in, tap_action
from tests.dashboard_fixtures import browser  # noqa: F401, F811
from tests.helpers import wait_until
from tests.mqtt_fixtures import Subscriber
from tests.test_courier_app import _system

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

START = {"latitude": 52.520, "longitude": 13.40, "accuracy": 10}
NEAR = {"latitude": 52.540, "longitude": 13.40, "accuracy": 10}
DOOR = {"latitude": 52.549, "longitude": 13.40, "accuracy": 10}
DESTINATION = {"lat": 52.55, "lon": 13.40}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from _system(tmp_path_factory.mktemp("location"), "amqtt")


@pytest.fixture
def phone(browser):  # noqa: F811
    """A phone-sized context that may read the position; fails on page errors."""
    ctx = browser.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        permissions=["geolocation"],
        geolocation=START,
    )
    problems: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: problems.append(str(exc))))
    yield ctx
    ctx.close()
    assert not problems, problems


def _eta(system: System, order_id: str) -> datetime:
    order = system.admin.request("GET", f"/orders/{order_id}")
    return datetime.fromisoformat(order["eta"].replace("Z", "+00:00"))


def test_the_app_shares_its_position_and_the_eta_follows(phone, system: System) -> None:
    system.admin.request(
        "PATCH", "/settings/dispatch", {"origin_lat": 52.50, "origin_lon": 13.40, "travel_speed_kmh": 20}
    )
    agent = system.make_agent()
    order = system.admin.request(
        "POST",
        "/orders",
        {
            "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
            "items": [{"name": "Tea", "quantity": 2, "unit_price_cents": 300}],
            "delivery_location": DESTINATION,
        },
    )
    for step in ("confirmed", "preparing", "ready"):
        system.admin.request("PATCH", f"/orders/{order['id']}/status", {"status": step})
    system.assign(order["id"], agent["id"])
    login = system.admin.request("POST", "/auth/mqtt-credentials")
    login = login.get("mqtt", login)
    broker = urlsplit(system.mqtt_url)
    topic = f"agents/{agent['id']}/location"
    board = Subscriber(broker.hostname, broker.port, (topic,), login=login).start()
    try:
        page = phone.new_page()
        log_in(page, system, agent)
        page.wait_for_selector('#geo[data-state="sharing"]', timeout=WAIT)
        first = board.wait_for(lambda m: m.payload and m.json["lat"] == START["latitude"], timeout=20).json
        assert first["order_ids"] == [] and first["stale"] is False and first["acc"] == 10

        card(page, order["id"], "ready")
        tap_action(page, order["id"], "picked_up")
        page.wait_for_selector('#detail-view[data-status="picked_up"]', timeout=WAIT)
        wait_until(lambda: system.admin.request("GET", f"/orders/{order['id']}")["status"] == "picked_up")
        at_pickup = _eta(system, order["id"])

        times = []
        for where in (NEAR, DOOR):
            started = time.monotonic()
            phone.set_geolocation(where)
            moved = board.wait_for(lambda m, w=where: m.payload and m.json["lat"] == w["latitude"], 30).json
            times.append((time.monotonic() - started) * 1000)
            assert moved["order_ids"] == [order["id"]]
        print("retained location followed the phone " + ", ".join(f"{t:.0f} ms" for t in times) + " later")
        wait_until(lambda: _eta(system, order["id"]) < at_pickup, timeout=20, what="the ETA moved forward")
        near_door = _eta(system, order["id"])
        assert (near_door - datetime.now(near_door.tzinfo)).total_seconds() < 120  # 100 m at 20 km/h
        trail = system.admin.request("GET", f"/orders/{order['id']}/trail")["points"]
        assert [p["lat"] for p in trail] == [NEAR["latitude"], DOOR["latitude"]]
        page.click("#back")
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "courier-sharing-location.png"))

        page.click("#logout")  # off shift: sharing stops, the position is cleared
        board.wait_for(lambda m: m.topic == topic and m.payload == b"", timeout=20)
        phone.set_geolocation(START)
        board.settle(quiet=4)  # longer than the app's minimum gap: a report would have come
        assert board.seen[-1].payload == b""
    finally:
        board.stop()
