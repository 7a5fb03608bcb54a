"""POST /orders answered without Flask's per-request machinery (order_service/api/fast_orders.py):
an order that is placed gets the answer Flask's view gives, every other request goes on to
Flask with its body and gets Flask's answer, with nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import request_started

from order_service.api.app import create_app
from tests.conftest import order_body
from tests.helpers import API, assert_problem, counts, nothing_written


@pytest.fixture
def through_flask(app) -> Iterator[list[str]]:
    """The requests that reached the Flask app (its request_started signal), as "METHOD path"."""
    seen: list[str] = []

    def started(sender, **extra) -> None:
        from flask import request

        seen.append(f"{request.method} {request.path}")

    request_started.connect(started, app)
    yield seen
    request_started.disconnect(started, app)


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def flask_only(app, settings_overrides, through_flask):
    """A client of the same API with the fast path off (ORDERBUS_API_FAST_PATH=false), on the
    same database: every request it sends reaches Flask, and is counted as "flask-only"."""
    other = create_app({**settings_overrides, "api_fast_path": False})
    request_started.connect(lambda sender, **extra: through_flask.append("flask-only"), other, weak=False)
    return other.test_client()


def _post(client, actor, body, **headers):
    return client.post(f"{API}/orders", json=body, headers={**actor.headers, **headers})


def test_an_order_placed_is_answered_without_flask_as_flask_answers_it(
    client, flask_only, through_flask, admin, make_customer, menu
):
    """The same customer's order, placed through the fast path and through Flask alone
    (ORDERBUS_API_FAST_PATH=false, the same database): the same status, headers and body
    (the customer's delivery code included), and only the second request reaches Flask."""
    customer = make_customer()
    through_flask.clear()
    fast = _post(client, customer, menu.order(), **{"Idempotency-Key": "fast-1"})
    assert fast.status_code == 201, fast.json
    assert through_flask == []

    slow = _post(flask_only, customer, menu.order(), **{"Idempotency-Key": "slow-1"})
    assert slow.status_code == 201, slow.json
    assert through_flask == ["flask-only"]  # positive control: the switch sends it through Flask

    assert sorted(fast.headers.keys()) == sorted(slow.headers.keys())
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"] == "application/json"
    assert fast.headers["Location"] == f"/api/v1/orders/{fast.json['id']}"
    assert fast.headers["ETag"] == slow.headers["ETag"] == '"1"'
    assert fast.get_data(as_text=True).endswith("}\n") and slow.get_data(as_text=True).endswith("}\n")
    different = {"id", "number", "created_at", "updated_at", "status_times", "delivery_code", "eta"}
    assert fast.json.keys() == slow.json.keys()
    assert {k: v for k, v in fast.json.items() if k not in different} == {
        k: v for k, v in slow.json.items() if k not in different
    }
    assert len(fast.json["delivery_code"]) == len(slow.json["delivery_code"]) > 0

    # A retry with the key: the original order, replayed, still without Flask.
    again = _post(client, customer, menu.order(), **{"Idempotency-Key": "fast-1"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == fast.json
    assert through_flask == ["flask-only"]

    # An admin's custom line: also placed on the fast path.
    by_admin = _post(client, admin, order_body())
    assert by_admin.status_code == 201 and "delivery_code" not in by_admin.json
    assert through_flask == ["flask-only"]


def test_a_request_the_checks_refuse_gets_flasks_answer_and_a_service_refusal_the_same(
    client, flask_only, through_flask, admin, make_customer, make_agent, menu
):
    """No token, a role that may not order, a body that is not JSON or not an order, a bad
    Idempotency-Key: each goes on to Flask, with its body, and gets its problem naming the
    field. An order the service refuses (a customer's own price, an unknown item) is answered
    by the fast path, as Flask alone answers it. Nothing is written. A good order after them
    (the positive control) is placed without Flask."""
    customer, agent = make_customer(), make_agent()
    through_flask.clear()
    with nothing_written():
        assert_problem(client.post(f"{API}/orders", json=menu.order()), 401)
        assert_problem(_post(client, agent, menu.order()), 403)
        assert_problem(
            client.post(
                f"{API}/orders", data="{}", headers={**customer.headers, "Content-Type": "text/plain"}
            ),
            415,
            "Content-Type",
        )
        assert_problem(
            client.post(f"{API}/orders", data='{"items": [', headers={**customer.headers, **JSON}),
            400,
            "body",
        )
        assert_problem(_post(client, customer, [menu.order()]), 422)
        assert_problem(_post(client, customer, menu.order(items=[])), 422, "items")
        bad_key = _post(client, customer, menu.order(), **{"Idempotency-Key": "é" * 3})
        assert_problem(bad_key, 400, "Idempotency-Key")
        assert len(through_flask) == 7 and set(through_flask) == {"POST /api/v1/orders"}

        unknown = menu.order(items=[{"item_id": "no-such-item", "quantity": 1}])
        for body, field in ((order_body(), "items.0.unit_price_cents"), (unknown, "items.0.item_id")):
            fast = assert_problem(_post(client, customer, body), 422, field)
            assert through_flask.count("POST /api/v1/orders") == 7
            assert assert_problem(_post(flask_only, customer, body), 422, field) == fast
        assert through_flask[7:] == ["flask-only"] * 2

    before = counts()["Order"]
    placed = _post(client, customer, menu.order())
    assert placed.status_code == 201, placed.json
    assert counts()["Order"] == before + 1
    assert len(through_flask) == 9


def test_a_status_change_is_answered_without_flask_as_flask_answers_it(
    client, flask_only, through_flask, admin, make_agent, place_order
):
    """PATCH .../status: a move the lifecycle allows (with or without If-Match) is answered
    without Flask (200, the order, its ETag), and so are the service's refusals (an illegal
    move, a stale version, an unknown order, an agent the order is not assigned to), each as
    Flask alone answers it; a malformed If-Match or a field that is not the model's goes on to
    Flask. Nothing is written by a refusal."""
    order, agent = place_order(), make_agent()
    path = f"{API}/orders/{order['id']}/status"
    through_flask.clear()
    moved = client.patch(path, json={"status": "confirmed"}, headers={**admin.headers, "If-Match": '"1"'})
    assert moved.status_code == 200, moved.json
    assert moved.json["status"] == "confirmed" and moved.headers["ETag"] == '"2"'
    assert moved.headers["Content-Type"] == "application/json"
    assert through_flask == []

    refusals = [
        (path, {"status": "delivered"}, {}, admin, 409),
        (path, {"status": "preparing"}, {"If-Match": '"1"'}, admin, 412),
        (f"{API}/orders/ord_nosuch/status", {"status": "preparing"}, {}, admin, 404),
        (path, {"status": "preparing"}, {}, agent, 404),  # not theirs to see
    ]
    with nothing_written():
        for url, body, headers, actor, status in refusals:
            fast = assert_problem(client.patch(url, json=body, headers={**actor.headers, **headers}), status)
            assert "PATCH" not in " ".join(through_flask)
            slow = assert_problem(
                flask_only.patch(url, json=body, headers={**actor.headers, **headers}), status
            )
            assert slow == fast
        through_flask.clear()
        bad = client.patch(path, json={"status": "preparing"}, headers={**admin.headers, "If-Match": "x"})
        assert_problem(bad, 400, "If-Match")
        extra = client.patch(path, json={"status": "preparing", "speed": 1}, headers=admin.headers)
        assert_problem(extra, 422, "speed")
        assert through_flask == [f"PATCH {path}"] * 2

    # Positive control: the next allowed move, without Flask again.
    assert (
        client.patch(path, json={"status": "preparing"}, headers=admin.headers).json["status"] == "preparing"
    )
    assert len(through_flask) == 2


def test_a_body_cut_short_is_flasks_400_and_writes_nothing(client, through_flask, admin):
    """A client that announces more body than it sends (gone mid-body): Flask's 400, nothing
    written; the same order sent whole is placed without Flask (the positive control)."""
    body = json.dumps(order_body()).encode()
    through_flask.clear()
    with nothing_written():
        cut = client.post(
            f"{API}/orders",
            data=body[:20],
            headers={**admin.headers, **JSON},
            environ_overrides={"CONTENT_LENGTH": str(len(body))},
        )
        assert_problem(cut, 400)
    assert through_flask == ["POST /api/v1/orders"]
    whole = client.post(f"{API}/orders", data=body, headers={**admin.headers, **JSON})
    assert whole.status_code == 201, whole.json
    assert through_flask == ["POST /api/v1/orders"]
