"""The dashboard's catalog editor and phone-order form in a real browser (Debian's chromium).

The real system runs as separate processes (broker, API under granian, relay); the page
edits the catalog and places orders over REST and hears the retained ``catalog`` topic over
MQTT-over-WebSocket, so a change made elsewhere shows on an open page without a reload.
Screenshots go to test-artifacts/dashboard/ (the README's are copied from there).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from harness.system import System
from tests import dashboard_fixtures
from tests.dashboard_page import (
    assert_fits_the_width,
    label,
    open_dashboard,
    screenshot,
    unlabelled_controls,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
# The fixtures, bound here so pytest finds them (one system for this module).
browser, proxy, system, page = dashboard_fixtures.FIXTURES


def catalog(system: System) -> dict:
    return system.admin.request("GET", "/catalog")


def find_item(system: System, name: str) -> dict | None:
    return next((i for c in catalog(system)["categories"] for i in c["items"] if i["name"] == name), None)


def make_menu(system: System, tag: str) -> dict:
    """A category with an item that has two options, and a sold-out item (over REST)."""
    category = system.admin.request(
        "POST", "/catalog/categories", {"name": f"Pizzas {tag}".strip(), "position": 0}
    )
    item = {"category_id": category["id"], "description": "tomato, mozzarella", "available": True}
    system.admin.request(
        "POST",
        "/catalog/items",
        {
            **item,
            "name": f"Margherita {tag}".strip(),
            "price_cents": 1250,
            "options": [
                {"name": "Large", "price_delta_cents": 300},
                {"name": "Extra cheese", "price_delta_cents": 150},
            ],
        },
    )
    system.admin.request(
        "POST",
        "/catalog/items",
        {**item, "name": f"Calzone {tag}".strip(), "price_cents": 1400, "available": False, "options": []},
    )
    return {
        "category": category,
        "pizza": find_item(system, f"Margherita {tag}".strip()),
        "gone": find_item(system, f"Calzone {tag}".strip()),
    }


def goto(page, view: str) -> None:
    page.click(f'#views a[data-view="{view}"]')
    page.wait_for_selector(f"#{view}-view:not([hidden])")


@contextmanager
def on_a_phone(browser, system: System, view: str) -> Iterator:
    """A dashboard on a phone (390x844, touch), logged in, on ``view``."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    try:
        p = context.new_page()
        open_dashboard(p, system)
        goto(p, view)
        yield p
    finally:
        context.close()


def fill_customer(page, name: str, phone: str, address: str) -> None:
    page.fill("#po-name", name)
    page.fill("#po-phone", phone)
    page.fill("#po-address", address)


def add_custom_line(page, name: str, price: str) -> None:
    page.fill("#po-custom-name", name)
    page.fill("#po-custom-price", price)
    page.click("#po-custom-add")


def orders_named(system: System, name: str) -> list[dict]:
    return system.admin.request("GET", f"/orders?limit=200&q={quote(name)}")["orders"]


# --- first in the module, while the catalog holds only its menu: the docs' pictures ------


def test_screenshots_for_the_docs(page, system: System) -> None:
    """A small shop's menu in the editor, and a phone order from it with a custom line, on a
    desktop and on a phone: the pictures in README.md and docs/clients.md come from here."""
    menu = make_menu(system, "")
    drinks = system.admin.request("POST", "/catalog/categories", {"name": "Drinks", "position": 1})
    for name, cents in (("Lemonade", 350), ("Sparkling water", 250)):
        body = {"category_id": drinks["id"], "name": name, "description": "", "price_cents": cents}
        system.admin.request("POST", "/catalog/items", {**body, "available": True, "options": []})
    open_dashboard(page, system)
    goto(page, "catalog")
    page.wait_for_selector('#catalog-list li[data-item]:has-text("Sparkling water")')
    screenshot(page, "docs-catalog.png")
    goto(page, "phone")
    fill_customer(page, "Grace Hopper", "+1 555 0100", "1 Main St, flat 2")
    page.fill("#po-notes", "ring twice")
    page.select_option("#po-category", menu["category"]["id"])
    page.select_option("#po-item", menu["pizza"]["id"])
    page.check(f'#po-options input[value="{menu["pizza"]["options"][1]["id"]}"]')
    page.fill("#po-quantity", "2")
    page.click("#po-add")
    add_custom_line(page, "Birthday candles", "1.20")
    assert "29.20" in page.inner_text("#po-total")  # (12.50 + 1.50) x 2 + 1.20
    assert unlabelled_controls(page) == []  # the editor's switches and rows, the form's lines too
    assert_fits_the_width(page)
    screenshot(page, "docs-phone-order.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("() => document.getElementById('po-lines').scrollIntoView({block: 'center'})")
    assert_fits_the_width(page)
    screenshot(page, "docs-phone-order-phone.png")


# --- the catalog editor ------------------------------------------------------------


def test_catalog_editor_creates_edits_prices_and_deletes(page, system: System) -> None:
    """Categories and items are created and edited from the page: a price typed as money is sent
    as cents, options with their price deltas; bad input is shown beside its field (a price that
    is not money never leaves the page; a blank name is refused by the server) and writes nothing;
    delete takes two clicks."""
    open_dashboard(page, system)
    goto(page, "catalog")
    before = len(catalog(system)["categories"])

    page.click("#category-new")
    page.click("#cf-save")  # no name: the server names the field
    page.wait_for_selector('#category-form [data-error-for="name"]:not([hidden])')
    assert len(catalog(system)["categories"]) == before
    page.fill("#cf-name", "Editor Pastas")
    page.click("#cf-save")
    page.wait_for_selector("#category-dialog", state="hidden")
    section = '#catalog-list section[data-category]:has(h3:text-is("Editor Pastas"))'
    page.wait_for_selector(section)

    page.click(f'{section} button[data-action="add-item"]')
    page.fill("#if-name", "Carbonara")
    page.fill("#if-description", "egg, pecorino, guanciale")
    page.fill("#if-price", "twelve")
    page.click("#if-option-add")
    page.fill('#if-options li[data-index="0"] [data-field="name"]', "Large")
    page.fill('#if-options li[data-index="0"] [data-field="price_delta_cents"]', "2.00")
    page.click("#if-option-add")
    page.fill('#if-options li[data-index="1"] [data-field="price_delta_cents"]', "-0,5")
    page.click("#if-save")
    error = page.wait_for_selector('#item-form [data-error-for="price_cents"]:not([hidden])')
    assert "12.50" in error.inner_text()
    assert page.get_attribute("#if-price", "aria-invalid") == "true"
    assert find_item(system, "Carbonara") is None  # nothing sent
    page.fill("#if-price", "11,90")
    page.click("#if-save")  # the second option has no name: the server names options.1.name
    error = page.wait_for_selector(
        '#if-options li[data-index="1"] [data-error-for="options.1"]:not([hidden])'
    )
    assert error.inner_text() == "Name the option."
    assert find_item(system, "Carbonara") is None  # nothing written
    page.fill('#if-options li[data-index="1"] [data-field="name"]', "No pepper")
    page.click("#if-save")
    page.wait_for_selector("#item-dialog", state="hidden")
    row = f'{section} li[data-item]:has(.item-name:text-is("Carbonara"))'
    page.wait_for_selector(row)
    item = find_item(system, "Carbonara")
    assert item["price_cents"] == 1190 and item["available"] is True
    assert [(o["name"], o["price_delta_cents"]) for o in item["options"]] == [
        ("Large", 200),
        ("No pepper", -50),
    ]
    assert "11.90" in page.inner_text(f"{row} .item-price")
    screenshot(page, "catalog.png")

    # Edit: a new price, one option removed (options are replaced as a whole).
    page.click(f'{row} button[data-action="edit-item"]')
    assert page.input_value("#if-price") == "11.90"
    page.fill("#if-price", "13")
    page.click('#if-options li[data-index="1"] button')
    page.click("#if-save")
    page.wait_for_selector("#item-dialog", state="hidden")
    page.wait_for_selector(f'{row} .item-price:has-text("13.00")')
    item = find_item(system, "Carbonara")
    assert item["price_cents"] == 1300 and [o["name"] for o in item["options"]] == ["Large"]

    # A category that still holds items is not deleted: the server's reason is shown.
    page.click(f'{section} button[data-action="edit-category"]')
    page.click("#cf-delete")
    page.click("#cf-delete")
    assert (
        "still holds 1 items"
        in page.wait_for_selector("#category-form .form-error:not([hidden])").inner_text()
    )
    page.click("#category-dialog [data-close]")

    # Delete: the first click only arms the button.
    page.click(f'{row} button[data-action="edit-item"]')
    page.click("#if-delete")
    assert page.is_visible("#item-dialog") and find_item(system, "Carbonara") is not None
    page.click("#if-delete")
    page.wait_for_selector(row, state="detached")
    assert find_item(system, "Carbonara") is None
    page.click(f'{section} button[data-action="edit-category"]')  # empty now: it goes
    page.click("#cf-delete")
    page.click("#cf-delete")
    page.wait_for_selector(section, state="detached")
    assert len(catalog(system)["categories"]) == before


def test_sold_out_switch_is_live_on_every_open_dashboard(browser, system: System) -> None:
    """Flipping an item's availability (on one page, or over REST) shows on another open
    dashboard within seconds, without a reload: the retained catalog topic carries it."""
    menu = make_menu(system, "Live")
    pages = []
    try:
        for _ in range(2):
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            p = context.new_page()
            open_dashboard(p, system)
            goto(p, "catalog")
            pages.append(p)
        first, second = pages
        row = f'#catalog-list li[data-item="{menu["pizza"]["id"]}"]'
        for p in pages:
            p.wait_for_selector(f'{row}[data-available="true"]')
        second.evaluate(
            "() => { window.catalogFetches = 0; const f = window.fetch;"
            " window.fetch = (u, ...a) => { if (String(u).endsWith('/catalog')) window.catalogFetches++;"
            " return f(u, ...a); }; }"
        )
        started = time.monotonic()
        first.click(f'{row} input[data-action="available"]')  # the switch (re-drawn once saved)
        second.wait_for_selector(f'{row}[data-available="false"]', timeout=10000)
        from_click = time.monotonic() - started
        assert second.inner_text(f"{row} .switch-text") == "Sold out"
        assert find_item(system, menu["pizza"]["name"])["available"] is False
        system.admin.request("PATCH", f"/catalog/items/{menu['pizza']['id']}", {"available": True})
        started = time.monotonic()
        for p in pages:
            p.wait_for_selector(f'{row}[data-available="true"]', timeout=10000)
        from_answer = time.monotonic() - started
        assert second.evaluate("() => window.catalogFetches") == 0  # the bus brought both changes
        print(
            f"sold out on the other dashboard {from_click * 1000:.0f} ms after the click;"
            f" available again on both {from_answer * 1000:.0f} ms after the PATCH answered"
        )
    finally:
        for p in pages:
            p.context.close()


def test_catalog_editor_on_a_phone(browser, system: System) -> None:
    """At 390x844 the editor and its item dialog fit the width; the switch and Edit are reachable."""
    menu = make_menu(system, "Phone")
    with on_a_phone(browser, system, "catalog") as p:
        row = f'#catalog-list li[data-item="{menu["pizza"]["id"]}"]'
        p.wait_for_selector(row)
        assert_fits_the_width(p)
        assert p.is_visible(f"{row} .switch") and p.is_visible(f'{row} button[data-action="edit-item"]')
        screenshot(p, "catalog-phone.png")
        p.click(f'{row} button[data-action="edit-item"]')
        assert p.input_value("#if-price") == "12.50"
        box = p.eval_on_selector("#item-dialog", "d => d.getBoundingClientRect().width")
        assert box <= 390
        screenshot(p, "catalog-phone-item.png")


# --- the phone-order form ----------------------------------------------------------


def test_phone_order_from_the_catalog_with_a_custom_line(page, system: System) -> None:
    """An admin enters a phone order: catalog item with an option and a quantity, plus a custom
    line with a price; the total shown is the server's; the order has the catalog's snapshot
    and the custom line, and is on the board as #number."""
    menu = make_menu(system, "Phone order")
    open_dashboard(page, system)
    goto(page, "phone")
    page.select_option("#po-category", menu["category"]["id"])
    page.select_option("#po-item", menu["pizza"]["id"])
    sold_out = page.eval_on_selector(f'#po-item option[value="{menu["gone"]["id"]}"]', "o => o.disabled")
    assert sold_out  # a sold-out item cannot be picked
    large = next(o for o in menu["pizza"]["options"] if o["name"] == "Large")
    page.check(f'#po-options input[value="{large["id"]}"]')
    page.fill("#po-quantity", "2")
    page.click("#po-add")
    add_custom_line(page, "Delivery far out", "2.50")
    assert page.locator("#po-lines tr").count() == 2
    shown_total = page.inner_text("#po-total")
    assert "33.50" in shown_total  # (12.50 + 3.00) x 2 + 2.50
    fill_customer(page, "Phone Paula", "+1 555 0199", "7 Long Lane")
    page.fill("#po-notes", "call on arrival")
    keys: list[str] = []
    page.on(
        "request",
        lambda r: (
            r.method == "POST"
            and r.url.endswith("/api/v1/orders")
            and keys.append(r.headers.get("idempotency-key"))
        ),
    )
    page.click("#po-submit")
    done = page.wait_for_selector("#po-done:not([hidden])")
    order_id = page.get_attribute("#po-done a[data-order]", "data-order")
    order = system.admin.request("GET", f"/orders/{order_id}")
    assert keys and keys[0]
    assert f"Order {label(order)} placed" in done.inner_text()
    assert order["total_cents"] == 3350 and order["notes"] == "call on arrival"
    assert order["customer"] == {"name": "Phone Paula", "phone": "+1 555 0199", "address": "7 Long Lane"}
    pizza, custom = order["items"]
    assert (pizza["item_id"], pizza["quantity"], pizza["unit_price_cents"]) == (menu["pizza"]["id"], 2, 1550)
    assert pizza["options"] == ["Large"]
    assert (custom["name"], custom["quantity"], custom["unit_price_cents"]) == ("Delivery far out", 1, 250)
    assert (
        page.locator("#po-lines tr").count() == 0 and page.input_value("#po-name") == ""
    )  # ready for the next
    page.click("#po-done a[data-order]")
    page.wait_for_selector(f'#detail-title:text-is("Order {label(order)}")')
    assert page.is_visible(f'#orders li[data-id="{order_id}"]')


def test_phone_order_bad_input_is_shown_beside_its_field(page, system: System) -> None:
    """The server's refusals name the field and the page shows each beside it: a phone that is
    not a phone, a blank name, no lines. Nothing is written; fixed, the same form is accepted."""
    open_dashboard(page, system)
    goto(page, "phone")
    page.fill("#po-phone", "call me maybe")
    page.fill("#po-address", "1 Bad Input Road")
    page.click("#po-submit")
    page.wait_for_selector('#phone-form [data-error-for="customer.phone"]:not([hidden])')
    for field in ("customer.name", "items"):
        assert page.is_visible(f'#phone-form [data-error-for="{field}"]'), field
    assert page.is_visible("#po-error")
    assert page.get_attribute("#po-phone", "aria-invalid") == "true"
    assert not orders_named(system, "Bad Input")
    screenshot(page, "phone-order-errors.png")
    # Client-side checks of a custom line: no name, a price that is not money.
    page.click("#po-custom-add")
    assert "Name the line" in page.inner_text("#po-custom-error")
    add_custom_line(page, "Cake", "-3")
    assert "Unit price" in page.inner_text("#po-custom-error")
    page.fill("#po-custom-price", "3")
    page.click("#po-custom-add")
    page.fill("#po-name", "Bad Input Bea")
    page.fill("#po-phone", "+1 555 0123")
    page.click("#po-submit")
    page.wait_for_selector("#po-done:not([hidden])")
    assert len(orders_named(system, "Bad Input Bea")) == 1
    assert page.is_hidden('#phone-form [data-error-for="customer.phone"]')


def test_a_lost_answer_and_a_double_click_make_one_order(page, system: System) -> None:
    """The first answer is lost on the way back (the order was made): the page shows the error,
    and the retry sends the same Idempotency-Key, so the server answers with the same order.
    A double click sends one request."""
    open_dashboard(page, system)
    goto(page, "phone")
    fill_customer(page, "Retry Rita", "+1 555 0456", "3 Retry Row")
    add_custom_line(page, "Soup", "6")
    keys: list[str] = []
    lost = {"done": False}

    def lose_first_answer(route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        response = route.fetch()  # the server makes the order ...
        if not lost["done"]:
            lost["done"] = True
            route.abort("connectionreset")  # ... and the page never hears of it
        else:
            route.fulfill(response=response)

    page.route("**/api/v1/orders", lose_first_answer)
    page.click("#po-submit")
    page.wait_for_selector("#po-error:not([hidden])")
    assert len(orders_named(system, "Retry Rita")) == 1  # made, though the page does not know
    page.click("#po-submit")
    page.wait_for_selector("#po-done:not([hidden])")
    assert len(keys) == 2 and keys[0] == keys[1]
    assert len(orders_named(system, "Retry Rita")) == 1
    page.unroute("**/api/v1/orders")

    requests: list[str] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and r.url.endswith("/api/v1/orders") and requests.append(r.url),
    )
    fill_customer(page, "Double Dan", "+1 555 0789", "4 Double Drive")
    add_custom_line(page, "Tea", "2")
    page.dblclick("#po-submit")
    page.wait_for_selector('#po-done:has-text("Double Dan")')
    assert len(requests) == 1 and len(orders_named(system, "Double Dan")) == 1


def test_phone_order_sold_out_meanwhile_and_on_a_phone(browser, system: System) -> None:
    """At 390x844: an item on the form goes sold out (over the bus) before the order is sent:
    the line says so live and the server's refusal (409) is shown, with no order written."""
    menu = make_menu(system, "Meanwhile")
    with on_a_phone(browser, system, "phone") as p:
        p.select_option("#po-category", menu["category"]["id"])
        p.select_option("#po-item", menu["pizza"]["id"])
        p.click("#po-add")
        fill_customer(p, "Sold Out Sam", "+1 555 0321", "5 Empty Oven St")
        assert_fits_the_width(p)
        screenshot(p, "phone-order-phone.png")
        system.admin.request("PATCH", f"/catalog/items/{menu['pizza']['id']}", {"available": False})
        p.wait_for_selector('#po-lines tr:has-text("Sold out now")', timeout=10000)
        assert p.eval_on_selector(f'#po-item option[value="{menu["pizza"]["id"]}"]', "o => o.disabled")
        p.click("#po-submit")
        p.wait_for_selector("#po-error:not([hidden])")
        beside = p.wait_for_selector('#po-lines tr[data-line="0"] [data-error-for="items.0"]:not([hidden])')
        assert "sold out" in beside.inner_text()  # the 409 names the line's item
        assert not orders_named(system, "Sold Out Sam")
