"""The courier app (/courier/) in a real browser: Debian's chromium, a phone's viewport.

The real system runs as separate processes (broker with its WebSocket listener and
password/ACL files, API under granian, relay). The app logs in over REST as an agent,
gets the device's broker login with its token, and follows agents/<id>/assigned over
MQTT-over-WebSocket with a persistent session. Screenshots of the worklist and an order's
page go to docs/images/ (the README shows them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import ROOT
from harness.system import System, make_system
from order_service.lifecycle import FAILURE_REASONS
from tests.courier_page import (
    IMAGES,
    PHONE,
    WAIT,
    banner_text,
    card,
    gone,
    history,
    label,
    log_in,
    logged_in_with,
    network_off,
    network_on,
    online,
    statuses,
    tap_action,
)

# The dashboard's fixture: Debian's chromium, skipped (or failed in CI) when it is missing.
from tests.dashboard_fixtures import browser, watched_context  # noqa: F401, E402, F811

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _system(tmp: Path, broker: str) -> Iterator[System]:
    sys_ = make_system(tmp, broker)
    sys_.base = sys_.api_url.removesuffix("/api/v1")
    try:
        yield sys_
    finally:
        sys_.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system on the embedded broker, for the module."""
    yield from _system(tmp_path_factory.mktemp("courier"), "amqtt")


@pytest.fixture(scope="module")
def mosquitto_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system on Mosquitto (the production broker), for what depends on the broker."""
    yield from _system(tmp_path_factory.mktemp("courier-mosquitto"), "mosquitto")


@pytest.fixture
def context(browser):  # noqa: F811
    """A phone-sized browser context; the test fails on page errors or CSP violations."""
    if not (ROOT / "clients/courier/node_modules/mqtt/dist/mqtt.esm.js").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the courier app's tests need its mqtt.js: make courier-deps")
        pytest.skip("the courier app's tests need its mqtt.js: make courier-deps")
    phone = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    with watched_context(browser, **phone) as ctx:
        yield ctx


def test_served_installable_with_a_strict_content_security_policy(system: System) -> None:
    """/courier/ carries the dashboard's CSP; the manifest and the service worker are served
    with their types; node_modules is not."""
    import json
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{system.base}/courier/") as response:
        csp = response.headers["Content-Security-Policy"]
        html = response.read().decode()
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in html and "style=" not in html and 'rel="manifest"' in html
    with urllib.request.urlopen(f"{system.base}/courier/manifest.webmanifest") as response:
        assert response.headers["Content-Type"].startswith("application/manifest+json")
        manifest = json.loads(response.read())
    assert manifest["start_url"] == "/courier/" and manifest["display"] == "standalone"
    for path in ("/courier/sw.js", "/courier/vendor/mqtt.esm.js"):
        with urllib.request.urlopen(system.base + path) as response:
            assert response.headers["Content-Type"].startswith("text/javascript")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{system.base}/courier/node_modules/mqtt/package.json")
    assert refused.value.code == 404


def test_a_shift_live_assignment_offer_pickup_delivery(context, system: System) -> None:
    """The courier logs in; an assignment arrives live (highlighted, with a beep and a
    vibration); an offer shows its countdown and is accepted; picked up and delivered are
    applied on the server once each and the order moves to today's history."""
    agent = system.make_agent()
    page = context.new_page()
    log_in(page, system, agent)
    assert page.is_visible("#orders-empty")

    order = system.ready_order()
    started = time.monotonic()
    system.assign(order["id"], agent["id"])
    row = card(page, order["id"], "ready")
    print(f"assignment on the phone {(time.monotonic() - started) * 1000:.0f} ms after its PUT returned")
    assert "fresh" in row.get_attribute("class")
    page.wait_for_function("() => Number(document.documentElement.dataset.beeps || 0) >= 1", timeout=WAIT)

    offered = system.ready_order("preparing")
    system.admin.request(
        "POST", f"/orders/{offered['id']}/offer", {"agent_ids": [agent["id"]], "expires_in_seconds": 300}
    )
    countdown = f'#offers li[data-id="{offered["id"]}"] .countdown'
    first = int(page.wait_for_selector(countdown, timeout=WAIT).inner_text().removesuffix(" s"))
    assert 0 < first <= 300
    page.wait_for_function(
        "([sel, first]) => parseInt(document.querySelector(sel).textContent) < first",
        arg=[countdown, first],
        timeout=WAIT,
    )  # the countdown runs
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "courier-worklist.png"))
    page.click(f'#offers li[data-id="{offered["id"]}"] button.accept')
    card(page, offered["id"], "preparing")
    page.wait_for_selector("#offers-section", state="hidden", timeout=WAIT)

    page.click(f'#orders li[data-id="{order["id"]}"]')
    assert page.inner_text("#detail-customer") == "Ada"
    assert page.get_attribute("#detail-call", "href") == "tel:+15550100"
    assert "1%20Main%20St" in page.get_attribute("#detail-navigate", "href")
    assert "2 × Tea" in page.inner_text("#detail-items")
    assert "6.00" in page.inner_text("#detail-amount")
    assert page.query_selector_all("#detail-actions button") and [
        b.get_attribute("data-action") for b in page.query_selector_all("#detail-actions button")
    ] == ["picked_up"]
    page.screenshot(path=str(IMAGES / "courier-order.png"))

    tap_action(page, order["id"], "picked_up")
    page.wait_for_selector('#detail-view[data-status="picked_up"] #detail-actions [data-action="delivered"]')
    page.click("#back")
    card(page, order["id"], "picked_up")
    page.wait_for_selector(f'#orders li[data-id="{order["id"]}"][data-pending="0"]', timeout=WAIT)

    tap_action(page, order["id"], "delivered")
    gone(page, order["id"])
    page.wait_for_selector(f'#history li[data-id="{order["id"]}"][data-status="delivered"]', timeout=WAIT)
    assert statuses(system, order["id"])[-2:] == ["picked_up", "delivered"]
    assert statuses(system, order["id"]).count("delivered") == 1
    assert "cancelled" not in banner_text(page)  # finished by the courier: no announcement


def test_a_failed_delivery_with_a_reason(context, system: System) -> None:
    """Failed offers the lifecycle's reasons; "other" needs a note; the server keeps reason and note."""
    page, _, (order,) = logged_in_with(context, system, 1)
    tap_action(page, order["id"], "picked_up")
    page.wait_for_selector('#detail-actions button[data-action="failed"]', timeout=WAIT)
    page.click('#detail-actions button[data-action="failed"]')
    shown = page.eval_on_selector_all("#fail-reasons input", "els => els.map(e => e.value)")
    assert tuple(shown) == FAILURE_REASONS
    page.check('#fail-reasons input[value="other"]')
    page.click("#fail-submit")
    assert "note" in page.inner_text("#fail-error")  # refused on the phone, nothing sent
    page.fill("#fail-note", "gate locked, no answer")
    page.click("#fail-submit")
    page.wait_for_selector(f'#history li[data-id="{order["id"]}"][data-status="failed"]', timeout=WAIT)
    stored = system.admin.request("GET", f"/orders/{order['id']}")
    assert stored["status"] == "failed"
    assert stored["failure"] == {"reason": "other", "note": "gate locked, no answer"}


def test_an_offer_declined_goes_without_an_announcement(context, system: System) -> None:
    """Decline turns the offer down on the server; the courier's own decline is not announced
    as an offer that ended (an offer withdrawn by the shop is: the positive control)."""
    page, agent, _ = logged_in_with(context, system, 1)
    declined, withdrawn = system.ready_order("confirmed"), system.ready_order("confirmed")
    for order in (declined, withdrawn):
        system.admin.request("POST", f"/orders/{order['id']}/offer", {"agent_ids": [agent["id"]]})
        page.wait_for_selector(f'#offers li[data-id="{order["id"]}"]', timeout=WAIT)
    page.click(f'#offers li[data-id="{declined["id"]}"] button.decline')
    page.wait_for_selector(f'#offers li[data-id="{declined["id"]}"]', state="detached", timeout=WAIT)
    assert system.admin.request("GET", f"/orders/{declined['id']}")["offer"] is None
    system.admin.request("DELETE", f"/orders/{withdrawn['id']}/agent")  # withdraws the offer
    page.wait_for_selector("#banners .banner.info", timeout=WAIT)
    shown = banner_text(page)
    assert label(withdrawn) in shown and label(declined) not in shown


def test_offline_taps_are_sent_in_order_and_a_conflict_is_shown(context, system: System) -> None:
    """Offline, two taps on two orders wait in IndexedDB (shown pending); an admin cancels one
    meanwhile. Back online, the other is applied exactly once, the cancelled one is shown as a
    conflict and announced, and the server holds no duplicate change."""
    page, _, (kept, cancelled) = logged_in_with(context, system, 2)

    network_off(context)
    page.wait_for_selector('#conn[data-state="offline"]', timeout=WAIT)
    tap_action(page, kept["id"], "picked_up")
    page.click("#back")
    tap_action(page, cancelled["id"], "picked_up")
    page.click("#back")
    card(page, kept["id"], "picked_up")  # shown as the courier's step, pending
    assert page.get_attribute(f'#orders li[data-id="{kept["id"]}"]', "data-pending") == "1"
    assert page.get_attribute(f'#orders li[data-id="{cancelled["id"]}"]', "data-pending") == "1"
    page.reload(wait_until="domcontentloaded")  # durable: still queued after a reload, offline
    context.set_offline(True)  # again: the reloaded page may have come without the emulation
    page.wait_for_selector('#conn[data-state="offline"]', timeout=WAIT)
    card(page, kept["id"], "picked_up")
    assert page.get_attribute(f'#orders li[data-id="{cancelled["id"]}"]', "data-pending") == "1"

    system.admin.request("PATCH", f"/orders/{cancelled['id']}/status", {"status": "cancelled"})
    assert system.admin.request("GET", f"/orders/{kept['id']}")["status"] == "ready"  # nothing sent yet

    started = time.monotonic()
    network_on(context)
    online(page)
    page.wait_for_selector(f'#orders li[data-id="{kept["id"]}"][data-pending="0"]', timeout=WAIT)
    print(f"queued action applied {(time.monotonic() - started) * 1000:.0f} ms after the network came back")
    page.wait_for_selector("#banners .banner.conflict", timeout=WAIT)
    assert "cancelled" in page.inner_text("#banners .banner.conflict")
    page.wait_for_selector("#banners .banner.cancelled", timeout=WAIT)  # announced, not just gone
    gone(page, cancelled["id"])
    assert system.admin.request("GET", f"/orders/{kept['id']}")["status"] == "picked_up"
    assert statuses(system, kept["id"]).count("picked_up") == 1
    assert statuses(system, cancelled["id"])[-1] == "cancelled"
    assert "picked_up" not in statuses(system, cancelled["id"])
    page.click("#banners .banner.conflict button")  # dismissed by the courier, and only then
    page.wait_for_selector("#banners .banner.conflict", state="detached", timeout=WAIT)
    queued = page.evaluate(
        """() => new Promise((ok) => { const r = indexedDB.open("orderbus-courier");
        r.onsuccess = () => { const g = r.result.transaction("actions").objectStore("actions").getAll();
        g.onsuccess = () => ok(g.result.length); }; })"""
    )
    assert queued == 0


def test_the_app_shell_opens_from_the_service_worker_with_no_network(context, system: System) -> None:
    """After one visit the service worker holds the shell: with the network off the app
    opens, shows the last worklist and says it is offline."""
    page, _, (order,) = logged_in_with(context, system, 1)
    page.wait_for_function(
        "async () => (await navigator.serviceWorker.ready).active?.state === 'activated'"
        " && (await caches.keys()).length > 0 && !!navigator.serviceWorker.controller",
        timeout=WAIT,
    )
    page.close()

    context.set_offline(True)
    again = context.new_page()
    again.goto(f"{system.base}/courier/")
    again.wait_for_selector('#conn[data-state="offline"]', timeout=WAIT)
    card(again, order["id"], "ready")  # the last worklist, from this phone's storage
    assert again.is_visible("#app-view")
    context.set_offline(False)
    online(again)  # and live again once the network is back


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"])
def test_an_assignment_made_while_the_app_was_closed_arrives_on_return(context, broker, request) -> None:
    """On both brokers: The device's session is persistent: assignments made while the app is closed are there
    (highlighted as new) when it opens again; a cancellation and a reassignment meanwhile are
    announced."""
    system = request.getfixturevalue("system" if broker == "amqtt" else "mosquitto_system")
    page, agent, (before, moved) = logged_in_with(context, system, 2)
    page.close()

    later = system.ready_order()
    system.assign(later["id"], agent["id"])
    system.admin.request("PATCH", f"/orders/{before['id']}/status", {"status": "cancelled"})
    system.assign(moved["id"], system.make_agent()["id"])

    page = context.new_page()
    page.goto(f"{system.base}/courier/")  # no login asked: the session is on the phone
    online(page)
    row = card(page, later["id"], "ready")
    assert "fresh" in row.get_attribute("class")
    page.wait_for_selector("#banners .banner.cancelled", timeout=WAIT)
    assert "cancelled" in banner_text(page)
    page.wait_for_selector("#banners .banner.warn", timeout=WAIT)
    assert "reassigned to another courier" in page.inner_text("#banners .banner.warn")
    gone(page, before["id"])
    gone(page, moved["id"])
    assert history(page) == {}  # a cancelled order is not the courier's finished work


def test_a_broker_login_replaced_elsewhere_is_replaced_once(context, system: System) -> None:
    """The device's stored broker login was replaced while the app was closed (a new one issued
    for the agent): the broker refuses it, the app asks for a new one and is live again."""
    page, agent, (order,) = logged_in_with(context, system, 1)
    key = f"orderbus.courier.mqtt.{agent['id']}"
    first = json.loads(page.evaluate(f"() => localStorage.getItem('{key}')"))["password"]
    page.close()
    system.admin.request("POST", f"/agents/{agent['id']}/mqtt-credentials")  # the stored one ends

    page = context.new_page()
    page.goto(f"{system.base}/courier/")
    online(page)
    assert json.loads(page.evaluate(f"() => localStorage.getItem('{key}')"))["password"] != first
    later = system.ready_order()
    system.assign(later["id"], agent["id"])  # live on the new login
    card(page, later["id"], "ready")


def test_a_second_tab_waits_instead_of_taking_the_connection(context, system: System) -> None:
    """Both tabs would connect with the device's one client id and take the connection from
    each other: the second waits (and says so) while the first stays online, and goes live
    when the first closes."""
    page, agent, _ = logged_in_with(context, system, 1)
    page.evaluate(
        """() => { window.drops = 0; const conn = document.getElementById("conn");
        new MutationObserver(() => { if (conn.dataset.state !== "online") window.drops += 1; })
          .observe(conn, { attributes: true, attributeFilter: ["data-state"] }); }"""
    )
    second = context.new_page()
    second.goto(f"{system.base}/courier/")
    second.wait_for_selector('#banners .banner[data-id="other-tab"]', timeout=WAIT)
    order = system.ready_order()
    system.assign(order["id"], agent["id"])  # positive control: the first tab is live
    card(page, order["id"], "ready")
    assert page.evaluate("() => window.drops") == 0
    page.close()
    online(second)
    second.wait_for_selector('#banners .banner[data-id="other-tab"]', state="detached", timeout=WAIT)
