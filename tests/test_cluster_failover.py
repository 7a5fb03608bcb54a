"""A client handed every node moves to a surviving one when its node dies (kill -9).

The agent's device (``clients.subscriber.Feed``, paho with a persistent session) is given
the login's ``urls``, every node's; it starts on node 1, which is also the relay's. After
``kill -9`` of node 1 both reconnect to another node by themselves, and the next worklist
change reaches the device. The node is then started again and answers MQTT.
"""

from __future__ import annotations

import signal
import time

import pytest

import contract
from clients.subscriber import Feed
from tests.cluster_fixtures import running_cluster

pytestmark = pytest.mark.timeout(300)
cluster_system = pytest.fixture(scope="module")(running_cluster)


def test_the_device_and_the_relay_move_to_a_surviving_node(cluster_system):
    system = cluster_system
    nats = system.cluster
    agent = system.make_agent()
    login = agent["mqtt"]
    assert login["urls"] == nats.mqtt_urls  # every node, node 1 first
    first = system.ready_order("confirmed")
    system.assign(first["id"], agent["id"])
    deadline = time.monotonic() + 15
    while True:  # the login reaches the nodes with their reload, a moment after the API answers
        feed = Feed(
            ",".join(login["urls"]),
            [contract.agent_assigned(agent["id"])],
            username=login["username"],
            password=login["password"],
            clean_session=False,
        )
        try:
            feed.start()
            break
        except Exception:
            assert time.monotonic() < deadline, "the new login was never accepted"
            time.sleep(0.3)
    try:

        def worklist_with(order_id: str, timeout: float) -> None:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                update = feed.get(timeout=max(0.1, end - time.monotonic()))
                if update is not None and update.kind == "worklist" and order_id in str(update.payload):
                    return
            relay = (system.tmp / "relay.log").read_text()[-1500:]
            raise AssertionError(
                f"no worklist with {order_id} within {timeout} s; the device on port {feed.client.port}"
                f" (nodes {[n.mqtt_port for n in nats.nodes]}), connected {feed.connected.is_set()}:\n{relay}"
            )

        worklist_with(first["id"], 20)  # the positive control, on node 1
        assert feed.client.port == nats.node(1).mqtt_port
        relay_log = system.tmp / "relay.log"
        connects = relay_log.read_text().count("relay connected to")
        nats.stop(1, signal.SIGKILL)
        killed = time.monotonic()
        second = system.ready_order("confirmed")
        system.assign(second["id"], agent["id"])
        worklist_with(second["id"], 60)
        moved = time.monotonic() - killed
        assert feed.connected.is_set() and feed.client.port != nats.node(1).mqtt_port
        assert relay_log.read_text().count("relay connected to") > connects
        print(f"\nkill -9 of node 1: the device had its next worklist from node ≠ 1 {moved:.1f} s later")
    finally:
        feed.stop()
    took = nats.start(1, timeout=90)
    print(f"node 1 started again and answered MQTT in {took:.1f} s")
