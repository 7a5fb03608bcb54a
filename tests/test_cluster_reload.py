"""Reloading the NATS cluster after a login change (SIGHUP to every node, sent by the service).

The API writes ``<data_dir>/nats/users.conf`` from the database and signals every node, as
it signals Mosquitto. Here: a new agent's login works on every node right after; a
deactivated agent's does not; and while orders stream and devices are connected, a dozen
reloads (half sent by the service, half by the test) drop no node, no device, no relay
connection and no order's retained state.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.cluster_fixtures import Device, bridge_login, running_cluster

pytestmark = pytest.mark.timeout(300)
cluster_system = pytest.fixture(scope="module")(running_cluster)


def reloads(system, index: int) -> int:
    return system.cluster.log(index).count("Reloaded server configuration")


def connect_until_accepted(url: str, username: str, password: str, timeout: float = 15.0) -> Device:
    """A device on ``url`` once the node accepts the login (a reload is asynchronous to the SIGHUP)."""
    deadline = time.monotonic() + timeout
    while True:
        device = Device(url, username, password).start()
        if device.connected.is_set() or time.monotonic() > deadline:
            return device
        device.stop()
        time.sleep(0.2)


def test_a_new_login_works_on_every_node_after_the_service_reloads_them(cluster_system):
    system = cluster_system
    before = [reloads(system, n.index) for n in system.cluster.nodes]
    agent = system.make_agent()
    for node in system.cluster.nodes:
        device = connect_until_accepted(node.mqtt_url, agent["mqtt"]["username"], agent["mqtt"]["password"])
        try:
            assert device.connected.is_set(), f"node {node.index}: {device.connack}"
            assert device.subscribe(f"agents/{agent['id']}/assigned") in (0, 1)
        finally:
            device.stop()
    after = [reloads(system, n.index) for n in system.cluster.nodes]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


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
        if not again.connected.is_set() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.connack is not None and again.connack.is_failure


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
            system.make_agent()  # the service rewrites users.conf and reloads every node
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
