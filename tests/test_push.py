"""Web Push to the courier app (issue 19 item 6), our side of the protocol.

A push service of the test's own (tests/push_endpoint.py: a real HTTP server on an
ephemeral port) checks each push's VAPID JWT (ES256, aud, exp, sub) and decrypts its body
(RFC 8291) with the subscription's private key. The relay runs for real against the
embedded broker and the test's SQLite file; agents' presence comes from real paho clients.
"""

from __future__ import annotations

import os
import stat
import time

import pytest

from order_service.api.app import create_app
from order_service.push import keys
from tests.dispatch_helpers import Device, offer, wait_presence
from tests.helpers import assert_problem, assign, wait_until, walk_to
from tests.push_endpoint import PushService

API = "/api/v1"


@pytest.fixture
def settings_overrides(settings_overrides: dict) -> dict:
    # The test's push service listens on http://127.0.0.1 (https only otherwise).
    return {**settings_overrides, "push_allow_insecure_endpoints": True, "push_poll_seconds": 0.2}


@pytest.fixture
def push_service(client):
    public_key = client.get(f"{API}/push/key").json["public_key"]
    with PushService(public_key) as service:
        yield service
        assert service.errors == []  # every push that came was well signed and decryptable


def subscribe(client, agent, info: dict, device_id: str = "phone-1"):
    return client.post(
        f"{API}/agents/{agent.agent_id}/push-subscriptions",
        json={"device_id": device_id, "subscription": info},
        headers=agent.headers,
    )


def devices(client, actor, agent) -> list[dict]:
    response = client.get(f"{API}/agents/{agent.agent_id}/push-subscriptions", headers=actor.headers)
    assert response.status_code == 200, response.json
    return response.json["subscriptions"]


def assigned_order(client, admin, place_order, agent, address: str) -> tuple[dict, float]:
    """A new order assigned to ``agent``; (the order, when the assignment was answered)."""
    order = walk_to(
        client,
        admin,
        place_order(customer={"name": "Ann", "phone": "+1 555 0101", "address": address})["id"],
        "confirmed",
    )
    response = assign(client, admin, order["id"], agent.agent_id)
    assert response.status_code == 200, response.json
    return order, time.monotonic()


def no_push_for(service: PushService, order_id: str, then: float = 0) -> list:
    return [p for p in list(service.received.queue) if p.body["order_id"] == order_id and p.at >= then]


def test_a_disconnected_agent_gets_a_signed_encrypted_push_and_a_connected_one_none(
    client, admin, make_agent, place_order, broker, relay, push_service
):
    agent = make_agent()
    _browser, info = push_service.subscribe("courier-a")
    saved = subscribe(client, agent, info)
    assert saved.status_code == 201, saved.json
    assert saved.json["endpoint_origin"] == push_service.origin and saved.json["device_id"] == "phone-1"

    # Never connected (no presence at all): the assignment is pushed.
    order, assigned_at = assigned_order(client, admin, place_order, agent, "12 Elm Road")
    push = push_service.wait()
    latency_ms = (push.at - assigned_at) * 1000
    assert push.path == "/push/courier-a"
    assert push.body == {
        "kind": "assigned",
        "agent_id": agent.agent_id,
        "order_id": order["id"],
        "number": order["number"],
        "title": f"New order #{order['number']}"
        if order["number"] is not None
        else f"New order {order['id']}",
        "body": "12 Elm Road",
    }
    assert push.claims["sub"] == "mailto:admin@localhost"
    assert int(push.headers["ttl"]) == 600 and push.headers["urgency"] == "high"
    print(f"push at the push service {latency_ms:.0f} ms after the assignment was answered")

    # Connected: nothing is pushed...
    device = Device(broker, agent.agent_id)
    try:
        device.online()
        wait_presence(client, admin, agent.agent_id, "online")
        quiet, _ = assigned_order(client, admin, place_order, agent, "3 Quiet Lane")
        # ...positive control: once the device says it is offline, the next one is pushed.
        device.offline()
        wait_presence(client, admin, agent.agent_id, "offline")
        loud, _ = assigned_order(client, admin, place_order, agent, "4 Loud Street")
        push = push_service.wait()
        assert push.body["order_id"] == loud["id"]  # the one made while online never came
        assert push_service.received.empty()
        assert no_push_for(push_service, quiet["id"]) == []
    finally:
        device.close()
    sent = devices(client, agent, agent)[0]
    assert sent["last_status"] == 201 and sent["last_sent_at"] is not None


def test_an_offer_is_pushed_and_accepting_it_is_not_pushed_again(
    client, admin, make_agent, place_order, relay, push_service
):
    agent = make_agent()
    _browser, info = push_service.subscribe("courier-offer")
    assert subscribe(client, agent, info).status_code == 201
    order = walk_to(client, admin, place_order()["id"], "confirmed")
    assert offer(client, admin, order["id"], agent, expires_in_seconds=600).status_code == 200
    push = push_service.wait()
    assert (push.body["kind"], push.body["order_id"]) == ("offer", order["id"])
    assert push.body["title"].startswith("Offer: order ")

    response = client.post(f"{API}/orders/{order['id']}/offer/accept", headers=agent.headers)
    assert response.status_code == 200, response.json
    # Positive control in the same stream: a later new assignment is pushed, the accept was not.
    later, _ = assigned_order(client, admin, place_order, agent, "9 After Road")
    push = push_service.wait()
    assert (push.body["kind"], push.body["order_id"]) == ("assigned", later["id"])


def test_a_410_from_the_push_service_deletes_the_subscription(
    client, admin, make_agent, place_order, relay, push_service
):
    agent = make_agent()
    _gone, gone_info = push_service.subscribe("gone")
    _kept, kept_info = push_service.subscribe("kept")
    push_service.answers["/push/gone"] = 410
    assert subscribe(client, agent, gone_info, "old-phone").status_code == 201
    assert subscribe(client, agent, kept_info, "new-phone").status_code == 201
    assert len(devices(client, admin, agent)) == 2

    assigned_order(client, admin, place_order, agent, "1 Gone Street")
    paths = {push_service.wait().path, push_service.wait().path}
    assert paths == {"/push/gone", "/push/kept"}  # both were sent to
    left = wait_until(
        lambda: [d["device_id"] for d in devices(client, admin, agent)] == ["new-phone"],
        20,
        "the 410 subscription deleted",
    )
    assert left
    # And it is not sent to again.
    order, _ = assigned_order(client, admin, place_order, agent, "2 Kept Street")
    push = push_service.wait()
    assert (push.path, push.body["order_id"]) == ("/push/kept", order["id"])
    assert push_service.received.empty()


def test_a_failing_push_service_is_tried_again_a_bounded_number_of_times(
    client, admin, make_agent, place_order, relay, push_service
):
    """A 503 then a 201: delivered on the second try. Always 500: three tries
    (ORDERBUS_PUSH_ATTEMPTS); the subscription stays (only 404/410 remove it)."""
    agent = make_agent()
    _flaky, flaky_info = push_service.subscribe("flaky")
    push_service.answers["/push/flaky"] = [503, 201]
    assert subscribe(client, agent, flaky_info, "flaky").status_code == 201
    order, _ = assigned_order(client, admin, place_order, agent, "5 Retry Road")
    first, second = push_service.wait(), push_service.wait()
    assert first.body == second.body and first.body["order_id"] == order["id"]
    wait_until(lambda: devices(client, agent, agent)[0]["last_status"] == 201, 20, "delivered on retry")

    push_service.answers["/push/flaky"] = [500]
    order, _ = assigned_order(client, admin, place_order, agent, "6 Broken Road")
    tries = [push_service.wait() for _ in range(3)]
    assert {t.body["order_id"] for t in tries} == {order["id"]}
    # The subscription survived the failures: the next order reaches it.
    push_service.answers["/push/flaky"] = [201]
    later, _ = assigned_order(client, admin, place_order, agent, "7 Fixed Road")
    assert push_service.wait().body["order_id"] == later["id"]
    assert [d["device_id"] for d in devices(client, agent, agent)] == ["flaky"]


def test_the_vapid_key_is_made_once_private_and_a_set_one_is_used(client, data_dir, settings_overrides):
    first = client.get(f"{API}/push/key")
    assert first.status_code == 200 and len(keys.b64url_decode(first.json["public_key"])) == 65
    assert client.get(f"{API}/push/key").json == first.json  # no login needed, same key
    path = data_dir / keys.KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = create_app(settings_overrides).test_client().get(f"{API}/push/key")
    assert again.json == first.json  # another process reads the same file

    from cryptography.hazmat.primitives.asymmetric import ec

    number = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
    given = create_app({**settings_overrides, "vapid_private_key": keys.b64url(number)})
    key = given.test_client().get(f"{API}/push/key").json["public_key"]
    assert key != first.json["public_key"]
    assert key == keys.public_key(given.config["ORDERBUS"])


def _valid_info(service: PushService, name: str = "x") -> dict:
    return service.subscribe(name)[1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "http://push.example.com/x"}, "subscription.endpoint"),
        ({"endpoint": "https://10.0.0.7/x"}, "subscription.endpoint"),
        ({"endpoint": "https://localhost/x"}, "subscription.endpoint"),
        ({"endpoint": "https://user:pw@push.example.com/x"}, "subscription.endpoint"),
        ({"endpoint": "http://192.0.2.1/x"}, "subscription.endpoint"),
        ({"endpoint": "https://push.example.com/" + "a" * 1100}, "subscription.endpoint"),
        ({"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "subscription.keys.p256dh"),
        ({"keys": {"p256dh": "BA" + "A" * 85, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "subscription.keys.p256dh"),
    ],
)
def test_bad_subscriptions_are_refused_naming_the_field(client, make_agent, push_service, change, field):
    agent = make_agent()
    info = {**_valid_info(push_service), **change}
    assert_problem(subscribe(client, agent, info), 422, field)
    assert devices(client, agent, agent) == []


def test_bad_auth_secret_and_device_id(client, make_agent, push_service):
    agent = make_agent()
    info = _valid_info(push_service)
    info["keys"] = {**info["keys"], "auth": "AAAA"}
    assert_problem(subscribe(client, agent, info), 422, "subscription.keys.auth")
    assert_problem(subscribe(client, agent, _valid_info(push_service, "y"), "a/b"), 422)
    assert devices(client, agent, agent) == []


def test_only_the_agent_itself_subscribes_and_each_agent_keeps_its_newest_devices(
    client, admin, make_agent, push_service
):
    agent, other = make_agent(), make_agent()
    info = _valid_info(push_service, "mine")
    for stranger in (other, admin):  # another agent, an admin: neither stores an agent's device
        response = client.post(
            f"{API}/agents/{agent.agent_id}/push-subscriptions",
            json={"device_id": "d", "subscription": info},
            headers=stranger.headers,
        )
        assert_problem(response, 403)
    assert (
        client.get(f"{API}/agents/{agent.agent_id}/push-subscriptions", headers=other.headers).status_code
        == 403
    )
    for n in range(7):
        assert subscribe(client, agent, _valid_info(push_service, f"d{n}"), f"device-{n}").status_code == 201
    kept = sorted(d["device_id"] for d in devices(client, admin, agent))
    assert kept == [f"device-{n}" for n in range(2, 7)]  # the newest 5 (ORDERBUS_PUSH_DEVICES_PER_AGENT)

    # The same device again replaces its row; the same endpoint moves to the agent who sent it.
    again = _valid_info(push_service, "shared")
    assert subscribe(client, agent, again, "device-6").status_code == 201
    assert len(devices(client, admin, agent)) == 5
    assert subscribe(client, other, again, "their-phone").status_code == 201
    assert "device-6" not in [d["device_id"] for d in devices(client, admin, agent)]
    assert [d["device_id"] for d in devices(client, admin, other)] == ["their-phone"]

    gone = client.delete(
        f"{API}/agents/{agent.agent_id}/push-subscriptions?device_id=device-5", headers=agent.headers
    )
    assert gone.status_code == 204
    assert "device-5" not in [d["device_id"] for d in devices(client, admin, agent)]
    again = client.delete(
        f"{API}/agents/{agent.agent_id}/push-subscriptions?device_id=device-5", headers=agent.headers
    )
    assert again.status_code == 204
    assert_problem(
        client.delete(f"{API}/agents/{agent.agent_id}/push-subscriptions?device_id=x", headers=other.headers),
        403,
    )
