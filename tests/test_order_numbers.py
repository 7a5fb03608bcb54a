"""Human order numbers: sequential per business day, unique when orders race through
several API workers (SQLite and PostgreSQL), in the REST body and every outbox payload."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from order_service.orders import numbers
from order_service.store.db import db
from tests.conftest import order_body
from tests.helpers import API, assert_problem, outbox
from tests.test_security_api_server import api_server, race  # noqa: F401 - the fixture


def test_numbers_count_up_and_travel_with_the_order(client, admin, place_order, make_agent):
    """#1, #2, #3 in creation order: in the 201 body, GET, the list, orders/new, the status
    topic and the agent's worklist."""
    placed = [place_order() for _ in range(3)]
    assert [o["number"] for o in placed] == [1, 2, 3]
    assert client.get(f"{API}/orders/{placed[1]['id']}", headers=admin.headers).json["number"] == 2
    listed = client.get(f"{API}/orders", headers=admin.headers).json["orders"]
    assert [o["number"] for o in listed] == [3, 2, 1]
    new_rows = outbox(topic="orders/new")
    assert [r["payload"]["order"]["number"] for r in new_rows] == [1, 2, 3]
    agent = make_agent()
    order_id = placed[2]["id"]
    client.patch(f"{API}/orders/{order_id}/status", json={"status": "confirmed"}, headers=admin.headers)
    client.put(
        f"{API}/orders/{order_id}/agent",
        json={"agent_id": agent.agent_id, "offer": False},
        headers=admin.headers,
    )
    worklist = outbox(kind="worklist", agent_id=agent.agent_id)[-1]["payload"]
    assert [o["number"] for o in worklist["orders"]] == [3]
    assert outbox(order_id=order_id, kind="status")[-1]["payload"]["order"]["number"] == 3


def test_a_refused_order_takes_no_number(client, admin, place_order, make_customer):
    place_order()
    assert_problem(client.post(f"{API}/orders", json=order_body(), headers=make_customer().headers), 422)
    assert place_order()["number"] == 2


def test_search_finds_an_order_by_its_number(client, admin, place_order):
    """q=#2 (or 2) finds the order numbered 2 (of any day: the id tells them apart)."""
    placed = [place_order() for _ in range(3)]
    for q in ("%232", "2"):
        found = client.get(f"{API}/orders?q={q}", headers=admin.headers).json["orders"]
        assert [o["id"] for o in found] == [placed[1]["id"]]


def test_each_business_day_starts_again_at_1(app):
    """The counter is per day, and the day is the business time zone's calendar day."""
    late = datetime(2026, 3, 1, 23, 30)  # naive UTC, as the database keeps times
    assert numbers.business_day(late, ZoneInfo("UTC")) == "2026-03-01"
    assert numbers.business_day(late, ZoneInfo("Europe/Rome")) == "2026-03-02"
    assert numbers.business_day(late, ZoneInfo("America/New_York")) == "2026-03-01"
    with db.connection_context(), db.atomic():
        got = [numbers.next_number(day) for day in ("2026-03-01", "2026-03-01", "2026-03-02", "2026-03-01")]
    assert got == [1, 2, 1, 3]


def test_orders_racing_through_four_workers_get_distinct_numbers(api_server, admin):  # noqa: F811
    """Sixteen orders sent at the same instant through four API workers: numbers 1..16,
    each once (one counter row per day, raised in each order's own transaction)."""
    results = race(api_server, [("POST", "/orders", order_body(), admin.headers)] * 16)
    assert [r.status for r in results] == [201] * 16, [r.body for r in results if r.status != 201]
    assert sorted(r.body["number"] for r in results) == list(range(1, 17))


def test_an_unknown_business_timezone_is_refused_at_start():
    """A typo in ORDERBUS_BUSINESS_TIMEZONE stops the service with the variable named."""
    import pytest
    from pydantic import ValidationError

    from order_service.config import load_settings

    for bad in ("Mars/Olympus_Mons", "", "../etc/passwd"):
        with pytest.raises(ValidationError, match="ORDERBUS_BUSINESS_TIMEZONE"):
            load_settings({"business_timezone": bad})
    assert load_settings({"business_timezone": "Europe/Rome"}).business_zone.key == "Europe/Rome"


def test_a_drafted_event_gets_its_number_in_every_text_or_refuses():
    """A new order's event is drafted before its transaction gives the number; the number
    goes into the order's text, each outbox row and the payload, and only the order's own
    field: a note that spells the placeholder out is left as it is."""
    from order_service.orders.events import NUMBER_SLOT, EventDraft

    spelled = f'"number":{NUMBER_SLOT}'
    body = f'{{"id":"ord_1",{spelled},"notes":{json.dumps(spelled)}}}'
    text = '{"event":"order.created","order":' + body + "}"
    draft = EventDraft({"order": {"number": NUMBER_SLOT}}, [{"payload": text}, {"payload": text}], body)
    draft.numbered(7)
    assert json.loads(draft.body_text) == {"id": "ord_1", "number": 7, "notes": spelled}
    assert [json.loads(r["payload"])["order"]["number"] for r in draft.rows] == [7, 7]
    assert json.loads(draft.rows[0]["payload"])["order"]["notes"] == spelled
    assert draft.payload["order"]["number"] == 7
    with pytest.raises(ValueError):  # a text without the placeholder: never published numberless
        EventDraft({"order": {}}, [], '{"id":"ord_2"}').numbered(8)
