"""The catalog over REST: anyone reads it, admins change it, every change raises its version
and writes one outbox row carrying the whole catalog (for the retained topic ``catalog``)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.helpers import API, assert_problem, nothing_written, outbox


def _catalog(client) -> dict:
    response = client.get(f"{API}/catalog")
    assert response.status_code == 200, response.json
    return response.json


def test_anyone_reads_the_catalog_in_the_contract_shape(client, menu, make_customer):
    """GET /catalog without a token (the shop browses before login) and with a customer's:
    categories in position order, items with price, availability and options."""
    anonymous = _catalog(client)
    customer = client.get(f"{API}/catalog", headers=make_customer().headers).json
    assert customer == anonymous
    assert anonymous["currency"] == "EUR"
    assert anonymous["version"] == 5  # two categories, three items: one change each
    assert anonymous["updated_at"].endswith("Z")
    pizza, starters = anonymous["categories"]
    assert (pizza["name"], pizza["position"], starters["name"]) == ("Pizza", 0, "Starters")
    margherita, tea = pizza["items"]
    assert margherita == {
        "id": menu.margherita,
        "category_id": menu.category_id,
        "name": "Margherita",
        "description": "",
        "price_cents": 1299,
        "available": True,
        "position": 0,
        "options": [
            {"id": menu.basil, "name": "Extra basil", "price_delta_cents": 100},
            {"id": menu.large, "name": "Large", "price_delta_cents": 300},
        ],
    }
    assert (tea["name"], tea["position"]) == ("Tea", 1)
    assert [(i["name"], i["available"]) for i in starters["items"]] == [("Soup", False)]
    assert margherita["id"].startswith("itm_") and pizza["id"].startswith("cat_")
    assert margherita["options"][0]["id"].startswith("opt_")


def test_an_empty_catalog_is_version_0(client):
    assert _catalog(client)["categories"] == []
    assert _catalog(client)["version"] == 0


def test_each_change_publishes_the_whole_catalog_once(client, admin, menu):
    """One outbox row per change on topic ``catalog``, its payload the GET body at that version."""
    rows = outbox(kind="catalog")
    assert [r["payload"]["version"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["topic"] for r in rows} == {"catalog"}
    assert rows[-1]["payload"] == _catalog(client)
    response = client.patch(
        f"{API}/catalog/items/{menu.tea}", json={"available": False}, headers=admin.headers
    )
    assert response.status_code == 200 and response.json["available"] is False
    latest = outbox(kind="catalog")[-1]["payload"]
    assert latest == _catalog(client)
    assert latest["version"] == 6
    assert [i["available"] for i in latest["categories"][0]["items"]] == [True, False]


def test_admin_edits_items_categories_and_options(client, admin, menu):
    """PATCH changes only the fields given; options are replaced as a whole; a category
    with items cannot be deleted, an empty one can; a deleted item leaves the catalog."""
    h = admin.headers
    changed = client.patch(
        f"{API}/catalog/items/{menu.margherita}",
        json={"price_cents": 1399, "options": [{"name": "Burrata", "price_delta_cents": 250}]},
        headers=h,
    ).json
    assert changed["price_cents"] == 1399 and changed["name"] == "Margherita"
    assert [(o["name"], o["price_delta_cents"]) for o in changed["options"]] == [("Burrata", 250)]
    kept = client.patch(f"{API}/catalog/items/{menu.margherita}", json={"name": "Marinara"}, headers=h).json
    assert kept["options"] == changed["options"]  # not given: kept
    renamed = client.patch(
        f"{API}/catalog/categories/{menu.category_id}", json={"name": "Pizze", "position": 3}, headers=h
    )
    assert (renamed.status_code, renamed.json["name"], renamed.json["position"]) == (200, "Pizze", 3)
    assert [c["name"] for c in _catalog(client)["categories"]] == ["Starters", "Pizze"]

    problem = assert_problem(client.delete(f"{API}/catalog/categories/{menu.category_id}", headers=h), 409)
    assert problem["items"] == 2
    moved = client.patch(
        f"{API}/catalog/items/{menu.tea}",
        json={"category_id": _catalog(client)["categories"][0]["id"]},
        headers=h,
    )
    assert moved.status_code == 200, moved.json
    assert client.delete(f"{API}/catalog/items/{menu.margherita}", headers=h).status_code == 204
    assert client.delete(f"{API}/catalog/categories/{menu.category_id}", headers=h).status_code == 204
    catalog = _catalog(client)
    assert [(c["name"], [i["name"] for i in c["items"]]) for c in catalog["categories"]] == [
        ("Starters", ["Soup", "Tea"])
    ]
    assert_problem(client.delete(f"{API}/catalog/items/{menu.margherita}", headers=h), 404)
    assert_problem(client.patch(f"{API}/catalog/categories/cat_nope", json={"name": "x"}, headers=h), 404)


def test_only_admins_change_the_catalog(client, menu, make_customer, make_agent):
    """Customers and agents get 403, anonymous callers 401; nothing changes."""
    writes = [
        ("POST", "/catalog/categories", {"name": "Desserts"}),
        ("PATCH", f"/catalog/categories/{menu.category_id}", {"name": "x"}),
        ("DELETE", f"/catalog/categories/{menu.category_id}", None),
        ("POST", "/catalog/items", {"category_id": menu.category_id, "name": "Cake", "price_cents": 1}),
        ("PATCH", f"/catalog/items/{menu.tea}", {"available": False}),
        ("DELETE", f"/catalog/items/{menu.tea}", None),
    ]
    actors = ((make_customer(), 403), (make_agent(), 403), (None, 401))
    with nothing_written():
        for actor, status in actors:
            for method, path, body in writes:
                headers = actor.headers if actor else {}
                response = client.open(f"{API}{path}", method=method, json=body, headers=headers)
                assert_problem(response, status)


def _item(menu, **fields) -> dict:
    return {"category_id": menu.category_id, "name": "Cake", "price_cents": 450, **fields}


BAD_ITEMS = [
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "two\nlines"}, "name"),
    ({"name": 7}, "name"),
    ({"price_cents": -1}, "price_cents"),
    ({"price_cents": 10_000_001}, "price_cents"),
    ({"price_cents": "4.50"}, "price_cents"),
    ({"price_cents": 4.5}, "price_cents"),
    ({"price_cents": None}, "price_cents"),
    ({"available": "yes"}, "available"),
    ({"description": "d" * 301}, "description"),
    ({"position": -1}, "position"),
    ({"category_id": "cat_unknown"}, "category_id"),
    ({"category_id": "x" * 33}, "category_id"),
    ({"options": [{"name": "o", "price_delta_cents": 1}] * 11}, "options"),
    ({"options": [{"name": "", "price_delta_cents": 1}]}, "options.0.name"),
    ({"options": [{"name": "o", "price_delta_cents": "1"}]}, "options.0.price_delta_cents"),
    ({"options": [{"name": "o", "price": 1}]}, "options.0.price"),
    ({"options": [{"name": "Small", "price_delta_cents": -451}]}, "options"),
    ({"options": "none"}, "options"),
    ({"sku": "C-1"}, "sku"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_ITEMS)
def test_bad_items_are_422_naming_the_field(client, admin, menu, fields, field):
    """Creating or changing an item with a bad field: 422 problem+json naming it, nothing written."""
    with nothing_written():
        assert_problem(
            client.post(f"{API}/catalog/items", json=_item(menu, **fields), headers=admin.headers), 422, field
        )
        patch = client.patch(f"{API}/catalog/items/{menu.tea}", json=fields, headers=admin.headers)
        assert_problem(patch, 422, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"name": "Cakes", "position": "1"}, "position"),
        ({"name": "Cakes", "position": 10_001}, "position"),
        ({"name": "Cakes", "items": []}, "items"),
    ],
)
def test_bad_categories_are_422_naming_the_field(client, admin, body, field):
    with nothing_written():
        assert_problem(client.post(f"{API}/catalog/categories", json=body, headers=admin.headers), 422, field)


def test_bad_bodies_and_paths_are_4xx_never_5xx(client, admin, menu):
    """Not JSON, not an object, an id with a NUL: a 4xx problem each."""
    h = admin.headers
    assert_problem(
        client.post(f"{API}/catalog/items", data="{", headers={**h, "Content-Type": "application/json"}), 400
    )
    assert_problem(
        client.post(f"{API}/catalog/items", data="x", headers={**h, "Content-Type": "text/plain"}), 415
    )
    assert client.post(f"{API}/catalog/items", json=[1], headers=h).status_code == 422
    assert client.patch(f"{API}/catalog/items/%00", json={"name": "x"}, headers=h).status_code in (404, 422)
    assert client.patch(f"{API}/catalog/items/{'i' * 40}", json={"name": "x"}, headers=h).status_code == 422


def test_the_catalog_is_bounded(client, admin, menu, monkeypatch):
    """Past the largest catalog one MQTT message carries: 409, nothing written."""
    from order_service.catalog import service

    monkeypatch.setattr(service, "MAX_ITEMS", 3)
    monkeypatch.setattr(service, "MAX_CATEGORIES", 2)
    with nothing_written():
        problem = assert_problem(
            client.post(f"{API}/catalog/items", json=_item(menu), headers=admin.headers), 409
        )
        assert "150" not in problem["detail"] and "at most 3" in problem["detail"]
        assert_problem(
            client.post(f"{API}/catalog/categories", json={"name": "More"}, headers=admin.headers), 409
        )
    monkeypatch.setattr(service, "MAX_ITEMS", 4)
    assert client.post(f"{API}/catalog/items", json=_item(menu), headers=admin.headers).status_code == 201


def test_published_catalogs_conform_to_the_contract(client, admin, menu):
    """Each catalog payload written for the broker validates against docs/asyncapi.yaml."""
    from tests import asyncapi

    client.patch(f"{API}/catalog/items/{menu.soup}", json={"available": True}, headers=admin.headers)
    rows = outbox(kind="catalog")
    assert len(rows) == 6
    for row in rows:
        asyncapi.validate_message(row["topic"], json.dumps(row["payload"]).encode())
    broken = {**rows[-1]["payload"], "version": "7"}
    with pytest.raises(jsonschema.ValidationError):  # positive control
        asyncapi.validate_message("catalog", json.dumps(broken).encode())


def test_seed_catalog_fills_an_empty_catalog_once(client, admin, database_url, data_dir):
    """`seed-catalog` (make run calls it) gives a new system a few categories and items, and
    publishes them; run again, or on a catalog with anything in it, it changes nothing."""
    import os

    from harness.processes import cli

    env = {**os.environ, "ORDERBUS_DATA_DIR": str(data_dir), "ORDERBUS_DATABASE_URL": database_url}
    first = cli(env, "seed-catalog")
    assert first.returncode == 0 and "seeded" in first.stdout, first.stderr
    seeded = _catalog(client)
    assert len(seeded["categories"]) >= 2 and all(c["items"] for c in seeded["categories"])
    assert seeded["version"] == 1 and outbox(kind="catalog")[-1]["payload"] == seeded
    again = cli(env, "seed-catalog")
    assert again.returncode == 0 and "left as it is" in again.stdout
    assert _catalog(client) == seeded
    # A customer can order from it at once.
    item = seeded["categories"][0]["items"][0]
    body = {
        "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
        "items": [{"item_id": item["id"], "quantity": 1, "option_ids": [item["options"][0]["id"]]}],
    }
    order = client.post(f"{API}/orders", json=body, headers=admin.headers).json
    assert order["total_cents"] == item["price_cents"] + item["options"][0]["price_delta_cents"]
