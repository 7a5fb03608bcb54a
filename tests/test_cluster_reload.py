"""Login changes on the NATS cluster, with the auth callout (the default).

The API writes the callout's ``<data_dir>/nats/logins.json`` from the database before it
answers; when a login goes away or changes it also writes a new revision into
``users.conf`` and signals every node (SIGHUP), as it signals Mosquitto. Here: a new
agent's login is accepted on every node at its first CONNECT, with no reload; a
deactivated agent's is refused; and while orders stream and devices are connected, a dozen
reloads (half sent by the service, for deactivated agents, half by the test) drop no node,
no device, no relay connection and no order's retained state.
"""

from __future__ import annotations

import threading
import time

import pytest

from harness.cluster import cluster_env, settings_of
from order_service.accounts import nats_logins
from tests.cluster_fixtures import Device, bridge_login, connect_until_accepted, running_cluster

pytestmark = pytest.mark.timeout(300)
cluster_system = pytest.fixture(scope="module")(running_cluster)


def reloads(system, index: int) -> int:
    return system.cluster.log(index).count("Reloaded server configuration")


def test_only_a_login_gone_changed_or_unknown_asks_the_nodes_to_reload(tmp_path):
    settings = settings_of(cluster_env(tmp_path / "var", 3))
    one = ("agent-1", nats_logins.hash_secret("s1"), ("read agents/1/#",))
    two = ("agent-2", nats_logins.hash_secret("s2"), ("read agents/2/#",))
    write = lambda *logins: nats_logins.write(settings, logins, None)  # noqa: E731
    assert write(one) is False  # the first file: nothing to cut off
    assert write(one, two) is False  # a login added: the callout admits it from logins.json
    assert '"user": "agent-2"' in nats_logins.logins_path(settings).read_text()
    assert write(one, two) is False  # nothing changed
    assert write(one, (two[0], two[1], ("read agents/#",))) is True  # new rules
    assert write(one) is True  # a login gone
    nats_logins.logins_path(settings).write_text("{not json")
    assert write(one) is True  # what the nodes hold is unknown: reload


def test_a_new_login_is_accepted_on_every_node_at_once_without_a_reload(cluster_system):
    system = cluster_system
    before = [reloads(system, n.index) for n in system.cluster.nodes]
    agent = system.make_agent()
    for node in system.cluster.nodes:  # the first CONNECT, right after the API answered
        device = Device(node.mqtt_url, agent["mqtt"]["username"], agent["mqtt"]["password"]).start()
        try:
            assert device.connected.is_set(), f"node {node.index}: {device.connack}"
            assert device.subscribe(f"agents/{agent['id']}/assigned") in (0, 1)
        finally:
            device.stop()
    after = [reloads(system, n.index) for n in system.cluster.nodes]
    assert after == before


def test_a_deactivated_agent_is_refused_after_the_reload(cluster_system):
    system = cluster_system
    agent = system.make_agent()
    url = system.cluster.mqtt_urls[2]
    device = connect_until_accepted(url, agent["mqtt"]["username"], agent["mqtt"]["password"])
    assert device.connected.is_set(), device.connack  # the positive control
    device.stop()
    system.admin.request("PATCH", f"/agents/{agent['id']}", {"active": False})
    deadline = time.monotonic() + 15
    while True:
        again = Device(url, agent["mqtt"]["username"], agent["mqtt"]["password"]).start()
        again.stop()
        refused = again.connack is not None and again.connack.is_failure
        # Accepted: the reload is still to come. No CONNACK at all (the node closed the
        # connection while its callout was busy, seen once in CI) says nothing yet: again.
        if refused or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert refused, (again.connack, again.connected.is_set())


def test_reloads_under_load_drop_no_node_no_device_and_no_message(cluster_system):
    system = cluster_system
    nats = system.cluster
    urls = nats.mqtt_urls
    agent = system.make_agent()
    device = connect_until_accepted(urls[1], agent["mqtt"]["username"], agent["mqtt"]["password"])
    observer = Device(urls[2], *bridge_login(system)).start()
    relay_connects = (system.tmp / "relay.log").read_text().count("relay connected to")
    before = [reloads(system, n.index) for n in nats.nodes]
    orders: dict[str, int] = {}
    failures: list[BaseException] = []

    def stream() -> None:  # 40 orders, each created and confirmed, while the cluster reloads
        try:
            for _ in range(40):
                order = system.ready_order("confirmed")
                orders[order["id"]] = order["version"]
        except BaseException as exc:  # noqa: BLE001 - reported in the test thread
            failures.append(exc)

    try:
        assert device.connected.is_set(), device.connack
        assert device.subscribe(f"agents/{agent['id']}/assigned") in (0, 1)
        assert observer.subscribe("orders/+/status") in (0, 1)
        writer = threading.Thread(target=stream)
        writer.start()
        for _ in range(6):
            # a login gone: the service writes a new revision and reloads every node
            gone = system.make_agent()
            system.admin.request("PATCH", f"/agents/{gone['id']}", {"active": False})
            nats.reload()  # and one more from outside, as an operator would
        writer.join(120)
        assert not writer.is_alive() and not failures, failures
        order = next(iter(orders))
        system.assign(order, agent["id"])  # the device, connected all along, still gets its worklist
        device.wait_for(f"agents/{agent['id']}/assigned", contains=order.encode(), timeout=20)
        for order_id, version in orders.items():
            observer.wait_for(
                f"orders/{order_id}/status", contains=f'"version":{version}'.encode(), timeout=20
            )
        after = [reloads(system, n.index) for n in nats.nodes]
        counted = [a - b for a, b in zip(after, before, strict=True)]
        print(f"\nreloads per node: {counted}, orders: {len(orders)}")
        assert all(a - b >= 6 for a, b in zip(after, before, strict=True)), (before, after)
        assert device.disconnects == 0 and observer.disconnects == 0
        assert all(proc.poll() is None for proc in nats.procs.values())
        assert (system.tmp / "relay.log").read_text().count("relay connected to") == relay_connects
    finally:
        device.stop()
        observer.stop()
