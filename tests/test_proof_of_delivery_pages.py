"""Proof of delivery in real browsers (issue 19, item 5), on the real system (broker,
granian, relay as processes): the customer's tracking page shows the delivery code while
the order is on its way; the courier (a phone) first types a wrong code (refused, the order
stays picked up), then the right one read from that page, attaches a photo taken "with the
camera" (a small PNG), and the admin then sees the photo in the order's timeline.
Screenshots of each page go to docs/images/ (README, docs/clients.md)."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator

import pytest

from harness.processes import ROOT
from harness.system import System, make_system
from tests.courier_page import PHONE, WAIT, card, gone, log_in, tap_action
from tests.dashboard_fixtures import (
    browser,  # noqa: F401, F811
    watched_context,
)
from tests.dashboard_page import open_dashboard
from tests.shop_page import IMAGES, customer, seed_menu, wait_status
from tests.shop_page import log_in as shop_log_in
from tests.test_proof_of_delivery import png

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("pod")
    sys_ = make_system(tmp, "amqtt")
    sys_.base = sys_.api_url.removesuffix("/api/v1")
    sys_.password = (tmp / "var" / "admin-password").read_text().strip()
    try:
        yield sys_
    finally:
        sys_.close()


def metrics(system: System) -> str:
    request = urllib.request.Request(
        f"{system.api_url}/metrics", headers={"Authorization": f"Bearer {system.admin.token}"}
    )
    with urllib.request.urlopen(request) as response:
        return response.read().decode()


@pytest.fixture
def phones(browser):  # noqa: F811
    """Two phones (the customer's, the courier's); fails on page errors or CSP violations."""
    if not (ROOT / "clients/courier/node_modules/mqtt/dist/mqtt.esm.js").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the courier app's tests need its mqtt.js: make courier-deps")
        pytest.skip("the courier app's tests need its mqtt.js: make courier-deps")
    options = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    with watched_context(browser, **options) as shop, watched_context(browser, **options) as courier:
        yield shop.new_page(), courier.new_page()


def ready_for(system: System, item: str) -> tuple[dict, dict, dict]:
    """With a code required: a new customer's order of ``item`` (the customer's own view,
    with its code), ready and assigned to a new agent: (order, customer's login, agent)."""
    system.admin.request("PATCH", "/settings/dispatch", {"pod_code": "required", "pod_photo": "optional"})
    menu = seed_menu(system)
    api, creds = customer(system)
    line = {"item_id": menu[item]["id"], "quantity": 1, "option_ids": []}
    who = {"name": "Grace Hopper", "phone": "+1 555 0142", "address": "12 Harbour Road"}
    order = api.request("POST", "/orders", {"customer": who, "items": [line]})
    agent = system.make_agent()
    for step in ("confirmed", "preparing", "ready"):
        system.admin.request("PATCH", f"/orders/{order['id']}/status", {"status": step})
    system.assign(order["id"], agent["id"])
    return order, creds, agent


def test_code_and_photo_from_the_door_to_the_dashboard(system: System, phones, browser) -> None:  # noqa: F811
    shop_page, courier_page = phones
    admin = system.admin
    order, creds, agent = ready_for(system, "diavola")
    code = order["delivery_code"]

    shop_log_in(shop_page, system, creds)
    shop_page.goto(f"{system.base}/shop/#/orders/{order['id']}")
    wait_status(shop_page, "ready")
    assert shop_page.is_hidden("#track-code")  # not before it is on its way

    log_in(courier_page, system, agent)
    card(courier_page, order["id"], "ready")
    tap_action(courier_page, order["id"], "picked_up")
    courier_page.wait_for_selector(
        '#detail-view[data-status="picked_up"] #detail-actions [data-action="delivered"]'
    )

    wait_status(shop_page, "picked_up")
    shown = shop_page.wait_for_selector(
        "#track-code:not([hidden]) #track-code-digits", timeout=WAIT
    ).inner_text()
    assert shown == code
    IMAGES.mkdir(parents=True, exist_ok=True)
    shop_page.screenshot(path=str(IMAGES / "shop-delivery-code.png"))

    # A wrong code: refused on the phone with a clear message; the order stays picked up.
    courier_page.wait_for_selector(
        '#detail-view[data-status="picked_up"] #detail-actions [data-action="delivered"]'
    )
    courier_page.wait_for_function(
        "() => !document.querySelector('#detail-pending') || document.querySelector('#detail-pending').hidden"
    )
    courier_page.click('#detail-actions button[data-action="delivered"]')
    courier_page.wait_for_selector("#proof-form:not([hidden])", timeout=WAIT)
    assert courier_page.get_attribute("#proof-photo", "capture") == "environment"
    assert courier_page.get_attribute("#proof-photo", "accept") == "image/*"
    courier_page.fill("#proof-code", f"{(int(code) + 1) % 10000:04d}")
    courier_page.click("#proof-submit")
    error = courier_page.wait_for_selector("#proof-error:not([hidden])", timeout=WAIT).inner_text()
    assert "Wrong code" in error, error
    assert admin.request("GET", f"/orders/{order['id']}")["status"] == "picked_up"
    assert "orderbus_pod_code_refused_total 1.0" in metrics(system)

    # The right code, read from the customer's page, and a photo "from the camera".
    image = png(160, 120)
    courier_page.fill("#proof-code", shown)
    courier_page.set_input_files(
        "#proof-photo", files=[{"name": "door.png", "mimeType": "image/png", "buffer": image}]
    )
    courier_page.screenshot(path=str(IMAGES / "courier-proof.png"))
    started = time.monotonic()
    courier_page.click("#proof-submit")
    gone(courier_page, order["id"])
    print(
        f"delivered with code and photo: card gone {(time.monotonic() - started) * 1000:.0f} ms after the tap"
    )
    stored = admin.request("GET", f"/orders/{order['id']}")
    assert stored["status"] == "delivered"
    assert stored["proof"]["code_checked"] is True and stored["proof"]["photo"] is True
    wait_status(shop_page, "delivered")
    assert shop_page.is_hidden("#track-code")

    # The admin sees the photo and the proof in the order's timeline.
    with watched_context(browser, viewport={"width": 1280, "height": 900}) as desk:
        page = desk.new_page()
        open_dashboard(page, system)
        page.wait_for_selector(f'#orders li[data-id="{order["id"]}"]', state="attached", timeout=WAIT)
        page.click(f'#orders li[data-id="{order["id"]}"] button')
        facts = page.wait_for_selector("#timeline .proof-facts", timeout=WAIT).inner_text()
        assert "code checked" in facts and "photo" in facts
        page.wait_for_function(
            "() => { const i = document.getElementById('detail-photo'); "
            "return i && i.complete && i.naturalWidth > 0; }",
            timeout=WAIT,
        )
        size = page.eval_on_selector("#detail-photo", "i => [i.naturalWidth, i.naturalHeight]")
        assert size == [160, 120]
        src = page.get_attribute("#detail-photo", "src") or ""
        assert src.startswith("blob:")  # fetched with the admin's token, not a public URL
        page.eval_on_selector("#timeline .proof", "e => e.scrollIntoView({block: 'center'})")
        page.screenshot(path=str(IMAGES / "admin-proof.png"))


def test_offline_a_code_waits_in_the_queue_a_photo_needs_the_network(system: System, browser) -> None:  # noqa: F811
    """Offline at the door: with a photo the form says it needs a connection and sends
    nothing; with the code alone the delivery is queued and applied, code checked, once
    the network is back."""
    if not (ROOT / "clients/courier/node_modules/mqtt/dist/mqtt.esm.js").exists():
        pytest.skip("the courier app's tests need its mqtt.js: make courier-deps")
    admin = system.admin
    order, _creds, agent = ready_for(system, "lemonade")
    options = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    with watched_context(browser, **options) as phone:
        page = phone.new_page()
        log_in(page, system, agent)
        card(page, order["id"], "ready")
        tap_action(page, order["id"], "picked_up")
        page.wait_for_selector(
            '#detail-view[data-status="picked_up"] #detail-actions [data-action="delivered"]'
        )
        page.wait_for_selector("#detail-pending", state="hidden", timeout=WAIT)
        phone.set_offline(True)
        page.wait_for_selector('#conn[data-state="offline"]', timeout=WAIT)
        page.click('#detail-actions button[data-action="delivered"]')
        page.fill("#proof-code", order["delivery_code"])
        page.set_input_files(
            "#proof-photo", files=[{"name": "door.png", "mimeType": "image/png", "buffer": png(4, 4)}]
        )
        page.click("#proof-submit")
        error = page.wait_for_selector("#proof-error:not([hidden])", timeout=WAIT).inner_text()
        assert "needs a connection" in error, error
        page.set_input_files("#proof-photo", files=[])
        page.click("#proof-submit")
        card(page, order["id"], "delivered")  # shown at once, waiting in the queue
        assert admin.request("GET", f"/orders/{order['id']}")["status"] == "picked_up"
        phone.set_offline(False)
        gone(page, order["id"])
    stored = admin.request("GET", f"/orders/{order['id']}")
    assert stored["status"] == "delivered"
    assert stored["proof"] == {**stored["proof"], "code_checked": True, "photo": False}
