"""The MQTT contract (docs/asyncapi.yaml) and the payloads the real code produces."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections import defaultdict

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError

import contract
from order_service import lifecycle
from order_service.orders import events
from order_service.store.db import db
from order_service.store.models import Outbox
from tests import asyncapi

CHANNELS = {
    "orders/new": "ordersNew",
    "orders/{orderId}/status": "orderStatus",
    "agents/{agentId}/assigned": "agentAssigned",
    "agents/{agentId}/presence": "agentPresence",
    "orderbus/relay/epoch": "relayEpoch",
    "catalog": "catalog",
    "customers/{customerId}/orders": "customerOrders",
    "agents/{agentId}/location": "agentLocation",
    "agents/{agentId}/location/report": "agentLocationReport",
}
ORDER_ID = "ord_0123456789ab"
AGENT_ID = "agt_0123456789ab"
CUSTOMER_ID = "usr_0123456789ab"


# --- the document -------------------------------------------------------------


def test_document_is_asyncapi_3_with_the_nine_channels():
    """docs/asyncapi.yaml parses as YAML, declares AsyncAPI 3.x, the eight topics of the
    contract and the relay's own."""
    with asyncapi.SPEC_PATH.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert str(document["asyncapi"]).startswith("3.")
    addresses = {c["address"]: key for key, c in document["channels"].items()}
    assert addresses == CHANNELS
    assert document["channels"]["orderStatus"]["parameters"].keys() == {"orderId"}
    assert document["channels"]["agentAssigned"]["parameters"].keys() == {"agentId"}
    assert document["channels"]["agentPresence"]["parameters"].keys() == {"agentId"}


def test_servers_are_the_embedded_broker_over_tcp_and_websocket():
    """The embedded broker is reachable at mqtt://127.0.0.1:1883 and ws://127.0.0.1:9001/mqtt."""
    servers = asyncapi.spec()["servers"].values()
    found = {(s["protocol"], s["host"], s.get("pathname", "")) for s in servers}
    assert found == {("mqtt", "127.0.0.1:1883", ""), ("ws", "127.0.0.1:9001", "/mqtt")}
    assert all(s["protocolVersion"] == "3.1.1" for s in servers)


def test_every_publish_is_qos1_and_retained():
    """Every send operation is QoS 1 with retain (but the relay's probe, and a device's
    position reports: QoS 0, not retained); every receive subscribes with QoS 1."""
    operations = asyncapi.resolved()["operations"]
    assert {op["channel"]["address"] for op in operations.values()} == set(CHANNELS)
    for name, op in operations.items():
        mqtt = op["bindings"]["mqtt"]
        if name == "sendLocationReport":
            assert (mqtt["qos"], mqtt["retain"]) == (0, False)
            continue
        assert mqtt["qos"] == 1, name
        if op["action"] == "send":
            assert mqtt["retain"] is (name != "probeRelayEpoch"), name
    senders = {
        op["channel"]["address"]: {t["name"] for t in op["tags"]}
        for op in operations.values()
        if op["action"] == "send"
    }
    assert senders == {
        "orders/new": {"service"},
        "orders/{orderId}/status": {"service"},
        "agents/{agentId}/assigned": {"service"},
        "agents/{agentId}/presence": {"agent"},
        "orderbus/relay/epoch": {"service"},
        "catalog": {"service"},
        "customers/{customerId}/orders": {"service"},
        "agents/{agentId}/location": {"service"},
        "agents/{agentId}/location/report": {"agent"},
    }


def test_component_schemas_are_valid_draft_2020_12():
    """Every schema in components, and every resolved message payload, is a valid 2020-12 schema."""
    for name, schema in asyncapi.spec()["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as error:  # pragma: no cover - the message names the schema
            raise AssertionError(f"components/schemas/{name}: {error}") from error
    for name, message in asyncapi.resolved()["components"]["messages"].items():
        Draft202012Validator.check_schema(message["payload"])
        assert "$ref" not in json.dumps(message["payload"]), name


def test_document_examples_conform():
    """Each message example in the document validates against that message's payload schema."""
    messages = asyncapi.resolved()["components"]["messages"]
    for name, message in messages.items():
        validator = Draft202012Validator(message["payload"], format_checker=asyncapi.FORMAT_CHECKER)
        assert message.get("examples"), f"{name} has no example"
        for example in message["examples"]:
            validator.validate(example["payload"])


def test_contract_enumerations_match_the_code():
    """Statuses, event names and the payload schema version are the code's own."""
    schemas = asyncapi.spec()["components"]["schemas"]
    assert schemas["Status"]["enum"] == list(lifecycle.STATUSES)
    active = [s for s in lifecycle.STATUSES if s not in lifecycle.TERMINAL]
    assert schemas["ActiveStatus"]["enum"] == active
    assert schemas["OrderEvent"]["properties"]["event"]["enum"] == list(events.ORDER_EVENTS)
    assert schemas["OrderEvent"]["properties"]["schema"]["const"] == events.SCHEMA
    assert schemas["Worklist"]["properties"]["schema"]["const"] == events.SCHEMA
    assert schemas["CustomerOrders"]["properties"]["schema"]["const"] == events.SCHEMA


def test_topics_built_by_the_service_are_in_the_contract():
    """Every topic the contract builds maps to its channel's payload schema."""
    schemas = asyncapi.resolved()["components"]["schemas"]
    assert asyncapi.schema_for_topic(contract.ORDERS_NEW) == schemas["NewOrderEvent"]
    assert asyncapi.schema_for_topic(contract.order_status(ORDER_ID)) == schemas["OrderEvent"]
    assert asyncapi.schema_for_topic(contract.agent_assigned(AGENT_ID)) == schemas["Worklist"]
    assert asyncapi.schema_for_topic(contract.agent_presence(AGENT_ID)) == schemas["Presence"]
    assert asyncapi.schema_for_topic(contract.customer_orders(CUSTOMER_ID)) == schemas["CustomerOrders"]
    assert asyncapi.schema_for_topic(contract.RELAY_EPOCH) == {
        "oneOf": [schemas["RelayEpoch"], schemas["RelayProbe"]]
    }
    asyncapi.validate_message(contract.RELAY_EPOCH, contract.relay_epoch("0" * 32, 7))
    asyncapi.validate_message(contract.RELAY_EPOCH, contract.relay_probe("0" * 16))


# --- payloads produced by the real code --------------------------------------


@pytest.fixture
def outbox(client, admin, make_agent, place_order) -> list[Outbox]:
    """Outbox rows of a realistic run: create, confirm, assign, reassign, unassign,
    deliver one order, cancel another and reject a third."""

    def patch_status(order_id: str, status: str, actor=admin) -> None:
        response = client.patch(
            f"/api/v1/orders/{order_id}/status", json={"status": status}, headers=actor.headers
        )
        assert response.status_code == 200, response.json

    def assign(order_id: str, agent_id: str) -> None:
        response = client.put(
            f"/api/v1/orders/{order_id}/agent", json={"agent_id": agent_id}, headers=admin.headers
        )
        assert response.status_code == 200, response.json

    first, second = make_agent(), make_agent()
    delivered = place_order()["id"]
    patch_status(delivered, "confirmed")
    assign(delivered, first.agent_id)
    patch_status(delivered, "preparing")
    assign(delivered, second.agent_id)  # reassign: moves between worklists
    response = client.delete(f"/api/v1/orders/{delivered}/agent", headers=admin.headers)
    assert response.status_code == 200, response.json
    assign(delivered, second.agent_id)
    patch_status(delivered, "ready")
    patch_status(delivered, "picked_up", second)
    patch_status(delivered, "delivered", second)

    cancelled = place_order(
        items=[{"name": "Soup", "quantity": 1, "unit_price_cents": 0}], notes="", currency="EUR"
    )["id"]
    patch_status(cancelled, "confirmed")
    assign(cancelled, first.agent_id)
    patch_status(cancelled, "cancelled")

    patch_status(place_order()["id"], "rejected")

    with db.connection_context():
        return list(Outbox.select().order_by(Outbox.id))


def _decoded(outbox: list[Outbox]) -> list[tuple[str, dict]]:
    return [(row.topic, asyncapi.validate_message(row.topic, row.payload.encode())) for row in outbox]


def test_real_payloads_conform(outbox):
    """Every outbox row the real code writes (order events and worklists) validates."""
    decoded = _decoded(outbox)
    seen_events = {payload["event"] for _topic, payload in decoded}
    assert seen_events == {
        "order.created",
        "order.status_changed",
        "order.assigned",
        "order.unassigned",
        "agent.worklist",
    }
    channels = {asyncapi._match_channel(topic)[0] for topic, _payload in decoded}
    assert channels == {"ordersNew", "orderStatus", "agentAssigned"}
    statuses = {p["order"]["status"] for t, p in decoded if "order" in p}
    assert {"placed", "confirmed", "preparing", "ready", "picked_up", "delivered"} <= statuses
    assert {"cancelled", "rejected"} <= statuses


def test_real_versions_only_go_up(outbox):
    """Per order and per worklist, each message has a higher version than the one before,
    so a client keeping the highest version never drops a real change."""
    last: dict[tuple[str, str], int] = defaultdict(int)
    for topic, payload in _decoded(outbox):
        if topic == contract.ORDERS_NEW:
            assert payload["event"] == "order.created"
            assert payload["order"]["version"] == 1
            assert payload["order"]["status"] == "placed"
            continue
        key = (topic, payload["order"]["id"] if "order" in payload else payload["agent_id"])
        version = payload["order"]["version"] if "order" in payload else payload["version"]
        assert version > last[key], (topic, version, last[key])
        last[key] = version


def test_real_worklists_hold_every_active_order_of_their_agent(outbox):
    """A worklist holds exactly the agent's non-terminal orders, each with that agent_id;
    the last worklist after delivery and cancellation is empty."""
    current: dict[str, dict] = {}  # order id -> latest order state
    for topic, payload in _decoded(outbox):
        if "order" in payload:
            current[payload["order"]["id"]] = payload["order"]
            continue
        agent_id = payload["agent_id"]
        assert topic == contract.agent_assigned(agent_id)
        expected = sorted(
            o["id"]
            for o in current.values()
            if o["agent_id"] == agent_id and o["status"] not in lifecycle.TERMINAL
        )
        assert sorted(o["id"] for o in payload["orders"]) == expected
        for order in payload["orders"]:
            assert order == current[order["id"]]
    last = {}
    for topic, payload in _decoded(outbox):
        if topic.endswith("/assigned"):
            last[payload["agent_id"]] = payload
    assert len(last) == 2
    assert all(worklist["orders"] == [] for worklist in last.values())


def test_real_orders_are_consistent(outbox):
    """total_cents is the sum of the items; status_times has the current status; one
    event on orders/new and orders/<id>/status shares its event_id."""
    decoded = _decoded(outbox)
    for _topic, payload in decoded:
        for order in [payload["order"]] if "order" in payload else payload["orders"]:
            total = sum(i["quantity"] * i["unit_price_cents"] for i in order["items"])
            assert order["total_cents"] == total
            assert order["status"] in order["status_times"]
    new_ids = {p["event_id"] for t, p in decoded if t == contract.ORDERS_NEW}
    status_created = {
        p["event_id"] for t, p in decoded if t != contract.ORDERS_NEW and p["event"] == "order.created"
    }
    assert new_ids == status_created and len(new_ids) == 3


# --- what the contract refuses ------------------------------------------------


@pytest.fixture
def status_event(client, admin, make_agent, place_order) -> tuple[str, dict]:
    """A real order.assigned event on orders/<id>/status (topic, decoded JSON)."""
    agent = make_agent()
    order_id = place_order()["id"]
    response = client.patch(
        f"/api/v1/orders/{order_id}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    response = client.put(
        f"/api/v1/orders/{order_id}/agent", json={"agent_id": agent.agent_id}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    with db.connection_context():
        row = Outbox.get(Outbox.kind == "status", Outbox.event == "order.assigned")
    return row.topic, json.loads(row.payload)


def _encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_the_real_event_is_accepted(status_event):
    """The unmodified event is valid (so the failures below are due to the change made)."""
    topic, payload = status_event
    assert asyncapi.validate_message(topic, _encode(payload)) == payload


def test_missing_order_version_is_refused(status_event):
    """order.version is required."""
    topic, payload = status_event
    del payload["order"]["version"]
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


def test_version_below_one_is_refused(status_event):
    """order.version starts at 1."""
    topic, payload = status_event
    payload["order"]["version"] = 0
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


def test_unknown_status_is_refused(status_event):
    """order.status is one of the eight lifecycle statuses."""
    topic, payload = status_event
    payload["order"]["status"] = "shipped"
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


def test_unknown_event_is_refused(status_event):
    """event is one of the five order events."""
    topic, payload = status_event
    payload["event"] = "order.deleted"
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


@pytest.mark.parametrize("where", ["envelope", "order", "customer", "item", "status_times"])
def test_unexpected_field_is_refused(status_event, where):
    """Payloads are closed: an unexpected field anywhere is refused (status_times keys
    must be statuses)."""
    topic, payload = status_event
    target = {
        "envelope": payload,
        "order": payload["order"],
        "customer": payload["order"]["customer"],
        "item": payload["order"]["items"][0],
        "status_times": payload["order"]["status_times"],
    }[where]
    target["surprise"] = "2025-05-04T10:15:30.123Z"
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


@pytest.mark.parametrize(
    "timestamp", ["2025-05-04T10:15:30.123", "2025-05-04T10:15:30+02:00", "2025-02-30T10:15:30Z"]
)
def test_timestamp_must_be_utc_rfc3339(status_event, timestamp):
    """Timestamps are RFC 3339 in UTC, ending in Z, and real dates."""
    topic, payload = status_event
    payload["order"]["updated_at"] = timestamp
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


def test_wrong_currency_and_empty_items_are_refused(status_event):
    """currency is three upper-case letters; an order has at least one item."""
    topic, payload = status_event
    bad_currency = copy.deepcopy(payload)
    bad_currency["order"]["currency"] = "usd"
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(bad_currency))
    payload["order"]["items"] = []
    with pytest.raises(ValidationError):
        asyncapi.validate_message(topic, _encode(payload))


def test_worklist_with_terminal_order_is_refused(outbox):
    """A worklist holds only non-terminal orders."""
    row = next(r for r in outbox if r.kind == "worklist" and '"orders":[{' in r.payload)
    payload = json.loads(row.payload)
    payload["orders"][0]["status"] = "delivered"
    with pytest.raises(ValidationError):
        asyncapi.validate_message(row.topic, _encode(payload))


@pytest.mark.parametrize(
    "topic",
    [
        "orders/ord_0123456789ab/state",  # no such channel
        "orders/ord_0123456789ab",
        "order/new",
        "orders/new/extra",
        "orders/not-an-order/status",  # orderId of the wrong form
        "agents/+/assigned",  # a filter, not a concrete topic
        "",
    ],
)
def test_topic_not_in_the_contract_is_refused(status_event, topic):
    """Only the four channels exist, with ids of the documented form."""
    _topic, payload = status_event
    with pytest.raises(ValueError):
        asyncapi.validate_message(topic, _encode(payload))


def test_payload_on_another_channel_is_refused(status_event):
    """An order event is not a worklist or a presence, and the id in the topic is the
    id in the payload."""
    topic, payload = status_event
    for wrong in (contract.agent_assigned(AGENT_ID), contract.agent_presence(AGENT_ID)):
        with pytest.raises(ValidationError):
            asyncapi.validate_message(wrong, _encode(payload))
    with pytest.raises(ValidationError):
        asyncapi.validate_message(contract.order_status(ORDER_ID), _encode(payload))
    with pytest.raises(ValidationError):  # orders/new carries only order.created
        asyncapi.validate_message(contract.ORDERS_NEW, _encode(payload))


def test_empty_payload_means_cleared_only_on_order_topics():
    """An empty payload on orders/<id>/status or orders/new is the documented "cleared"
    message (None); anywhere else it is refused."""
    assert asyncapi.validate_message(contract.order_status(ORDER_ID), b"") is None
    assert asyncapi.validate_message(contract.ORDERS_NEW, b"") is None
    for topic in (contract.agent_assigned(AGENT_ID), contract.agent_presence(AGENT_ID)):
        with pytest.raises(ValueError):
            asyncapi.validate_message(topic, b"")


def test_non_json_payload_is_refused():
    """Non-empty payloads are UTF-8 JSON."""
    topic = contract.agent_presence(AGENT_ID)
    for payload in (b"online", b"\xff\xfe", b'{"agent_id": NaN}'):
        with pytest.raises(ValueError):
            asyncapi.validate_message(topic, payload)


def test_presence_payload():
    """Presence is {agent_id, state: online|offline, at}, and nothing else."""
    topic = contract.agent_presence(AGENT_ID)
    good = {"agent_id": AGENT_ID, "state": "offline", "at": "2025-05-04T10:15:30.123Z"}
    assert asyncapi.validate_message(topic, _encode(good)) == good
    for bad in (
        {**good, "state": "away"},
        {k: v for k, v in good.items() if k != "at"},
        {**good, "battery": 80},
    ):
        with pytest.raises(ValidationError):
            asyncapi.validate_message(topic, _encode(bad))


def test_the_presence_a_device_publishes_conforms():
    """contract.presence (what the agent device sends, and its last will) is a valid Presence."""
    topic = contract.agent_presence(AGENT_ID)
    for state in contract.PRESENCE_STATES:
        payload = contract.presence(AGENT_ID, state, "2025-05-04T10:15:30.123Z")
        assert asyncapi.validate_message(topic, payload)["state"] == state
    with pytest.raises(ValueError, match="away"):
        contract.presence(AGENT_ID, "away", "2025-05-04T10:15:30.123Z")


# --- the dashboard's copy: clients/admin/js/contract.js -----------------------------

CONTRACT_JS = asyncapi.REPO_ROOT / "clients" / "admin" / "js" / "contract.js"
# What the dashboard's copy builds for each channel, as a JavaScript expression.
JS_CHANNELS = {
    "ordersNew": "c.ORDERS_NEW",
    "orderStatus": "c.orderStatus(orderId)",
    "agentAssigned": "c.agentAssigned(agentId)",
    "agentPresence": "c.agentPresence(agentId)",
    "catalog": "c.CATALOG",
    "customerOrders": "c.customerOrders(customerId)",
    "agentLocation": "c.agentLocation(agentId)",
    "agentLocationReport": "c.agentLocationReport(agentId)",
}
PY_CHANNELS = {
    "ordersNew": lambda: contract.ORDERS_NEW,
    "orderStatus": lambda: contract.order_status(ORDER_ID),
    "agentAssigned": lambda: contract.agent_assigned(AGENT_ID),
    "agentPresence": lambda: contract.agent_presence(AGENT_ID),
    "catalog": lambda: contract.CATALOG,
    "customerOrders": lambda: contract.customer_orders(CUSTOMER_ID),
    "agentLocation": lambda: contract.agent_location(AGENT_ID),
    "agentLocationReport": lambda: contract.agent_location_report(AGENT_ID),
}
# The relay's own channel: only the service reads or writes it, so the dashboard's copy has none.
SERVICE_ONLY = {"relayEpoch": lambda: contract.RELAY_EPOCH}


def run_contract_js(body: str) -> object:
    """Evaluate ``body`` in node with contract.js imported as ``c``; return what it prints as JSON."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is required in CI to check the dashboard's contract.js")
        pytest.skip("node not installed: the dashboard's contract.js is not checked")
    program = f"import * as c from {json.dumps(CONTRACT_JS.as_uri())};\n{body}"
    result = subprocess.run(
        [node, "--input-type=module", "-e", program], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_dashboards_topics_are_the_asyncapi_channels():
    """Each channel of docs/asyncapi.yaml, with sample ids, is what contract.js and contract
    build for it (the service's own channel, contract alone); and contract.js builds no
    channel the document does not have."""
    channels = dict(asyncapi.spec()["channels"])
    for name, build in SERVICE_ONLY.items():
        assert channels.pop(name)["address"] == build()
    assert JS_CHANNELS.keys() == channels.keys() == PY_CHANNELS.keys()
    built = run_contract_js(
        f"const orderId = {json.dumps(ORDER_ID)}, agentId = {json.dumps(AGENT_ID)},"
        f" customerId = {json.dumps(CUSTOMER_ID)};\n"
        "console.log(JSON.stringify({"
        + ", ".join(f"{json.dumps(name)}: {expr}" for name, expr in JS_CHANNELS.items())
        + "}));"
    )
    for name, channel in channels.items():
        expected = (
            channel["address"]
            .replace("{orderId}", ORDER_ID)
            .replace("{agentId}", AGENT_ID)
            .replace("{customerId}", CUSTOMER_ID)
        )
        assert built[name] == expected == PY_CHANNELS[name](), name
        assert asyncapi.schema_for_topic(built[name]) is not None


TOPICS = [
    contract.ORDERS_NEW,
    contract.order_status(ORDER_ID),
    contract.agent_assigned(AGENT_ID),
    contract.agent_presence(AGENT_ID),
    contract.customer_orders(CUSTOMER_ID),
    "customers//orders",
    "customers/a/orders/x",
    "orders//status",
    "orders/a/b/status",
    "orders/a/assigned",
    "agents/a/status",
    "agents/a/presence/x",
    "other/a/presence",
    "",
]
MESSAGES = [
    (contract.ORDERS_NEW, {"order": {"id": ORDER_ID, "version": 1}}),
    (contract.order_status(ORDER_ID), {"order": {"id": ORDER_ID, "version": 7}}),
    (contract.order_status(ORDER_ID), {"order": {"id": ORDER_ID, "version": "7"}}),
    (contract.order_status(ORDER_ID), {"order": [1]}),
    (contract.order_status(ORDER_ID), {"event": "order.created"}),
    (contract.agent_assigned(AGENT_ID), {"event": "agent.worklist", "version": 3, "orders": []}),
    (contract.agent_assigned(AGENT_ID), {"event": "agent.worklist"}),
    (contract.agent_presence(AGENT_ID), {"agent_id": AGENT_ID, "state": "online"}),
    ("agents/a/b", {"version": 2}),
    (contract.customer_orders(CUSTOMER_ID), {"event": "customer.orders", "version": 4, "orders": []}),
    (contract.customer_orders(CUSTOMER_ID), {"event": "customer.orders"}),
]
# (version, held): held None means nothing held yet.
VERSIONS = [(1, None), (1, 1), (2, 1), (1, 2), (5, 4), (4, 4)]


def test_the_dashboards_contract_agrees_with_the_python_one():
    """Filters, topic parsers, classify and the version rule give the same answers in both."""
    inputs = json.dumps({"topics": TOPICS, "messages": MESSAGES, "versions": VERSIONS})
    js = run_contract_js(
        f"const input = {inputs};\n"
        "console.log(JSON.stringify({\n"
        "  filters: [c.ORDERS_ALL, c.AGENTS_ALL, c.AGENT_PRESENCE_FILTER, c.AGENT_ASSIGNED_FILTER,"
        " c.CUSTOMER_ORDERS_FILTER],\n"
        "  parsed: input.topics.map((t) => [c.orderFromStatusTopic(t), c.agentFromAssignedTopic(t),"
        " c.agentFromPresenceTopic(t), c.customerFromOrdersTopic(t)]),\n"
        "  classified: input.messages.map(([t, p]) => { const k = c.classify(t, p);"
        " return [k.kind, k.key, k.version]; }),\n"
        "  newer: input.versions.map(([v, held]) => c.isNewer(v, held)),\n"
        "}));"
    )
    assert js["filters"] == [
        contract.ORDERS_ALL,
        contract.AGENTS_ALL,
        contract.AGENT_PRESENCE_FILTER,
        contract.AGENT_ASSIGNED_FILTER,
        contract.CUSTOMER_ORDERS_FILTER,
    ]
    assert js["parsed"] == [
        [
            contract.order_from_status_topic(t),
            contract.agent_from_assigned_topic(t),
            contract.agent_from_presence_topic(t),
            contract.customer_from_orders_topic(t),
        ]
        for t in TOPICS
    ]
    assert [tuple(k) for k in js["classified"]] == [contract.classify(t, p) for t, p in MESSAGES]

    def python_newer(version: int, held: int | None) -> bool:
        gate = contract.VersionGate()
        if held is not None:
            gate.offer("key", held)
        return gate.offer("key", version)

    assert js["newer"] == [python_newer(v, held) for v, held in VERSIONS]
    assert js["newer"] == [True, False, True, False, True, False]  # the rule itself
