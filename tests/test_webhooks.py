"""Webhooks (issue #6): registration over REST, signed deliveries, retries, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.server import EmbeddedBroker
from order_service.config import load_settings
from order_service.webhooks import model as webhooks
from tests.helpers import assert_problem, wait_until
from tests.webhook_fixtures import BridgeRunner, Receiver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(fail_first: int = 0) -> Receiver:
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def settings_overrides(settings_overrides: dict) -> dict:
    """The receivers listen on 127.0.0.1: private addresses allowed (the default refuses them,
    tests/test_security_webhook_urls.py)."""
    return {**settings_overrides, "webhooks_allow_private": True}


@pytest.fixture
def webhook_settings(relay_settings: dict) -> dict:
    return {
        **relay_settings,
        "webhook_backoff_seconds": 0.2,
        "webhook_backoff_max_seconds": 1.0,
        "webhook_poll_seconds": 0.5,
        "webhook_timeout_seconds": 5,
    }


@pytest.fixture
def bridges(app, webhook_settings: dict):
    runner = BridgeRunner(webhook_settings)
    yield runner
    runner.stop_all()


def register(client, admin, url: str, events=("*",)) -> dict:
    response = client.post(
        "/api/v1/webhooks", json={"url": url, "events": list(events)}, headers=admin.headers
    )
    assert response.status_code == 201, response.json
    return response.json


def deliveries(client, admin, webhook_id: str) -> list[dict]:
    response = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=admin.headers)
    assert response.status_code == 200, response.json
    return response.json["deliveries"]


def test_registration_is_admin_only_and_refuses_non_http_urls(client, admin, make_agent):
    """Only admins register endpoints; a non-http(s) URL is a problem naming the field ``url``."""
    agent = make_agent()
    response = client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["*"]}, headers=agent.headers
    )
    assert_problem(response, 403)
    for url in ("ftp://example.test/x", "file:///etc/passwd", "not a url", "javascript:alert(1)"):
        response = client.post("/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=admin.headers)
        problem = assert_problem(response, 422)
        assert "url" in problem["detail"], problem
    response = client.post(
        "/api/v1/webhooks", json={"url": "https://example.test/x", "events": ["nope"]}, headers=admin.headers
    )
    assert_problem(response, 422, "events.0")
    created = register(client, admin, "https://example.test/x", ["order.created"])
    assert created["secret"].startswith("whsec_") and created["state"] == "active"
    listed = client.get("/api/v1/webhooks", headers=admin.headers).json["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0] or listed[0]["secret"] is None
    assert client.delete(f"/api/v1/webhooks/{created['id']}", headers=admin.headers).status_code == 204
    assert client.get(f"/api/v1/webhooks/{created['id']}", headers=admin.headers).status_code == 404


def test_each_event_arrives_once_with_a_valid_signature(client, admin, place_order, relay, bridges, receiver):
    """Every subscribed event is POSTed once, signed with the endpoint's secret, with its event id."""
    rx = receiver()
    hook = register(client, admin, rx.url, ["order.created", "order.status_changed"])
    bridges()
    order = place_order()
    response = client.patch(
        f"/api/v1/orders/{order['id']}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    hits = rx.delivered(2)[:2]
    # Positive control: a later event goes through the bridge's next steps; a duplicate of the
    # first two would have been sent before it (or with it, in event order).
    response = client.patch(
        f"/api/v1/orders/{order['id']}/status", json={"status": "preparing"}, headers=admin.headers
    )
    assert response.status_code == 200, response.json
    later = rx.delivered(3)[2]
    assert later.json["order"]["status"] == "preparing"
    assert len(rx.all) == 3
    assert [h.json["event"] for h in hits] == ["order.created", "order.status_changed"]
    assert all(h.json["order"]["id"] == order["id"] for h in hits)
    for hit in hits:
        assert webhooks.verify(hook["secret"], hit.body, hit.headers[webhooks.SIGNATURE_HEADER])
        assert hit.headers[webhooks.EVENT_ID_HEADER] == hit.json["event_id"]
        assert abs(int(hit.headers[webhooks.TIMESTAMP_HEADER]) - time.time()) < 60
    assert len({h.headers[webhooks.EVENT_ID_HEADER] for h in rx.all}) == 3
    log = wait_until(
        lambda: (d := deliveries(client, admin, hook["id"])) and all(x["state"] != "pending" for x in d) and d
    )
    assert sorted(d["state"] for d in log) == ["delivered"] * 3
    assert all(len(d["attempts"]) == 1 and d["attempts"][0]["status_code"] == 204 for d in log)


def test_a_wrong_signature_is_detected_by_the_documented_recipe(
    client, admin, place_order, bridges, receiver
):
    """The receiver's check fails for another secret, a tampered body or a missing header."""
    rx = receiver()
    hook = register(client, admin, rx.url, ["order.created"])
    bridges(mqtt=False)
    place_order()
    hit = rx.delivered(1)[0]
    header = hit.headers[webhooks.SIGNATURE_HEADER]
    assert header.startswith("sha256=")
    assert webhooks.verify(hook["secret"], hit.body, header)
    assert not webhooks.verify("whsec_someone-else", hit.body, header)
    assert not webhooks.verify(hook["secret"], hit.body.replace(b"Margherita", b"Marinara"), header)
    assert not webhooks.verify(hook["secret"], hit.body, None)


def test_fails_three_times_then_arrives_on_the_fourth_attempt(client, admin, place_order, bridges, receiver):
    """500, 500, 500, then 204: retried with backoff, every attempt logged and visible over REST."""
    rx = receiver(fail_first=3)
    hook = register(client, admin, rx.url, ["order.created"])
    bridges()
    place_order()
    hits = rx.delivered(1, timeout=15)
    assert [h.answered for h in rx.all] == [500, 500, 500, 204]
    assert len({h.headers[webhooks.EVENT_ID_HEADER] for h in rx.all}) == 1
    assert len({h.body for h in rx.all}) == 1
    assert webhooks.verify(hook["secret"], hits[0].body, hits[0].headers[webhooks.SIGNATURE_HEADER])
    (delivery,) = wait_until(
        lambda: [d for d in deliveries(client, admin, hook["id"]) if d["state"] != "pending"]
    )
    assert delivery["state"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 204]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3, 4]


def test_retries_stop_after_the_period_and_the_endpoint_is_marked_failing(
    client, admin, place_order, bridges, receiver
):
    """A delivery still failing when the retry period ends is failed; its endpoint shows failing."""
    rx = receiver(fail_first=1000)
    hook = register(client, admin, rx.url, ["order.created"])
    bridges(webhook_retry_seconds=1.0)
    place_order()
    endpoint = wait_until(
        lambda: (
            (e := client.get(f"/api/v1/webhooks/{hook['id']}", headers=admin.headers).json)["state"]
            == "failing"
            and e
        )
    )
    assert endpoint["failing_since"]
    (delivery,) = deliveries(client, admin, hook["id"])
    assert delivery["state"] == "failed" and len(delivery["attempts"]) >= 2
    assert all(a["status_code"] == 500 for a in delivery["attempts"])


def _bridge_process(webhook_settings: dict) -> subprocess.Popen:
    env = {
        **os.environ,
        "ORDERBUS_DATA_DIR": str(webhook_settings["data_dir"]),
        "ORDERBUS_DATABASE_URL": webhook_settings["database_url"],
        "ORDERBUS_MQTT_URL": webhook_settings["mqtt_url"],
        "ORDERBUS_WEBHOOK_BACKOFF_SECONDS": "2",
        "ORDERBUS_WEBHOOK_POLL_SECONDS": "0.5",
        "ORDERBUS_WEBHOOKS_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
        "ORDERBUS_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "order_service.webhooks"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_the_bridge_killed_mid_retry_delivers_after_restart(
    client, admin, place_order, webhook_settings, bridges, receiver
):
    """SIGKILL between a failed attempt and its retry: the restarted process delivers the event once."""
    rx = receiver(fail_first=1)
    hook = register(client, admin, rx.url, ["order.created"])
    place_order()
    proc = _bridge_process(webhook_settings)
    try:
        first = rx.next(timeout=15)
        assert first.answered == 500
        # Killed once the failure is logged and the retry is scheduled (2 s later).
        wait_until(lambda: [len(d["attempts"]) for d in deliveries(client, admin, hook["id"])] == [1])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Nothing sent while it is down (a stray POST of the killed process would also show below).
    assert len(rx.all) == 1
    proc = _bridge_process(webhook_settings)
    try:
        hit = rx.delivered(1, timeout=15)[0]
        assert hit.headers[webhooks.EVENT_ID_HEADER] == first.headers[webhooks.EVENT_ID_HEADER]
        # Positive control: a later event is delivered by the same process; a second POST of
        # the retried event would have come before it.
        later = place_order()
        assert rx.delivered(2, timeout=15)[1].json["order"]["id"] == later["id"]
        assert [h.answered for h in rx.all] == [500, 204, 204]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    retried = [
        d
        for d in deliveries(client, admin, hook["id"])
        if d["event_id"] == first.headers[webhooks.EVENT_ID_HEADER]
    ]
    assert [[a["status_code"] for a in d["attempts"]] for d in retried] == [[500, 204]]


def test_no_event_is_skipped_or_resent_across_restarts(client, admin, place_order, bridges, receiver):
    """Events committed while no bridge runs are delivered by the next one; nothing twice."""
    rx = receiver()
    register(client, admin, rx.url, ["order.created"])
    bridges(mqtt=False)
    place_order()
    rx.delivered(1)
    bridges.stop_all()
    ids = [place_order()["id"] for _ in range(3)]
    bridges(mqtt=False)
    hits = rx.delivered(4)[:4]
    # Positive control: a later event is delivered; a resent one would have come before it.
    later = place_order()
    assert rx.delivered(5)[4].json["order"]["id"] == later["id"]
    assert len(rx.all) == 5
    assert [h.json["order"]["id"] for h in hits[1:]] == ids


def test_the_bridge_keeps_working_across_a_broker_restart(
    client, admin, place_order, app, webhook_settings, receiver, start_relay
):
    """The bridge logs in with its read-only account on a secured broker and survives a restart."""
    settings = load_settings(webhook_settings)
    runner = BridgeRunner(webhook_settings)  # issues the bridge login and writes the files
    broker = EmbeddedBroker(
        password_file=settings.mqtt_password_path, acl_file=settings.mqtt_acl_path, port=0
    )
    broker.start()
    port = broker.port
    try:
        rx = receiver()
        register(client, admin, rx.url, ["order.created"])
        url = f"mqtt://127.0.0.1:{port}"
        bridge = runner(mqtt_url=url, webhook_poll_seconds=30)
        assert wait_until(lambda: bridge.feed is not None and bridge.feed.connected.is_set())
        start_relay(mqtt_url=url)
        place_order()
        rx.delivered(1, timeout=5)  # woken by MQTT: the poll period is 30 s
        broker.stop()
        assert wait_until(lambda: not bridge.feed.connected.is_set())
        broker = EmbeddedBroker(
            password_file=settings.mqtt_password_path, acl_file=settings.mqtt_acl_path, port=port
        )
        broker.start()
        assert wait_until(lambda: bridge.feed.connected.is_set(), timeout=15)
        place_order()
        rx.delivered(2, timeout=15)
    finally:
        runner.stop_all()
        start_relay.stop_all()
        broker.stop()


def test_a_name_resolving_to_a_private_address_is_not_connected_to(
    client, admin, place_order, bridges, receiver
):
    """A host name is checked where the worker connects: ``localhost`` leads to the receiver
    on 127.0.0.1 (registered while private addresses were allowed); a worker that does not
    allow them fails the attempt without connecting, naming the address. Control: one that
    allows them delivers the same event."""
    target = receiver()
    registered = register(client, admin, target.url.replace("127.0.0.1", "localhost"))
    bridges(mqtt=False, webhooks_allow_private=False)
    place_order()
    tried = wait_until(lambda: [d for d in deliveries(client, admin, registered["id"]) if d["attempts"]])
    error = tried[0]["attempts"][0]["error"]
    assert "127.0.0.1" in error and "ORDERBUS_WEBHOOKS_ALLOW_PRIVATE" in error, error
    assert target.hits.empty()
    bridges.stop_all()
    bridges(mqtt=False)
    assert target.next(timeout=15).json["event"] == "order.created"
