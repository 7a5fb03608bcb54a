"""The admin dashboard (/admin/) in a real browser: Debian's chromium driven by Playwright.

The real system runs as separate processes (broker with its WebSocket listener and
password/ACL files, API under granian, relay); the page logs in over REST and
subscribes to the broker with the read-only dashboard login that login hands back.
The browser reaches the broker through a TCP proxy the tests can cut, to drop the
page's network on demand. Screenshots go to test-artifacts/dashboard/ (gitignored).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clients.rest import Api
from harness.system import System
from tests import dashboard_fixtures
from tests.dashboard_page import (
    LIVE,
    agent_device,
    assert_fits_the_width,
    converges,
    count,
    database_state,
    label,
    open_dashboard,
    place,
    presence,
    rows,
    screenshot,
    unlabelled_controls,
    wait_row,
)
from tests.helpers import wait_until
from tests.mqtt_fixtures import Subscriber

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
# The fixtures, bound here so pytest finds them (one system for this module).
browser, proxy, system, page = dashboard_fixtures.FIXTURES


def test_served_with_a_strict_content_security_policy(system: System) -> None:
    """/admin/ and its files carry a CSP without 'unsafe-inline'; node_modules is not served."""
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{system.base}/admin/") as response:
        csp = response.headers["Content-Security-Policy"]
        html = response.read().decode()
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in html and "style=" not in html
    with urllib.request.urlopen(f"{system.base}/admin/vendor/mqtt.esm.js") as response:
        assert response.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{system.base}/admin/node_modules/mqtt/package.json")
    assert refused.value.code == 404


def test_login_and_wrong_password(page, system: System) -> None:
    """A wrong password shows the server's refusal; the right one opens the live board."""
    page.goto(f"{system.base}/admin/")
    page.fill("#login-username", "admin")
    page.fill("#login-password", "not-the-password")
    page.click("#login-submit")
    error = page.wait_for_selector("#login-error:not([hidden])")
    assert "wrong username or password" in error.inner_text()
    assert page.is_hidden("#app-view")
    page.fill("#login-password", system.password)
    page.click("#login-submit")
    page.wait_for_selector('#conn[data-state="connected"]', timeout=15000)
    assert page.inner_text("#conn") == "Live"
    assert page.is_hidden("#login-view")


def test_new_order_appears_at_the_top_within_a_second(page, system: System) -> None:
    """An order posted over REST shows on the open page at the top, in Placed, counted, with a toast."""
    place(system, "Earlier")
    open_dashboard(page, system)
    page.click('#tabs [data-tab="placed"]')
    before_placed, before_all = count(page, "placed"), count(page, "all")
    toasts_before = page.locator("#toasts .toast").count()

    started = time.monotonic()
    order = place(system, "Grace Hopper")
    elapsed = wait_row(page, order["id"], "placed", started)

    first_visible = page.eval_on_selector(
        "#orders", "ol => [...ol.children].find(li => !li.hidden).dataset.id"
    )
    assert first_visible == order["id"]
    assert count(page, "placed") == before_placed + 1 and count(page, "all") == before_all + 1
    assert "fresh" in page.get_attribute(f'#orders li[data-id="{order["id"]}"]', "class")
    page.wait_for_function(
        "([n, id]) => document.querySelectorAll('#toasts .toast').length > n"
        " && document.querySelector('#toasts').innerText.includes(id)",
        arg=[toasts_before, label(order)],
        timeout=1000,
    )
    assert f"New order {label(order)} from Grace Hopper" in page.inner_text("#toasts")
    assert int(page.get_attribute("html", "data-chimes") or 0) >= 1  # the new-order sound played
    page.click('#tabs [data-tab="confirmed"]')
    assert page.is_hidden(f'#orders li[data-id="{order["id"]}"]')

    # Mute is remembered: after a reload (the session survives it) the switch is still off.
    page.click("#mute")
    page.reload()
    page.wait_for_selector('#conn[data-state="connected"]', timeout=15000)
    assert page.get_attribute("#mute", "aria-pressed") == "true"
    assert page.inner_text("#mute") == "Sound off"
    print(f"new order on the page {elapsed * 1000:.0f} ms after its POST returned")


STATE_DROPS = """() => {
  window.orderbusDrops = 0;
  const conn = document.getElementById("conn");
  new MutationObserver(() => { if (conn.dataset.state !== "connected") window.orderbusDrops += 1; })
    .observe(conn, { attributes: true, attributeFilter: ["data-state"] });
}"""


@pytest.mark.security
def test_a_duplicated_tab_gets_its_own_broker_login_and_both_stay_live(browser, system: System) -> None:
    """Two pages with one token (a duplicated tab copies the session): the broker uses a login's
    username as its client id, so sharing one login they took each other's connection every
    second. Each page asks for a login of its own: both stay connected and both get live orders."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        first = context.new_page()
        open_dashboard(first, system)
        saved = first.evaluate("() => sessionStorage.getItem('orderbus.admin.session')")
        second = context.new_page()
        second.add_init_script(f"sessionStorage.setItem('orderbus.admin.session', {json.dumps(saved)})")
        second.goto(f"{system.base}/admin/")
        second.wait_for_selector('#conn[data-state="connected"]', timeout=15000)
        logins = [
            json.loads(p.evaluate("() => sessionStorage.getItem('orderbus.admin.session')"))["mqtt"][
                "username"
            ]
            for p in (first, second)
        ]
        assert logins[0] != logins[1]
        for p in (first, second):
            p.evaluate(STATE_DROPS)
        started = time.monotonic()
        order = place(system, "Two Tabs")  # positive control: both pages are live
        for p in (first, second):
            wait_row(p, order["id"], "placed", started)
        time.sleep(3)  # a shared login flips both pages to reconnecting within about a second
        assert [p.evaluate("() => window.orderbusDrops") for p in (first, second)] == [0, 0]
    finally:
        context.close()


def test_a_page_whose_broker_login_was_dropped_gets_a_new_one(page, system: System) -> None:
    """A token keeps its 16 newest page logins: a page whose login went (16 pages opened after
    it) is disconnected and refused, asks for a new login with its token and is live again."""
    open_dashboard(page, system)
    session = json.loads(page.evaluate("() => sessionStorage.getItem('orderbus.admin.session')"))
    other_pages = Api(system.api_url)
    other_pages.token = session["token"]
    for _ in range(16):
        other_pages.request("POST", "/auth/mqtt-credentials")
    page.wait_for_function(
        "old => JSON.parse(sessionStorage.getItem('orderbus.admin.session')).mqtt.username !== old",
        arg=session["mqtt"]["username"],
        timeout=15000,
    )
    page.wait_for_selector('#conn[data-state="connected"]', timeout=15000)
    started = time.monotonic()
    order = place(system, "After Relogin")
    wait_row(page, order["id"], "placed", started)
    assert page.is_visible("#app-view")  # the session itself went on


def test_status_changes_by_another_admin_and_by_an_agent(page, system: System) -> None:
    """Changes made elsewhere (another admin; the agent: picked_up, delivered) show within a second."""
    other = Api(system.api_url)
    system.admin.request(
        "POST", "/users", {"username": "admin2", "password": "admin2-password", "role": "admin"}
    )
    other.login("admin2", "admin2-password")
    agent = system.make_agent()
    rider = Api(system.api_url)
    rider.login(agent["username"], agent["password"])
    order = place(system, "Linus")
    open_dashboard(page, system)
    wait_row(page, order["id"], "placed", time.monotonic(), within=5)

    for actor, status in ((other, "confirmed"), (other, "preparing"), (other, "ready")):
        started = time.monotonic()
        actor.request("PATCH", f"/orders/{order['id']}/status", {"status": status})
        wait_row(page, order["id"], status, started)
    system.assign(order["id"], agent["id"])
    delivered_before = count(page, "delivered")
    for status in ("picked_up", "delivered"):
        started = time.monotonic()
        rider.request("PATCH", f"/orders/{order['id']}/status", {"status": status})
        wait_row(page, order["id"], status, started)
    page.wait_for_function(
        "n => +document.querySelector('#tabs [data-tab=\"delivered\"] .count').textContent === n",
        arg=delivered_before + 1,
        timeout=1000,
    )


def test_assign_from_the_page_reaches_the_agent(page, system: System) -> None:
    """Assigning from the page publishes the agent's worklist (its own login receives it) and shows it;
    a refused action shows the server's reason."""
    agent = system.make_agent()
    order = system.ready_order("confirmed")
    device = Subscriber(
        "127.0.0.1",
        int(system.env["ORDERBUS_BROKER_PORT"]),
        (f"agents/{agent['id']}/assigned",),
        login=agent["mqtt"],
    ).start()
    try:
        open_dashboard(page, system)
        page.click(f'#orders li[data-id="{order["id"]}"] button')
        page.wait_for_selector(f'#detail-title:has-text("{label(order)}")')
        assert page.is_visible('#action-buttons [data-move="preparing"]')
        assert page.query_selector('#action-buttons [data-move="picked_up"]') is None  # the agent's move
        page.select_option("#assign-agent", agent["id"])
        page.click("#assign-btn")
        worklist = device.wait_for(
            lambda r: r.json is not None and any(o["id"] == order["id"] for o in r.json["orders"]), timeout=15
        )
        assert worklist.json["agent_id"] == agent["id"]
        page.wait_for_selector(f'#orders li[data-id="{order["id"]}"] .row-agent:has-text("{agent["name"]}")')
        page.wait_for_selector(f'#detail-agent:has-text("{agent["name"]}")')
        page.wait_for_selector(f'#timeline:has-text("{agent["name"]}")')
        screenshot(page, "detail.png")

        # A second agent, deactivated while the page's request is on its way: the server refuses.
        other = system.make_agent()
        page.reload()
        page.wait_for_selector('#conn[data-state="connected"]', timeout=15000)
        page.click(f'#orders li[data-id="{order["id"]}"] button')
        page.select_option("#assign-agent", other["id"])

        def deactivate_first(route) -> None:
            system.admin.request("PATCH", f"/agents/{other['id']}", {"active": False})
            route.continue_()

        page.route(f"**/orders/{order['id']}/agent", deactivate_first)
        # Every text the error line shows: the deactivation also reloads the page's agent list, which
        # may say "no longer active" before or after the server's refusal arrives (both are true).
        page.evaluate(
            """() => { window.shownErrors = [];
              const error = document.getElementById('action-error');
              new MutationObserver(() => window.shownErrors.push(error.textContent))
                .observe(error, {childList: true, characterData: true, subtree: true}); }"""
        )
        with page.expect_response(lambda r: r.url.endswith(f"/orders/{order['id']}/agent")) as refused:
            page.click("#assign-btn")
        assert refused.value.status == 422 and "deactivated" in refused.value.json()["detail"]
        page.wait_for_function("window.shownErrors.some((text) => text.includes('deactivated'))")
        assert page.is_visible("#action-error")
        assert system.admin.request("GET", f"/orders/{order['id']}")["agent_id"] == agent["id"]
    finally:
        device.stop()


def test_a_chosen_agent_deactivated_meanwhile_is_not_swapped_for_another(page, system: System) -> None:
    """The agent chosen in the detail pane is deactivated while the page is open: when the page's
    agent list next reloads, the choice is cleared and said so, never silently replaced by
    another agent; Assign then asks for a choice and sends nothing."""
    first, chosen = system.make_agent(), system.make_agent()
    order = system.ready_order("confirmed")
    system.admin.request("PUT", f"/orders/{order['id']}/agent", {"agent_id": first["id"]})
    open_dashboard(page, system)
    page.click(f'#orders li[data-id="{order["id"]}"] button')
    page.wait_for_selector(f'#detail-agent:has-text("{first["name"]}")')
    page.select_option("#assign-agent", chosen["id"])
    system.admin.request("PATCH", f"/agents/{chosen['id']}", {"active": False})
    # A newcomer's presence: the page does not know that agent, so it reloads the list.
    newcomer = system.make_agent()
    device = agent_device(system, newcomer)
    try:
        presence(device, newcomer, "online")
        page.wait_for_selector(f'#agents li[data-agent="{newcomer["id"]}"]', timeout=LIVE * 1000)
        error = page.wait_for_selector("#action-error:not([hidden])")
        assert f"{chosen['name']} is no longer active" in error.inner_text()
        assert page.input_value("#assign-agent") != chosen["id"]
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/agent") else None)
        page.evaluate("document.getElementById('assign-agent').value = ''")  # nothing chosen
        page.click("#assign-btn")
        page.wait_for_selector('#action-error:has-text("Choose an agent first")')
        assert not sent
        # Positive control: a choice that is still active is sent and applied.
        page.select_option("#assign-agent", newcomer["id"])
        page.click("#assign-btn")
        page.wait_for_selector(f'#detail-agent:has-text("{newcomer["name"]}")', timeout=LIVE * 1000)
        assert sent
    finally:
        device.disconnect()
        device.loop_stop()


def test_broker_restart_converges_without_duplicates(page, system: System) -> None:
    """Broker restarted under an open page: it shows reconnecting, then exactly the database's state."""
    orders = [place(system, f"Before {i}") for i in range(3)]
    open_dashboard(page, system)
    system.stop("broker")
    page.wait_for_selector('#conn[data-state="reconnecting"]', timeout=10000)
    added = place(system, "While down")  # accepted: it waits in the outbox
    system.admin.request("PATCH", f"/orders/{orders[0]['id']}/status", {"status": "rejected"})
    system.start("broker")
    page.wait_for_selector('#conn[data-state="connected"]', timeout=20000)
    converges(page, system)
    assert dict(rows(page))[added["id"]] == "placed"
    assert dict(rows(page))[orders[0]["id"]] == "rejected"


def test_changes_made_while_the_network_was_cut_show_after_reconnect(page, system: System, proxy) -> None:
    """The page's WebSocket cut: every change made meanwhile is on the page once it reconnects."""
    agent = system.make_agent()
    ready = system.ready_order("ready")
    placed = place(system, "Before the cut")
    open_dashboard(page, system)
    toasts_before = page.locator("#toasts .toast").count()
    proxy.cut()
    try:
        page.wait_for_selector('#conn[data-state="reconnecting"]', timeout=10000)
        added = place(system, "During the cut")
        system.admin.request("PATCH", f"/orders/{placed['id']}/status", {"status": "confirmed"})
        system.assign(ready["id"], agent["id"])
        # Positive controls: the changes are on the broker (a connected page would have them),
        # and the page has tried to reconnect since.
        wait_until(lambda: system.admin.request("GET", "/readyz")["outbox_pending"] == 0, 15, "published")
        tries = proxy.refused
        wait_until(lambda: proxy.refused > tries, 15, "the page trying to reconnect")
        assert added["id"] not in dict(rows(page))
    finally:
        proxy.restore()
    page.wait_for_selector('#conn[data-state="connected"]', timeout=20000)
    shown = dict(rows(page))
    assert shown[added["id"]] == "placed" and shown[placed["id"]] == "confirmed"
    page.wait_for_selector(
        f'#orders li[data-id="{ready["id"]}"] .row-agent:has-text("{agent["name"]}")', timeout=1000
    )
    converges(page, system)
    # Synced, not news: no toast for what happened while away, but the new row is highlighted.
    assert page.locator("#toasts .toast").count() <= toasts_before
    assert "fresh" in page.get_attribute(f'#orders li[data-id="{added["id"]}"]', "class")
    screenshot(page, "board.png")


def test_agent_presence_and_dispatch_state_are_shown(page, system: System) -> None:
    """An agent's device going online and offline shows in the agent list within a second; an offer
    and its agents show on the order's row and in its detail."""
    agent = system.make_agent()
    offered = system.ready_order("preparing")
    open_dashboard(page, system)
    item = f'#agents li[data-agent="{agent["id"]}"]'
    page.wait_for_selector(item)
    device = agent_device(system, agent)
    try:
        started = time.monotonic()
        presence(device, agent, "online")
        page.wait_for_selector(f'{item}[data-presence="online"]', timeout=LIVE * 1000)
        elapsed = time.monotonic() - started
        assert elapsed < LIVE, f"presence shown after {elapsed:.2f} s"

        system.admin.request("POST", f"/orders/{offered['id']}/offer", {"agent_ids": [agent["id"]]})
        row = f'#orders li[data-id="{offered["id"]}"]'
        flag = f'{row} .flag-offer:has-text("Offered to {agent["name"]}")'
        page.wait_for_selector(flag, timeout=LIVE * 1000)
        page.click(f"{row} button")
        page.wait_for_selector(f'#detail-dispatch .flag-offer:has-text("{agent["name"]}")')
        assert "online" in page.inner_text("#assign-agent")
        screenshot(page, "board-detail.png")

        presence(device, agent, "offline")
        page.wait_for_selector(f'{item}[data-presence="offline"]', timeout=LIVE * 1000)
        # The service withdraws an offline agent's offers (order.offer_expired): the flag goes.
        page.wait_for_selector(f"{row} .flag-offer", state="detached", timeout=5000)
        page.wait_for_selector('#toasts:has-text("offline")', timeout=1000)
    finally:
        device.loop_stop()
        device.disconnect()


def test_keyboard_tablet_layout_and_logout(browser, system: System) -> None:
    """On a tablet in portrait the page fits the width; rows open with the keyboard; search
    filters; logging out returns to the login form and ends the dashboard's broker login."""
    context = browser.new_context(viewport={"width": 820, "height": 1180}, has_touch=True)
    page = context.new_page()
    try:
        orders = [place(system, name) for name in ("Keyboard Kim", "Tablet Tom")]
        open_dashboard(page, system)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        assert unlabelled_controls(page) == []  # every control has a name a screen reader can say
        page.keyboard.press("/")
        page.keyboard.type("Tablet")
        page.wait_for_function(
            "id => [...document.querySelectorAll('#orders li')].filter(li => !li.hidden)"
            ".map(li => li.dataset.id).join() === id",
            arg=orders[1]["id"],
        )
        page.fill("#search", "")
        page.focus(f'#orders li[data-id="{orders[1]["id"]}"] button')
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        page.wait_for_selector(f'#detail-title:has-text("{label(orders[0])}")')
        page.wait_for_selector('#timeline:has-text("created by")')
        screenshot(page, "tablet.png")
        page.keyboard.press("Escape")  # the detail is a sheet over the board here: it closes
        page.wait_for_selector("#detail", state="hidden")
        assert page.evaluate("() => document.activeElement.closest('li').dataset.id") == orders[0]["id"]
        login = json.loads(page.evaluate("() => sessionStorage.getItem('orderbus.admin.session')"))["mqtt"]
        page.click("#logout")
        page.wait_for_selector("#login-view:not([hidden])")
        assert page.evaluate("() => sessionStorage.getItem('orderbus.admin.session')") is None
        refused = Subscriber("127.0.0.1", int(system.env["ORDERBUS_BROKER_PORT"]), ("orders/#",), login=login)
        with pytest.raises(AssertionError, match="subscription not acknowledged"):
            refused.start(timeout=3)
        refused.stop()

        # Logging in again in the same tab: one board, and actions use the new token only.
        page.fill("#login-password", system.password)
        page.click("#login-submit")
        page.wait_for_selector('#conn[data-state="connected"]', timeout=15000)
        converges(page, system)
        page.click(f'#orders li[data-id="{orders[0]["id"]}"] button')
        page.click('#action-buttons [data-move="confirmed"]')
        wait_row(page, orders[0]["id"], "confirmed", time.monotonic(), within=5)
        assert page.is_visible("#app-view") and page.is_hidden("#action-error")
    finally:
        context.close()


def test_eta_failed_delivery_and_late_alert_are_shown(page, system: System) -> None:
    """Dispatch state on the board: the ETA after pickup, a failed delivery (its own tab, the reason,
    a toast) and a late-order alert (flag and toast)."""
    agent = system.make_agent()
    rider = Api(system.api_url)
    rider.login(agent["username"], agent["password"])
    order = system.ready_order("ready")
    system.assign(order["id"], agent["id"])
    open_dashboard(page, system)
    row = f'#orders li[data-id="{order["id"]}"]'
    rider.request("PATCH", f"/orders/{order['id']}/status", {"status": "picked_up"})
    page.wait_for_selector(f'{row} .flag-eta:has-text("ETA")', timeout=LIVE * 1000)
    failed_before = count(page, "failed")
    started = time.monotonic()
    failure = {"status": "failed", "failure": {"reason": "customer_absent"}}
    rider.request("PATCH", f"/orders/{order['id']}/status", failure)
    wait_row(page, order["id"], "failed", started)
    assert "Delivery failed: customer absent" in page.inner_text(f"{row} .row-flags")
    assert count(page, "failed") == failed_before + 1
    page.wait_for_selector(f'#toasts:has-text("Delivery of {label(order)} failed")', timeout=1000)

    late = place(system, "Slow Sue")
    settings = "/settings/dispatch"
    system.admin.request("PATCH", settings, {"delay_unconfirmed_seconds": 1})
    try:
        late_row = f'#orders li[data-id="{late["id"]}"]'
        page.wait_for_selector(f'{late_row} .flag-delay:has-text("not confirmed in time")', timeout=10000)
        page.wait_for_selector(f'#toasts:has-text("{label(late)} is late")', timeout=1000)
    finally:
        system.admin.request("PATCH", settings, {"delay_unconfirmed_seconds": None})


def test_two_thousand_orders_load_and_render(page, system: System, tmp_path: Path) -> None:
    """2,000 orders: the page shows every one, once, with the right counts; prints load and render time."""
    from order_service.orders.service import NewOrder, create_order
    from order_service.store.db import db, init_db
    from order_service.store.models import User

    have = len(database_state(system))
    init_db(
        system.env.get("ORDERBUS_DATABASE_URL")
        or f"sqlite:///{Path(system.env['ORDERBUS_DATA_DIR']) / 'orderbus.db'}"
    )
    with db.connection_context():
        admin = User.get(User.username == "admin")
        with db.atomic():
            for i in range(2000 - have):
                create_order(
                    admin,
                    NewOrder(
                        customer={
                            "name": f"Bulk {i}",
                            "phone": f"+1 555 {i:04d}",
                            "address": f"{i} Long Road",
                        },
                        items=[{"name": "Tea", "quantity": 1 + i % 3, "unit_price_cents": 300}],
                    ),
                )
    db.close()
    # The relay publishes them all (retained) before the page opens.
    wait_until(lambda: system.admin.request("GET", "/readyz")["outbox_pending"] == 0, 60, "published")
    started = time.monotonic()
    open_dashboard(page, system)
    page.wait_for_function("() => document.querySelectorAll('#orders li').length >= 2000", timeout=30000)
    load = time.monotonic() - started
    converges(page, system)
    assert count(page, "all") == 2000
    measures = page.evaluate(
        "() => performance.getEntriesByType('measure').map(m => [m.name, m.duration, m.detail])"
    )
    resync = [m for m in measures if m[0] == "orderbus:resync"]
    renders = [m[1] for m in measures if m[0] == "orderbus:render"]
    # One live change with 2,000 rows on the board: a single row is touched.
    started_one = time.monotonic()
    one = place(system, "One more")
    wait_row(page, one["id"], "placed", started_one)
    after = page.evaluate(
        "() => performance.getEntriesByType('measure')"
        ".filter(m => m.name === 'orderbus:render').map(m => m.duration)"
    )
    report = {
        "login_to_2000_rows_s": round(load, 2),
        "resync_apply_and_render_ms": [round(m[1], 1) for m in resync],
        "largest_render_batch_ms": round(max(renders), 1),
        "live_update_render_ms": round(after[-1], 2),
    }
    print("dashboard with 2,000 orders:", json.dumps(report))
    screenshot(page, "board-2000.png")


def test_rows_show_the_number_address_and_age_and_never_a_version(browser, system: System) -> None:
    """Operators see an order as #number (the short id when it has none) with its delivery address
    and its age; the age moves on every minute without a reload; the word "version" is nowhere on
    the page (it stays internal, for If-Match). Desktop and phone alike."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    try:
        page.clock.install()  # the page's own clock, moved forward below: no waiting a real minute
        order = place(system, "Ada Age")
        other = place(system, "Bob Other")
        open_dashboard(page, system)
        row = f'#orders li[data-id="{order["id"]}"]'
        page.wait_for_selector(row)
        assert page.inner_text(f"{row} .row-number") == label(order)
        if "number" in order:
            assert label(order) == f"#{order['number']}"
        assert page.inner_text(f"{row} .row-address") == "1 Main St"
        assert page.inner_text(f"{row} .row-age") == "just now"
        page.clock.fast_forward("12:00")
        page.wait_for_selector(f'{row} .row-age:text-is("12 min")', timeout=10000)
        page.click(f"{row} button")
        page.wait_for_selector(f'#detail-title:text-is("Order {label(order)}")')
        assert page.inner_text("#detail-address") == "1 Main St"
        assert page.inner_text("#detail-id") == order["id"]  # the API's key, for support
        assert page.inner_text("#detail-age") == "12 min ago"
        page.clock.fast_forward("01:00:00")
        page.wait_for_selector('#detail-age:text-is("1 h 12 min ago")', timeout=10000)
        page.wait_for_selector(f'{row} .row-age:text-is("1 h 12 min")', timeout=10000)
        assert "version" not in page.inner_text("body").lower()
        # The search finds an order by what the page calls it.
        page.fill("#search", label(order))
        page.wait_for_selector(f'#orders li[data-id="{other["id"]}"]', state="hidden")
        assert page.is_visible(row)
        page.fill("#search", "")

        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_selector(f'#orders li[data-id="{other["id"]}"]', state="visible")
        assert_fits_the_width(page)
        assert page.is_visible(f"{row} .row-address") and page.is_visible(f"{row} .row-age")
        screenshot(page, "phone-board.png")
    finally:
        context.close()
