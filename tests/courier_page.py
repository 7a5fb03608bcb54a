"""Driving the courier app (/courier/) from a test: log in, read cards, wait for states.

Plain functions over a Playwright page and a :class:`harness.system.System`; the fixtures
are in tests/test_courier_app.py.
"""

from __future__ import annotations

from harness.processes import ROOT
from harness.system import System

PHONE = {"width": 390, "height": 844}
WAIT = 20000  # ms: generous, the tests run on two busy cores
IMAGES = ROOT / "docs" / "images"


def log_in(page, system: System, agent: dict) -> None:
    page.goto(f"{system.base}/courier/")
    page.fill("#login-username", agent["username"])
    page.fill("#login-password", agent["password"])
    page.click("#login-submit")
    online(page)


def logged_in_with(context, system: System, count: int) -> tuple[object, dict, list[dict]]:
    """A new agent with ``count`` ready orders assigned, and a page of the app logged in as it
    showing them all: (page, agent, orders)."""
    agent = system.make_agent()
    orders = [system.ready_order() for _ in range(count)]
    for order in orders:
        system.assign(order["id"], agent["id"])
    page = context.new_page()
    log_in(page, system, agent)
    for order in orders:
        card(page, order["id"], "ready")
    return page, agent, orders


def online(page) -> None:
    page.wait_for_selector('#conn[data-state="online"]', timeout=WAIT)


# The courier's order moves: what must not reach the server while the phone is offline.
ORDER_MOVES = "**/api/v1/orders/*/status"


def network_off(context) -> None:
    """The phone loses its network: Playwright's offline emulation (navigator.onLine false, the
    "offline" event) and, in case a page's requests escape it, its order moves refused at the
    network as well (in one CI run a move queued offline reached the server after a reload)."""
    context.route(ORDER_MOVES, lambda route: route.abort("internetdisconnected"))
    context.set_offline(True)


def network_on(context) -> None:
    context.unroute(ORDER_MOVES)
    context.set_offline(False)


def card(page, order_id: str, status: str | None = None):
    selector = f'#orders li[data-id="{order_id}"]' + (f'[data-status="{status}"]' if status else "")
    return page.wait_for_selector(selector, timeout=WAIT)


def gone(page, order_id: str) -> None:
    page.wait_for_selector(f'#orders li[data-id="{order_id}"]', state="detached", timeout=WAIT)


def tap_action(page, order_id: str, action: str) -> None:
    """Open the order's page and tap one of its action buttons."""
    if page.is_hidden("#detail-view") or page.get_attribute("#detail-view", "data-id") != order_id:
        if page.is_visible("#detail-view"):
            page.click("#back")
        page.click(f'#orders li[data-id="{order_id}"]')
    page.click(f'#detail-actions button[data-action="{action}"]')


def label(order: dict) -> str:
    """How the app names an order: its number of the day, else the end of its id."""
    return f"#{order['number']}" if isinstance(order.get("number"), int) else f"#{order['id'][-6:]}"


def banner_text(page) -> str:
    return page.inner_text("#banners")


def history(page) -> dict[str, str]:
    return dict(
        page.eval_on_selector_all("#history li", "els => els.map(e => [e.dataset.id, e.dataset.status])")
    )


def statuses(system: System, order_id: str) -> list[str]:
    """The statuses the order went through, from its history (one entry per change)."""
    rows = system.admin.request("GET", f"/orders/{order_id}/history")["history"]
    return [r["to_status"] for r in rows if r["to_status"] != r["from_status"]]
