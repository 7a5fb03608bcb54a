"""Driving the customer's shop (/shop/) from a test: a menu to order from, logging in,
filling the cart, placing the order, reading the tracking page.

Plain functions over a Playwright page and a :class:`harness.system.System`; the
fixtures are in tests/test_shop.py.
"""

from __future__ import annotations

from typing import Any

from clients.rest import Api
from harness.processes import ROOT
from harness.system import System

IMAGES = ROOT / "docs" / "images"
LIVE_MS = 15000  # a change made elsewhere is on the open page within this (generous: busy CI)


def seed_menu(system: System) -> dict[str, Any]:
    """A small menu made over the admin's REST API: two categories, one item with options."""
    admin = system.admin
    pizza = admin.request("POST", "/catalog/categories", {"name": "Pizza", "position": 0})
    drinks = admin.request("POST", "/catalog/categories", {"name": "Drinks", "position": 1})

    def item(category: dict, name: str, description: str, cents: int, position: int, options=()) -> dict:
        body = {
            "category_id": category["id"],
            "name": name,
            "description": description,
            "price_cents": cents,
            "available": True,
            "position": position,
            "options": [{"name": n, "price_delta_cents": d} for n, d in options],
        }
        return admin.request("POST", "/catalog/items", body)

    def sold_out(made: dict) -> dict:
        return admin.request("PATCH", f"/catalog/items/{made['id']}", {"available": False})

    return {
        "margherita": item(
            pizza,
            "Margherita",
            "Tomato, mozzarella, basil",
            899,
            0,
            [("Extra mozzarella", 150), ("Gluten-free base", 200)],
        ),
        "diavola": item(pizza, "Diavola", "Spicy salami, chili oil", 1099, 1),
        "lemonade": item(drinks, "Lemonade", "Squeezed here, not too sweet", 350, 0),
        "calzone": sold_out(item(pizza, "Calzone", "Folded, ricotta and ham", 1199, 2)),
    }


def customer(system: System) -> tuple[Api, dict[str, str]]:
    """A customer account (made by the admin: sign-ups are limited per address, and the
    sign-up form has its own test), and its Api, logged in."""
    creds = system.make_customer()
    api = Api(system.api_url)
    api.login(creds["username"], creds["password"])
    return api, creds


def log_in(page, system: System, creds: dict[str, str], signup: bool = False) -> None:
    """Log in (or sign up) on the shop's form; wait until the live feed is synced."""
    page.goto(f"{system.base}/shop/#/login")
    if signup:
        page.click("#tab-signup")
        page.fill("#l-display", "Grace Hopper")
    page.fill("#l-username", creds["username"])
    page.fill("#l-password", creds["password"])
    page.click("#login-submit")
    page.wait_for_selector('#conn[data-state="online"]', timeout=LIVE_MS)


def add_to_cart(page, item: dict, options: tuple[str, ...] = (), quantity: int = 1) -> None:
    page.click(f'.item[data-item="{item["id"]}"] .add')
    for name in options:
        page.check(f'#sheet-options label:has-text("{name}") input')
    for _ in range(quantity - 1):
        page.click("#qty-plus")
    page.click("#sheet-add")
    page.wait_for_selector("#sheet", state="hidden")


def fill_delivery(page) -> None:
    page.fill("#c-name", "Grace Hopper")
    page.fill("#c-phone", "+1 555 0142")
    page.fill("#c-address", "12 Harbour Road, flat 3")


def step_state(page, step: str) -> str:
    return page.get_attribute(f'#steps li[data-step="{step}"]', "data-state") or ""


def wait_status(page, status: str) -> None:
    page.wait_for_selector(f'#track[data-status="{status}"]', timeout=LIVE_MS)


def customers_orders(api: Api) -> list[dict]:
    return api.request("GET", "/orders?limit=200")["orders"]
