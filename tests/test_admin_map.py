"""The dispatcher's map on the admin dashboard (issue 19 item 3), in a real browser.

The real system runs (broker, API, relay); the tile server is a URL of another origin
that answers 404, so no tile ever loads and the map must still show its markers (the
CSP must allow that origin: a violation fails the test). Positions reach the page as
the service publishes them: retained ``agents/<id>/location`` messages of the contract,
sent here with a broker login of the service's kind (the only kind the ACL lets write
that topic; the relay's own login cannot be shared, its username is its client id).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.rest import Api
from harness.processes import ROOT, free_port
from harness.system import System, make_system
from tests import dashboard_fixtures
from tests.courier_page import IMAGES
from tests.dashboard_fixtures import watched_context
from tests.dashboard_page import agent_device, assert_fits_the_width, open_dashboard, presence
from tests.helpers import wait_until
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
browser = dashboard_fixtures.browser

# Every test's markers are in Paris, kilometres apart: the map fits itself to all of them
# (a module's tests share one system), and pins stay apart enough to click.
EIFFEL = {"lat": 48.8584, "lon": 2.2945}
LOUVRE = {"lat": 48.8606, "lon": 2.3376}
FEED_USER = "orderbus-map-test-feed"
# Issues a login of the service's kind in the system's database and writes the broker files.
ISSUE_FEED_LOGIN = f"""
from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.store.db import init_db
settings = load_settings()
init_db(settings.database_url, settings.sqlite_synchronous)
print(broker_logins._store({FEED_USER!r}, broker_logins.SERVICE))
broker_logins.sync_files(settings)
"""


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("map")
    proxy = TcpProxy("127.0.0.1", free_port()).start()
    api_port = free_port()
    # localhost is another origin than the page's 127.0.0.1: the CSP must name it.
    tiles = f"http://localhost:{api_port}/no-tiles-here/{{z}}/{{x}}/{{y}}.png"
    sys_ = make_system(
        tmp,
        ORDERBUS_API_PORT=str(api_port),
        ORDERBUS_BROKER_WS_PORT=str(proxy.target[1]),
        ORDERBUS_PUBLIC_MQTT_WS_URL=f"ws://127.0.0.1:{proxy.port}/mqtt",
        ORDERBUS_MAP_TILE_URL=tiles,
        ORDERBUS_LOCATION_MIN_INTERVAL_SECONDS="0",  # every report of the tests is published
    )
    sys_.password = (tmp / "var" / "admin-password").read_text().strip()
    sys_.base = sys_.api_url.removesuffix("/api/v1")
    sys_.tiles = tiles
    try:
        yield sys_
    finally:
        sys_.close()
        proxy.stop()


@pytest.fixture(scope="module")
def feed(system: System):
    """A paho client publishing as the service would (retained, QoS 1) on agents/<id>/location."""
    import paho.mqtt.client as mqtt

    issued = subprocess.run(
        [sys.executable, "-c", ISSUE_FEED_LOGIN],
        env=system.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    secret = issued.stdout.strip().splitlines()[0]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=FEED_USER)
    client.username_pw_set(FEED_USER, secret)
    accepted: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: accepted.append(rc.value)
    port = int(system.env["ORDERBUS_BROKER_PORT"])
    # The broker reads the files again after a change: retry until the login is known.
    deadline = time.monotonic() + 15
    while not (accepted and accepted[-1] == 0) and time.monotonic() < deadline:
        accepted.clear()
        client.connect("127.0.0.1", port)
        client.loop_start()
        wait_until(lambda: accepted, timeout=5)
        if accepted[-1] != 0:
            client.loop_stop()
            client.disconnect()
            time.sleep(0.3)
    assert accepted and accepted[-1] == 0, f"the feed login was refused: {accepted}"
    yield client
    client.loop_stop()
    client.disconnect()


def publish(feed, agent_id: str, lat, lon, *, stale: bool = False, order_ids=(), age: float = 0, tst=None):
    """One contract-shaped agent.location message (retained, QoS 1); ``lat`` None: cleared."""
    if tst is None:
        tst = int(time.time() - age) // 10 * 10  # on a 10 s grid: two calls with the same age agree
    body = {
        "schema": 1,
        "event": "agent.location",
        "agent_id": agent_id,
        "lat": lat,
        "lon": lon,
        "acc": 12,
        "tst": tst,
        "batt": 80,
        "received_at": datetime.fromtimestamp(tst, UTC).isoformat().replace("+00:00", "Z"),
        "stale": stale,
        "order_ids": list(order_ids),
    }
    raw = json.dumps(body) if lat is not None else ""
    feed.publish(f"agents/{agent_id}/location", raw, qos=1, retain=True).wait_for_publish(5)


def courier(page, agent_id: str) -> str:
    return f'#map .courier-marker[data-agent="{agent_id}"]'


def apart(page, *selectors: str) -> None:
    """Wait until the elements do not overlap (the map has fitted itself to its markers)."""
    page.wait_for_function(
        """(sels) => {
          const boxes = sels.map((s) => document.querySelector(s)?.getBoundingClientRect());
          if (boxes.some((b) => !b || !b.width)) return false;
          return boxes.every((a, i) => boxes.every((b, j) => i === j || a.right <= b.left
            || b.right <= a.left || a.bottom <= b.top || b.bottom <= a.top));
        }""",
        arg=list(selectors),
        timeout=10000,
    )


def place_at(system: System, where: dict, name: str = "Ada") -> dict:
    return system.admin.request(
        "POST",
        "/orders",
        {
            "customer": {"name": name, "phone": "+1 555 0100", "address": "5 Avenue Anatole France"},
            "items": [{"name": "Crêpe", "quantity": 1, "unit_price_cents": 650}],
            "delivery_location": where,
        },
    )


@pytest.fixture
def page(browser, system: System):
    with watched_context(browser, viewport={"width": 1366, "height": 900}) as context:
        yield context.new_page()


def test_config_names_the_tile_server_and_the_csp_allows_it(system: System) -> None:
    """/admin/config.json gives the tile URL and attribution; the CSP's img-src names its origin
    (and nothing else new); Leaflet is served from the app's vendor files."""
    with urllib.request.urlopen(f"{system.base}/admin/config.json") as response:
        config = json.load(response)
        csp = response.headers["Content-Security-Policy"]
    assert config["map"]["tile_url"] == system.tiles
    assert "OpenStreetMap" in config["map"]["attribution"]
    origin = system.tiles.split("/no-tiles-here")[0]
    assert f"img-src 'self' data: {origin}" in csp and "unsafe-inline" not in csp
    for file, kind in (("leaflet.esm.js", "text/javascript"), ("leaflet.css", "text/css")):
        with urllib.request.urlopen(f"{system.base}/admin/vendor/{file}") as response:
            assert response.headers["Content-Type"].startswith(kind)
    # The other apps keep the plain policy: no tile origin there.
    with urllib.request.urlopen(f"{system.base}/courier/") as response:
        assert origin not in response.headers["Content-Security-Policy"]


def test_courier_marker_appears_moves_live_goes_stale_and_leaves(page, system: System, feed) -> None:
    """A courier's marker shows its name, state, active orders and age on a map without tiles;
    it moves when a new position is published, looks stale when marked stale, and goes when
    the retained position is cleared. A position out of range never reaches the map."""
    agent = system.make_agent()
    device = agent_device(system, agent)
    presence(device, agent, "online")
    open_dashboard(page, system)
    page.wait_for_selector('#map[data-tiles="failing"]', timeout=15000)  # every tile 404s
    started = time.monotonic()
    publish(feed, agent["id"], **EIFFEL, age=230)
    marker = page.wait_for_selector(f'{courier(page, agent["id"])}[data-state="online"]', timeout=10000)
    print(f"\nmarker on the map {time.monotonic() - started:.3f} s after the publish")
    assert agent["name"] in marker.inner_text() and "0 active" in marker.inner_text()
    assert "min ago" in marker.inner_text()  # last seen, from the report's tst
    assert marker.is_visible()
    assert "markers only" in page.inner_text("#map-status")
    assert page.query_selector("#map .leaflet-control-scale") is not None  # a scale without tiles
    page.wait_for_selector('#map[data-fits="1"]')  # fitted to the marker: the view now stays
    before = marker.bounding_box()

    started = time.monotonic()
    publish(feed, agent["id"], **LOUVRE, age=200)  # reported 200 s ago, heard now
    page.wait_for_selector(f'{courier(page, agent["id"])}[data-lat="{LOUVRE["lat"]}"]', timeout=10000)
    moved = time.monotonic() - started
    after = page.query_selector(courier(page, agent["id"])).bounding_box()
    assert after["x"] > before["x"] + 5, (before, after)  # east, on screen too
    assert page.get_attribute("#map", "data-fits") == "1"
    print(f"marker moved {moved * 1000:.0f} ms after the publish")

    publish(feed, agent["id"], 500.0, 2.3)  # out of range: ignored
    # The service marks the last position stale (same report, same tst) after its silence.
    publish(feed, agent["id"], LOUVRE["lat"], LOUVRE["lon"], stale=True, age=200)
    stale = page.wait_for_selector(f'{courier(page, agent["id"])}[data-state="stale"]', timeout=10000)
    assert stale.get_attribute("data-lat") == str(LOUVRE["lat"])  # the bad one never moved it
    assert "stale" in stale.inner_text() and "3 min ago" in stale.inner_text()
    opacity = page.eval_on_selector(courier(page, agent["id"]), "e => getComputedStyle(e).opacity")
    assert float(opacity) < 1

    publish(feed, agent["id"], None, None)  # cleared: the courier went off shift
    page.wait_for_selector(courier(page, agent["id"]), state="detached", timeout=10000)
    device.loop_stop()
    device.disconnect()


def test_a_couriers_own_reports_move_its_marker(page, system: System) -> None:
    """End to end: the courier's device reports on agents/<id>/location/report, the service
    publishes the position, the marker appears and follows; a report out of range never moves it."""
    agent = system.make_agent()
    device = agent_device(system, agent)
    presence(device, agent, "online")
    open_dashboard(page, system)
    report = f"agents/{agent['id']}/location/report"
    now = int(time.time())
    try:
        started = time.monotonic()
        body = {"lat": 48.8400, "lon": 2.3700, "tst": now - 20, "acc": 8, "batt": 64}
        device.publish(report, json.dumps(body), qos=1).wait_for_publish(5)
        marker = page.wait_for_selector(f'{courier(page, agent["id"])}[data-lat="48.84"]', timeout=15000)
        print(f"\nreport to marker: {time.monotonic() - started:.3f} s")
        assert marker.get_attribute("data-state") == "online"
        assert agent["name"] in marker.inner_text()
        bad = {"lat": 95.0, "lon": 2.37, "tst": now - 15}
        device.publish(report, json.dumps(bad), qos=1).wait_for_publish(5)
        started = time.monotonic()
        owntracks = {
            "_type": "location",
            "lat": 48.8420,
            "lon": 2.3800,
            "tst": now - 10,
            "acc": 5,
            "batt": 60,
        }
        device.publish(report, json.dumps(owntracks), qos=1).wait_for_publish(5)
        page.wait_for_selector(f'{courier(page, agent["id"])}[data-lat="48.842"]', timeout=15000)
        print(f"report to moved marker: {time.monotonic() - started:.3f} s")
    finally:
        device.loop_stop()
        device.disconnect()


def test_order_pins_trail_and_selection_both_ways(page, system: System, feed) -> None:
    """Active orders with a delivery location have a pin; clicking it selects the order on the
    board; selecting on the board highlights the pin; a picked-up order's trail grows with its
    courier's positions; clicking the courier selects it and the order it carries."""
    first = place_at(system, EIFFEL, "Pin One")
    second = place_at(system, LOUVRE, "Pin Two")
    agent = system.make_agent()
    rider = Api(system.api_url)
    rider.login(agent["username"], agent["password"])
    carried = place_at(system, {"lat": 48.8650, "lon": 2.3210}, "Carried")
    for step in ("confirmed", "preparing", "ready"):
        system.admin.request("PATCH", f"/orders/{carried['id']}/status", {"status": step})
    system.assign(carried["id"], agent["id"])
    rider.request("PATCH", f"/orders/{carried['id']}/status", {"status": "picked_up"})
    base = int(time.time()) - 60
    publish(feed, agent["id"], 48.8570, 2.3000, order_ids=[carried["id"]], tst=base)
    open_dashboard(page, system)

    pin = f'#map .order-pin[data-order="{first["id"]}"]'
    page.wait_for_selector(pin, timeout=10000)
    page.wait_for_selector(f'#map .order-pin[data-order="{second["id"]}"]')
    apart(page, pin, f'#map .order-pin[data-order="{second["id"]}"]')
    page.click(pin)
    page.wait_for_selector(
        f'#orders li[data-id="{first["id"]}"] .row-main[aria-current="true"]', timeout=5000
    )
    assert "Pin One" in page.inner_text("#detail")
    assert page.get_attribute(pin, "class") and "selected" in page.get_attribute(pin, "class")

    page.click(f'#orders li[data-id="{second["id"]}"] .row-main')
    page.wait_for_selector(f'#map .order-pin.selected[data-order="{second["id"]}"]', timeout=5000)
    assert "selected" not in page.get_attribute(pin, "class")

    # The trail: no points from the service yet (or no endpoint): it starts at the courier
    # and grows with each published position.
    trail = f'#map path.trail[data-order="{carried["id"]}"]'
    page.wait_for_selector(trail, state="attached", timeout=10000)
    for step in range(1, 4):
        where = (48.8570 + step * 0.001, 2.3000 + step * 0.002)
        publish(feed, agent["id"], *where, order_ids=[carried["id"]], tst=base + step * 5)
    wait_until(lambda: int(page.get_attribute(trail, "data-points") or 0) >= 4, timeout=10)

    page.click(f"{courier(page, agent['id'])} .courier-dot")
    page.wait_for_selector(f'#agents li[data-agent="{agent["id"]}"][aria-current="true"]', timeout=5000)
    page.wait_for_selector(
        f'#orders li[data-id="{carried["id"]}"] .row-main[aria-current="true"]', timeout=5000
    )
    assert "1 active" in page.inner_text(courier(page, agent["id"]))
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "dashboard-map.png"))

    # Delivered: the pin and the trail go.
    rider.request("PATCH", f"/orders/{carried['id']}/status", {"status": "delivered"})
    page.wait_for_selector(trail, state="detached", timeout=10000)
    page.wait_for_selector(f'#map .order-pin[data-order="{carried["id"]}"]', state="detached", timeout=10000)


def test_phone_has_a_map_tab_whose_pins_open_the_order(browser, system: System, feed) -> None:
    """On a phone the map is its own page (#map) filling the width; a pin opens the order's detail."""
    order = place_at(system, {"lat": 48.8530, "lon": 2.3499}, "Phone Pin")  # apart from the other pins
    agent = system.make_agent()
    publish(feed, agent["id"], 48.8480, 2.3300)
    with watched_context(
        browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    ) as ctx:
        page = ctx.new_page()
        open_dashboard(page, system)
        assert page.is_hidden("#map")  # the board's page keeps the width for orders
        page.click('#views a[data-view="map"]')
        pin = f'#map .order-pin[data-order="{order["id"]}"]'
        page.wait_for_selector(pin, timeout=10000)
        page.wait_for_selector(courier(page, agent["id"]))
        page.wait_for_selector("#map[data-fits]")  # fitted once shown (not while hidden)
        box = page.query_selector("#map").bounding_box()
        assert box["width"] > 330 and box["height"] > 400, box
        assert_fits_the_width(page)
        Path(ROOT / "test-artifacts" / "dashboard").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ROOT / "test-artifacts" / "dashboard" / "map-phone.png"))
        page.tap(pin)
        page.wait_for_selector("#detail.open", timeout=5000)
        assert "Phone Pin" in page.inner_text("#detail")
        assert page.evaluate("location.hash") == "#orders"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
        ("https://{s}.tiles.example.com:8443/osm/{z}/{x}/{y}.png", "https://*.tiles.example.com:8443"),
        ("", ""),
    ],
)
def test_tile_setting_gives_the_csp_origin(url: str, origin: str) -> None:
    from order_service.config import load_settings

    assert load_settings({"map_tile_url": url}).map_tile_origin == origin


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)//{z}/{x}/{y}",
        "https://tile.example.com/{z}/{x}.png",  # no {y}
        "ftp://tile.example.com/{z}/{x}/{y}.png",
        "https://tile.example.com 'unsafe-inline'/{z}/{x}/{y}.png",  # would smuggle a CSP source
        "https:///{z}/{x}/{y}.png",
    ],
)
def test_a_bad_tile_setting_is_refused_at_start_naming_the_variable(url: str) -> None:
    from pydantic import ValidationError

    from order_service.config import load_settings

    with pytest.raises(ValidationError, match="ORDERBUS_MAP_TILE_URL"):
        load_settings({"map_tile_url": url})
