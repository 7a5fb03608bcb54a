"""The ACL on the NATS cluster: the logins and rules the service writes from its database
(order_service/accounts/nats_logins.py), enforced by every node.

A real three-node cluster (JetStream, MQTT) on free ports, the relay and the API on it,
paho devices on different nodes: an agent reads its own topics and not another's
(SUBACK 0x80), its publish to ``orders/#`` is acknowledged and dropped, its presence goes
through; a customer reads its own feed only; a wrong password is refused.
"""

from __future__ import annotations

import pytest

from clients.rest import Api
from tests.cluster_fixtures import Device, bridge_login, running_cluster

pytestmark = pytest.mark.timeout(240)
cluster_system = pytest.fixture(scope="module")(running_cluster)

REFUSED = 0x80


def test_agent_reads_its_own_topics_on_any_node_and_not_another_agents(cluster_system):
    system = cluster_system
    mine, other = system.make_agent(), system.make_agent()
    urls = system.cluster.mqtt_urls
    device = Device(urls[1], mine["mqtt"]["username"], mine["mqtt"]["password"]).start()
    try:
        assert device.connected.is_set(), device.connack
        assert device.subscribe(f"agents/{mine['id']}/assigned") in (0, 1)
        assert device.subscribe("catalog") in (0, 1)
        assert device.subscribe(f"agents/{other['id']}/assigned") == REFUSED
        assert device.subscribe("orders/#") == REFUSED
        assert device.subscribe("agents/+/assigned") == REFUSED
        # Positive control: the relay (on node 1) publishes the worklist, the device (node 2) gets it.
        order = system.ready_order()
        system.assign(order["id"], mine["id"])
        device.wait_for(f"agents/{mine['id']}/assigned", timeout=20, contains=order["id"].encode())
        assert all(m.topic != f"agents/{other['id']}/assigned" for m in device.drain())
        assert device.disconnects == 0
    finally:
        device.stop()


def test_agent_publish_to_orders_is_dropped_its_presence_goes_through(cluster_system):
    system = cluster_system
    agent = system.make_agent()
    urls = system.cluster.mqtt_urls
    username, secret = bridge_login(system)
    observer = Device(urls[2], username, secret).start()
    device = Device(urls[1], agent["mqtt"]["username"], agent["mqtt"]["password"]).start()
    try:
        assert observer.subscribe("orders/#") in (0, 1)
        assert observer.subscribe(f"agents/{agent['id']}/presence") in (0, 1)
        forged = "orders/ord_forged/status"
        device.publish(forged, b'{"forged": true}', retain=True)  # acknowledged, and dropped
        device.publish(f"agents/{agent['id']}/presence", b"online")  # the positive control
        observer.wait_for(f"agents/{agent['id']}/presence", payload=b"online")
        assert all(m.topic != forged for m in observer.drain())
        # A new subscriber finds nothing retained there either (and the control's retained
        # catalog or nothing: the forged message never reached a stream).
        late = Device(urls[0], *bridge_login(system, "socketio")).start()
        try:
            assert late.subscribe(forged) in (0, 1)
            assert late.subscribe(f"agents/{agent['id']}/presence") in (0, 1)
            device.publish(f"agents/{agent['id']}/presence", b"online again")
            late.wait_for(f"agents/{agent['id']}/presence", payload=b"online again")
            assert all(m.topic != forged for m in late.drain())
        finally:
            late.stop()
        assert device.disconnects == 0 and device.connected.is_set()
    finally:
        device.stop()
        observer.stop()


def test_customer_reads_its_own_feed_only(cluster_system):
    system = cluster_system
    mine, other = system.make_customer(), system.make_customer()
    login = Api(system.api_url).login(mine["username"], mine["password"])["mqtt"]
    other_id = Api(system.api_url).login(other["username"], other["password"])["user"]["id"]
    device = Device(system.cluster.mqtt_urls[2], login["username"], login["password"]).start()
    try:
        assert device.connected.is_set(), device.connack
        assert device.subscribe(login["topics"]["orders"]) in (0, 1)
        assert device.subscribe(f"customers/{other_id}/orders") == REFUSED
        assert device.subscribe("orders/#") == REFUSED
    finally:
        device.stop()


def test_a_wrong_secret_is_refused_and_the_right_one_accepted(cluster_system):
    agent = cluster_system.make_agent()
    url = cluster_system.cluster.mqtt_urls[0]
    wrong = Device(url, agent["mqtt"]["username"], "not-the-secret").start()
    right = Device(url, agent["mqtt"]["username"], agent["mqtt"]["password"]).start()
    try:
        assert wrong.connack is not None and wrong.connack.is_failure
        assert right.connected.is_set(), right.connack
    finally:
        wrong.stop()
        right.stop()


def test_a_dashboard_reads_orders_over_websocket_on_any_node_but_no_raw_positions(cluster_system):
    system = cluster_system
    login = system.admin.request("POST", "/auth/mqtt-credentials")
    assert len(login["urls"]) == 3 and login["urls"] == system.cluster.ws_urls
    page = Device(login["urls"][2], login["username"], login["password"]).start()
    try:
        assert page.connected.is_set(), page.connack
        assert page.subscribe("orders/#") in (0, 1)
        assert page.subscribe("agents/#") in (0, 1)
        agent = system.make_agent()
        device = Device(
            system.cluster.mqtt_urls[0], agent["mqtt"]["username"], agent["mqtt"]["password"]
        ).start()
        try:
            report = f"agents/{agent['id']}/location/report"
            device.publish(report, b'{"lat": 45.0, "lon": 9.0}')  # allowed to the agent, hidden from pages
            device.publish(f"agents/{agent['id']}/presence", b"online")  # the positive control
            page.wait_for(f"agents/{agent['id']}/presence", payload=b"online")
        finally:
            device.stop()
        order = system.ready_order("confirmed")
        page.wait_for(f"orders/{order['id']}/status", contains=order["id"].encode(), timeout=20)
        assert all(m.topic != report for m in page.drain())
        assert page.subscribe(report) == REFUSED
    finally:
        page.stop()
