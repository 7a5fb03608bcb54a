"""The customer's shop (/shop/) in a real browser: Debian's chromium, phone-sized, driven
by Playwright against the real system (broker with its WebSocket listener, API under
granian, relay, SQLite file). The menu is made over the admin's REST API; admins and
agents move orders over REST while the page follows them live over MQTT.

Screenshots of the menu and the tracking page go to docs/images/ (shop.png, shop-tracking.png).
"""

from __future__ import annotations

import json
import time

import pytest

from clients.rest import Api
from harness.system import System
from tests import dashboard_fixtures
from tests.dashboard_fixtures import watched_context
from tests.helpers import wait_until
from tests.shop_page import (
    IMAGES,
    LIVE_MS,
    add_to_cart,
    customer,
    customers_orders,
    fill_delivery,
    log_in,
    seed_menu,
    step_state,
    wait_status,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
# The dashboard's fixtures, bound here so pytest finds them (one system for this module, its
# broker's WebSocket behind a proxy); the page is a phone's (below).
browser, proxy, system = dashboard_fixtures.browser, dashboard_fixtures.proxy, dashboard_fixtures.system

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def menu(system: System) -> dict[str, dict]:
    """The module's menu, made once over the admin's REST API."""
    return seed_menu(system)


@pytest.fixture
def context(browser):
    """A phone: 390x844, touch, a location to share; fails on page errors or CSP violations."""
    with watched_context(
        browser,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        geolocation={"latitude": 51.50135, "longitude": -0.14189},
        permissions=["geolocation"],
    ) as ctx:
        yield ctx


@pytest.fixture
def page(context):
    return context.new_page()


def order_as_new_customer(page, system: System, item: dict) -> tuple[Api, str]:
    """A new customer logs in, orders one ``item`` and lands on its tracking page."""
    api, creds = customer(system)
    log_in(page, system, creds)
    add_to_cart(page, item)
    page.goto(f"{system.base}/shop/#/cart")
    fill_delivery(page)
    return api, place_from_cart(page)


def place_from_cart(page) -> str:
    """Place the cart's order from the cart page; the tracking page's order id."""
    page.click("#place")
    page.wait_for_selector("#view-track:not([hidden]) #track[data-id]", timeout=LIVE_MS)
    return page.get_attribute("#track", "data-id") or ""


def test_sign_up_order_and_follow_every_status_live(page, system: System, menu: dict) -> None:
    """A new customer signs up, orders from the menu (catalog prices before, the server's total
    after), and the tracking page walks placed → delivered with each step's time, the ETA and
    the courier's first name while on the way, as an admin and an agent move it: no reload."""
    log_in(page, system, {"username": "grace", "password": "grace-password-1"}, signup=True)
    page.goto(f"{system.base}/shop/#/")
    page.wait_for_selector(f'.item[data-item="{menu["margherita"]["id"]}"]')
    add_to_cart(page, menu["margherita"], options=("Extra mozzarella",), quantity=2)
    add_to_cart(page, menu["lemonade"])
    page.wait_for_selector("#cartbar:not([hidden])")
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "shop.png"))
    page.click("#cartbar")
    # The menu's prices: 2 × (8.99 + 1.50) + 3.50 = 24.48.
    page.wait_for_selector('#cart-total:has-text("24.48")')
    fill_delivery(page)
    page.click("#locate")
    page.wait_for_selector('#locate-status:has-text("Location added")')
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    order_id = place_from_cart(page)

    order = system.admin.request("GET", f"/orders/{order_id}")
    assert order["total_cents"] == 2448
    assert order["delivery_location"] == {"lat": 51.50135, "lon": -0.14189}
    assert [(i["name"], i["quantity"]) for i in order["items"]] == [("Margherita", 2), ("Lemonade", 1)]
    page.wait_for_selector(f'#track-title:has-text("#{order["number"]}")')
    page.wait_for_selector('#track-total:has-text("24.48")')
    assert step_state(page, "placed") == "current"
    assert page.is_visible("#cancel")

    rider_login = {"username": "sam", "password": "sam-rider-password"}
    agent = system.admin.request("POST", "/agents", {"name": "Sam Rivera", **rider_login})
    rider = Api(system.api_url)
    rider.login(**rider_login)
    page.wait_for_selector('#track-eta:has-text("Waiting for the restaurant")')
    shown_after: list[float] = []  # seconds from a move's answer to the page showing it
    for status in ("confirmed", "preparing", "ready"):
        system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": status})
        started = time.monotonic()
        wait_status(page, status)
        shown_after.append(time.monotonic() - started)
        assert step_state(page, status) == "current"
        assert page.inner_text(f'#steps li[data-step="{status}"] .step-time').strip()
        assert not page.is_visible("#cancel")
    system.assign(order_id, agent["id"])
    rider.request("PATCH", f"/orders/{order_id}/status", {"status": "picked_up"})
    started = time.monotonic()
    wait_status(page, "picked_up")
    shown_after.append(time.monotonic() - started)
    page.wait_for_selector('#track-courier:has-text("Sam is on the way")', timeout=LIVE_MS)
    page.wait_for_selector('#track-eta:has-text("Arriving around")')
    page.screenshot(path=str(IMAGES / "shop-tracking.png"))
    rider.request("PATCH", f"/orders/{order_id}/status", {"status": "delivered"})
    started = time.monotonic()
    wait_status(page, "delivered")
    shown_after.append(time.monotonic() - started)
    low, high = min(shown_after) * 1000, max(shown_after) * 1000
    print(f"tracking page: a move shown {low:.0f}-{high:.0f} ms after its answer")
    assert page.is_hidden("#track-courier")
    assert all(
        step_state(page, s) == "done" for s in ("placed", "confirmed", "ready", "picked_up", "delivered")
    )
    assert page.evaluate("window.__sameDocument") is True

    # The order history lists it with its number and status.
    page.click('a[href="#/orders"]')
    page.wait_for_selector(f'#order-list li[data-id="{order_id}"][data-status="delivered"]')
    assert f"#{order['number']}" in page.inner_text(f'#order-list li[data-id="{order_id}"]')


def test_an_item_marked_unavailable_shows_sold_out_live(page, system: System, menu: dict) -> None:
    """An admin flips an item's availability; the open shop shows it sold out (and back) by itself,
    in the menu and in the cart, where it stops the order from being placed."""
    _, creds = customer(system)
    log_in(page, system, creds)
    item = menu["diavola"]
    card = f'.item[data-item="{item["id"]}"]'
    page.wait_for_selector(f'{card}[data-available="true"]')  # the positive control
    add_to_cart(page, item)
    try:
        system.admin.request("PATCH", f"/catalog/items/{item['id']}", {"available": False})
        page.wait_for_selector(f'{card}[data-available="false"]', timeout=LIVE_MS)
        assert page.inner_text(f"{card} .add") == "Sold out"
        assert page.is_disabled(f"{card} .add")
        # Already in the cart: marked, and the order cannot be placed with it.
        page.click("#cartbar")
        fill_delivery(page)
        page.wait_for_selector(f'#cart-lines li.sold-out[data-item="{item["id"]}"]')
        assert page.is_disabled("#place") and page.inner_text("#place") == "Remove sold-out items"
        system.admin.request("PATCH", f"/catalog/items/{item['id']}", {"available": True})
        page.wait_for_selector(f'#cart-lines li[data-item="{item["id"]}"]:not(.sold-out)', timeout=LIVE_MS)
        assert page.is_enabled("#place")
        page.goto(f"{system.base}/shop/#/")
        page.wait_for_selector(f'{card}[data-available="true"]')
    finally:
        system.admin.request("PATCH", f"/catalog/items/{item['id']}", {"available": True})


def test_offline_and_back_the_page_catches_up_by_itself(page, context, system: System, menu: dict) -> None:
    """The network drops: the page says offline; a change made meanwhile shows once it is back,
    with the indicator live again, and no reload."""
    api, order_id = order_as_new_customer(page, system, menu["lemonade"])
    page.evaluate("window.__sameDocument = true")

    context.set_offline(True)
    page.wait_for_selector('#conn[data-state="offline"]', timeout=LIVE_MS)
    assert page.inner_text("#conn") == "Offline"
    system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "confirmed"})
    system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "preparing"})
    assert page.get_attribute("#track", "data-status") == "placed"  # not while offline
    context.set_offline(False)
    started = time.monotonic()
    wait_status(page, "preparing")
    page.wait_for_selector('#conn[data-state="online"]', timeout=LIVE_MS)
    back = (time.monotonic() - started) * 1000
    print(f"shop: current and live again {back:.0f} ms after the network returned")
    assert page.evaluate("window.__sameDocument") is True
    # Live again after the resync: the next change arrives over the broker.
    system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "ready"})
    wait_status(page, "ready")
    assert len(customers_orders(api)) == 1


def test_broker_cut_says_reconnecting_and_catches_up(page, system: System, proxy, menu: dict) -> None:
    """The broker unreachable while the browser has a network: the page says Reconnecting…
    (not Offline), keeps trying, and once the broker is back shows what changed meanwhile."""
    _, order_id = order_as_new_customer(page, system, menu["lemonade"])
    page.wait_for_selector('#conn[data-state="online"]', timeout=LIVE_MS)
    proxy.cut()
    try:
        page.wait_for_selector('#conn[data-state="reconnecting"]', timeout=LIVE_MS)
        system.admin.request("PATCH", f"/orders/{order_id}/status", {"status": "confirmed"})
        # Positive controls: the change is on the broker, and the page has tried again since.
        wait_until(lambda: system.admin.request("GET", "/readyz")["outbox_pending"] == 0, 15, "published")
        tries = proxy.refused
        wait_until(lambda: proxy.refused > tries, 15, "the page trying to reconnect")
        assert page.get_attribute("#track", "data-status") == "placed"
        assert page.inner_text("#conn") == "Reconnecting…"
    finally:
        proxy.restore()
    wait_status(page, "confirmed")
    page.wait_for_selector('#conn[data-state="online"]', timeout=LIVE_MS)


def test_double_tap_and_a_lost_answer_make_one_order(page, system: System, menu: dict) -> None:
    """Place order tapped twice, and the first answer lost on the way back (the server made the
    order): the page retries with the same Idempotency-Key and the customer has one order."""
    api, creds = customer(system)
    log_in(page, system, creds)
    add_to_cart(page, menu["margherita"])
    page.goto(f"{system.base}/shop/#/cart")
    fill_delivery(page)
    keys: list[str] = []
    statuses: list[tuple[int, str | None]] = []

    def lose_first_answer(route) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        response = route.fetch()  # the server handles it...
        statuses.append((response.status, response.headers.get("idempotent-replayed")))
        if len(keys) == 1:
            route.abort("connectionreset")  # ...and the page never hears back
        else:
            route.fulfill(response=response)

    page.route(
        "**/api/v1/orders",
        lambda route: lose_first_answer(route) if route.request.method == "POST" else route.continue_(),
    )
    page.dblclick("#place")
    page.evaluate("document.getElementById('checkout').requestSubmit()")  # a third, past the disabled button
    page.wait_for_selector("#view-track:not([hidden]) #track[data-id]", timeout=LIVE_MS)
    order_id = page.get_attribute("#track", "data-id")
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    assert statuses == [(201, None), (201, "true")], statuses  # the second: the first order, replayed
    orders = customers_orders(api)
    assert [o["id"] for o in orders] == [order_id]


def test_cancel_while_placed_and_ended_orders_say_why(page, system: System, menu: dict) -> None:
    """The customer cancels while placed (the button goes once confirmed); a failed delivery
    shows plainly with its reason."""
    api, order_id = order_as_new_customer(page, system, menu["lemonade"])
    page.click("#cancel")
    wait_status(page, "cancelled")
    page.wait_for_selector('#track-ended:has-text("cancelled by the customer")', timeout=LIVE_MS)
    assert page.is_hidden("#cancel")

    failed = api.request(
        "POST",
        "/orders",
        {
            "customer": {"name": "Grace", "phone": "+1 555 0142", "address": "12 Harbour Road"},
            "items": [{"item_id": menu["lemonade"]["id"], "quantity": 1, "option_ids": []}],
        },
    )
    agent = system.make_agent()
    rider = Api(system.api_url)
    rider.login(agent["username"], agent["password"])
    for status in ("confirmed", "preparing", "ready"):
        system.admin.request("PATCH", f"/orders/{failed['id']}/status", {"status": status})
    system.assign(failed["id"], agent["id"])
    rider.request("PATCH", f"/orders/{failed['id']}/status", {"status": "picked_up"})
    page.goto(f"{system.base}/shop/#/orders/{failed['id']}")
    wait_status(page, "picked_up")
    rider.request(
        "PATCH",
        f"/orders/{failed['id']}/status",
        {"status": "failed", "failure": {"reason": "customer_absent"}},
    )
    wait_status(page, "failed")
    assert "Delivery failed: nobody was there" in page.inner_text("#track-ended")
    assert order_id != failed["id"]


def test_an_expired_token_sends_the_customer_back_to_login(page, system: System) -> None:
    """A token the server no longer knows (expired, revoked) lands on the login form with a
    message, and logging in again brings the customer back to the page it was on."""
    _, creds = customer(system)
    page.goto(f"{system.base}/shop/")
    far = 4_000_000_000_000  # still "valid" by the page's own clock: only the server knows
    session = {"token": "not-a-token", "user": {"id": "usr_x", "role": "customer"}, "expires_at": far}
    page.evaluate("s => localStorage.setItem('orderbus.shop.session', s)", json.dumps(session))
    page.goto(f"{system.base}/shop/#/orders")
    page.reload()
    page.wait_for_selector('#view-login:not([hidden]) #login-error:has-text("log in again")', timeout=LIVE_MS)
    assert page.evaluate("localStorage.getItem('orderbus.shop.session')") is None
    page.fill("#l-username", creds["username"])
    page.fill("#l-password", creds["password"])
    page.click("#login-submit")
    page.wait_for_selector("#view-orders:not([hidden])", timeout=LIVE_MS)
    page.wait_for_selector('#conn[data-state="online"]', timeout=LIVE_MS)
