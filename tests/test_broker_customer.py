"""A customer's broker login on both brokers (the embedded one and Mosquitto): it reads its
own feed (``customers/<its user id>/orders``) and ``catalog``, nothing else, and writes
nothing. Every login here is one the REST API issued; both brokers read the same files."""

from __future__ import annotations

import pytest

from tests import both_brokers, test_broker_security
from tests.mqtt_raw import RawClient
from tests.test_broker_security import Client, Target, login_accepted, service

broker_kind = both_brokers.broker_kind
settings_overrides = both_brokers.settings_overrides
target = test_broker_security.target
connect = test_broker_security.connect

OWN_AND_CATALOG = 2  # subscriptions a customer may hold


def _page(client, customer) -> dict:
    """One more broker login for this customer (another shop page)."""
    response = client.post("/api/v1/auth/mqtt-credentials", headers=customer.headers)
    assert response.status_code == 201, response.json
    return response.json


def _topics(watcher: Client) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in watcher.messages]


def test_a_customer_reads_only_its_own_feed_and_the_catalog(target: Target, client, connect, make_customer):
    one, two = make_customer(), make_customer()
    mine, theirs = f"customers/{one.user_id}/orders", f"customers/{two.user_id}/orders"
    feed = connect(*service(target))
    # Retained state of everyone, before any customer subscribes.
    for topic in (theirs, mine, "orders/new", "orders/o_1/status", "agents/a_1/assigned", "catalog"):
        feed.publish(topic, b'{"retained": "%s"}' % topic.encode(), retain=True)
    assert login_accepted(target, one.mqtt["username"], one.mqtt["password"])
    shop = connect(one.mqtt["username"], one.mqtt["password"], ws=True)  # a shop page: WebSocket
    assert shop.ok
    assert shop.subscribe(mine, "catalog") == [1, 1]
    prying = _page(client, one)
    assert login_accepted(target, prying["username"], prying["password"])
    nosy = connect(prying["username"], prying["password"])
    granted = nosy.subscribe(theirs, "orders/#", "agents/#", "orderbus/relay/epoch", "catalog")
    assert granted[-1] == 1
    if target.kind == "amqtt":  # Mosquitto grants every SUBSCRIBE and filters delivery
        assert granted[:-1] == [0x80] * 4
    wide = _page(client, one)
    assert login_accepted(target, wide["username"], wide["password"])
    everything = connect(wide["username"], wide["password"])
    wide_granted = everything.subscribe("#")
    # Ours refuses a filter wider than the login's reading rights (0x80); Mosquitto grants it
    # and delivers only what the login may read.
    assert wide_granted == ([0x80] if target.kind == "amqtt" else [1])
    # Live messages; the catalog's comes last: a leaked message would have arrived before it.
    for topic in (theirs, "orders/new", "orders/o_1/status", "agents/a_1/assigned", mine):
        feed.publish(topic, b'{"live": "%s"}' % topic.encode())
    feed.publish("catalog", b'{"live": "catalog"}')
    for watcher in (shop, nosy, everything) if wide_granted == [1] else (shop, nosy):
        watcher.wait_for("catalog", payload=b'{"live": "catalog"}', timeout=10)
    retained_own = (mine, b'{"retained": "%s"}' % mine.encode())
    retained_catalog = ("catalog", b'{"retained": "catalog"}')
    live_own, live_catalog = (mine, b'{"live": "%s"}' % mine.encode()), ("catalog", b'{"live": "catalog"}')
    assert sorted(_topics(shop)) == sorted([retained_own, retained_catalog, live_own, live_catalog])
    assert sorted(_topics(nosy)) == sorted([retained_catalog, live_catalog])
    if target.kind == "mosquitto":
        assert sorted(_topics(everything)) == sorted([retained_own, retained_catalog, live_own, live_catalog])
    else:
        assert _topics(everything) == []


def test_a_customer_publishes_nothing(target: Target, client, connect, make_customer, admin):
    one, two = make_customer(), make_customer()
    mine, theirs = f"customers/{one.user_id}/orders", f"customers/{two.user_id}/orders"
    # Watchers that may read each topic: the customer's own other page, the other customer,
    # an admin's dashboard (orders/#, agents/#).
    own_page = _page(client, one)
    for login in (one.mqtt, own_page, two.mqtt, admin.mqtt):
        assert login_accepted(target, login["username"], login["password"])
    own_watch = connect(own_page["username"], own_page["password"])
    assert own_watch.subscribe(mine, "catalog") == [1, 1]
    their_watch = connect(two.mqtt["username"], two.mqtt["password"])
    assert their_watch.subscribe(theirs) == [1]
    board = connect(admin.mqtt["username"], admin.mqtt["password"], ws=True)
    assert board.subscribe("orders/#", "agents/#") == [1, 1]
    forger = connect(one.mqtt["username"], one.mqtt["password"], ws=True)
    assert forger.ok
    for topic in (mine, "catalog", theirs, "orders/new", "orders/o_1/status", "agents/a_1/presence"):
        forger.publish(topic, b'{"forged": true}', retain=True)
    # Positive controls from the service, published after the forged ones were acknowledged.
    feed = connect(*service(target))
    for topic in (mine, "catalog", theirs, "orders/o_1/status", "agents/a_1/assigned"):
        feed.publish(topic, b'{"marker": true}')
    own_watch.wait_for("catalog", payload=b'{"marker": true}', timeout=10)
    own_watch.wait_for(mine, payload=b'{"marker": true}', timeout=10)
    their_watch.wait_for(theirs, payload=b'{"marker": true}', timeout=10)
    board.wait_for("agents/a_1/assigned", payload=b'{"marker": true}', timeout=10)
    for watcher in (own_watch, their_watch, board):
        assert all(m.payload == b'{"marker": true}' for m in watcher.messages), _topics(watcher)
    assert len(own_watch.messages) == OWN_AND_CATALOG and len(their_watch.messages) == 1
    # Nor did the broker keep any forged message as retained state.
    late = connect(own_page["username"], own_page["password"], client_id="late")
    late.subscribe(mine, "catalog")
    feed.publish("catalog", b'{"after": true}')
    late.wait_for("catalog", payload=b'{"after": true}', timeout=10)
    assert not [m for m in late.messages if m.payload == b'{"forged": true}']


def test_a_customer_cannot_take_another_customers_session(target: Target, connect, make_customer):
    """The client id rule holds for customer logins: A connecting with B's client id (B's
    username) and clean session off gets a new session of its own, and B's queued message
    waits for B."""
    a, b = make_customer(), make_customer()
    topic = f"customers/{b.user_id}/orders"
    for login in (a.mqtt, b.mqtt):
        assert login_accepted(target, login["username"], login["password"])
    b_name, b_secret = b.mqtt["username"], b.mqtt["password"]
    device_b = RawClient(target.host, target.port)
    assert device_b.connect(b_name, username=b_name, password=b_secret, clean=False)[1] == 0
    assert device_b.subscribe((topic, 1)) == [1]
    device_b.disconnect()
    device_b.close()
    feed = connect(*service(target))
    feed.publish(topic, b'{"queued": "for b"}')  # QoS 1, not retained: only B's session holds it

    device_a = RawClient(target.host, target.port)
    present, rc = device_a.connect(
        b_name, username=a.mqtt["username"], password=a.mqtt["password"], clean=False
    )
    assert (present, rc) == (False, 0)  # its own, new session: none of B's
    with pytest.raises(TimeoutError):
        device_a.read_publish(1.0)
    device_a.disconnect()
    device_a.close()

    device_b = RawClient(target.host, target.port)
    present, rc = device_b.connect("any-id", username=b_name, password=b_secret, clean=False)
    assert (present, rc) == (True, 0), "B's session is gone"
    message = device_b.read_publish(5)
    device_b.close()
    assert (message.topic, message.payload) == (topic, b'{"queued": "for b"}')
