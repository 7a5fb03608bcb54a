"""What the NATS cluster's MQTT accepts, measured (docs/scaling.md lists them as rules).

An MQTT topic is a NATS subject there: '.' and 'ü' inside a level work, a space does not
(the publisher is disconnected); MQTT 3.1.1 only (an MQTT 5 CONNECT is refused); a
publish over ``max_payload`` (1 MiB) disconnects the client. Each refusal has its
positive control. The relay's login (it writes ``orders/#``) publishes here, with its
username as client id (the auth callout refuses any other: docs/scaling.md), so this
module's relay is stopped: no connection of the relay's is taken over.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from tests.cluster_fixtures import Device, bridge_login, running_cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster_system(tmp_path_factory):
    for system in running_cluster(tmp_path_factory):
        system.stop("relay")  # its login is the writer's below
        yield system


def service_login(system) -> tuple[str, str]:
    return "orderbus-service", (system.tmp / "var" / "mqtt" / "service-secret").read_text().strip()


@pytest.fixture
def pair(cluster_system):
    urls = cluster_system.cluster.mqtt_urls
    observer = Device(urls[2], *bridge_login(cluster_system)).start()
    assert observer.subscribe("orders/#") in (0, 1)
    writer = Device(urls[0], *service_login(cluster_system)).start()
    assert writer.connected.is_set(), writer.connack
    yield writer, observer
    writer.stop()
    observer.stop()


@pytest.mark.parametrize("level", ["a.b", "ü-straße", "x.y.z"])
def test_dots_and_non_ascii_in_a_level_arrive_unchanged(pair, level):
    writer, observer = pair
    topic = f"orders/{level}/status"
    writer.publish(topic, b"{}", retain=False)
    assert observer.wait_for(topic).topic == topic
    assert writer.disconnects == 0


def test_a_space_in_a_topic_disconnects_the_publisher(pair):
    writer, observer = pair
    writer.publish("orders/no-space/status", b"{}")  # the positive control
    observer.wait_for("orders/no-space/status")
    writer.client.publish("orders/a b/status", b"{}", qos=1)
    assert writer.wait_disconnected(10) and writer.disconnects == 1
    assert all(m.topic != "orders/a b/status" for m in observer.drain())


def test_a_payload_over_one_mebibyte_disconnects_the_client(pair):
    writer, observer = pair
    writer.publish("orders/big/status", b"x" * 1_000_000)  # under 1 MiB with the header: goes through
    observer.wait_for("orders/big/status")
    writer.client.publish("orders/bigger/status", b"x" * (1 << 20), qos=1)
    assert writer.wait_disconnected(10) and writer.disconnects == 1
    assert all(m.topic != "orders/bigger/status" for m in observer.drain())


def test_mqtt_5_is_refused_and_3_1_1_accepted(cluster_system):
    url = cluster_system.cluster.mqtt_urls[1]
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    username, secret = bridge_login(cluster_system, "socketio")
    answers: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, secret)
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(f"connack {reason}")
    client.on_disconnect = lambda *_a: answers.append("closed")
    client.connect(host, int(port), keepalive=10)
    for _ in range(100):
        client.loop(0.1)
        if answers:
            break
    client.disconnect()
    assert answers and answers[0] != "connack Success", answers
    v311 = Device(url, username, secret).start()  # the positive control: the same login, MQTT 3.1.1
    try:
        assert v311.connected.is_set(), v311.connack
    finally:
        v311.stop()
