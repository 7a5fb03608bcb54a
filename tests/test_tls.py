"""MQTT over TLS: the relay, the bridges' feed and the agent device on mqtts:// and wss://.

Mosquitto runs with the TLS listener of deploy/mosquitto-tls.conf and a certificate for
localhost signed by a CA the test makes (harness/tls.py); ORDERBUS_MQTT_CA_FILE points the
service and the device at that CA. Without it, the system's CAs are used, and they do
not know the test's CA: the same connection is then refused (the negative control).
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from clients.subscriber import Feed, FeedError
from contract.link import BrokerAddress, MqttFeed
from harness.processes import cli, stop_group
from harness.system import make_system
from harness.tls import Certificates, make_certificates
from order_service.accounts.broker_logins import WEBHOOKS, bridge_address
from order_service.config import load_settings
from tests.test_clients_agent import AgentProcess, ids, worklist
from tests.test_production import http_status


@pytest.mark.parametrize(
    ("url", "transport", "tls", "port"),
    [
        ("mqtt://h", "tcp", False, 1883),
        ("mqtts://h", "tcp", True, 8883),
        ("ssl://h:9883", "tcp", True, 9883),
        ("ws://h/mqtt", "websockets", False, 9001),
        ("wss://h/mqtt", "websockets", True, 443),
    ],
)
def test_broker_urls_with_and_without_tls(url: str, transport: str, tls: bool, port: int):
    address = BrokerAddress.parse(url)
    assert (address.transport, address.tls, address.port) == (transport, tls, port)
    assert (address.ssl_context() is not None) == tls  # with TLS: the system's CAs
    assert BrokerAddress.parse(url, ca_file="/etc/ca.pem").ca_file == ("/etc/ca.pem" if tls else None)
    assert str(address).startswith(url.split(":")[0].replace("ssl", "mqtts") + "://h:")


def test_an_unknown_scheme_is_refused_by_name_without_the_password():
    with pytest.raises(ValueError, match="unsupported scheme 'mqqt'") as refused:
        BrokerAddress.parse("mqqt://relay:s3cret@h:1883")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="ORDERBUS_MQTT_URL: unsupported scheme 'gopher'"):
        load_settings({"mqtt_url": "gopher://h"})
    assert load_settings({"mqtt_url": "mqtts://h"}).mqtt_address.tls  # positive control


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


@pytest.fixture
def tls_system(tmp_path: Path, certificates: Certificates):
    system = make_system(tmp_path, "mosquitto", tls=certificates)
    yield system
    for name in list(system.procs):
        system.stop(name)
    system.mosquitto.stop()


@pytest.mark.e2e
def test_relay_and_agent_device_work_over_mqtts(tls_system, tmp_path: Path):
    """The relay publishes through mqtts://; the agent device, told mqtts:// by the API and given
    the CA, logs in over TLS and sees an order assigned to it arrive."""
    system = tls_system
    port = system.mosquitto.tls_port
    preflight = cli(system.env, "preflight", "--broker")
    assert preflight.returncode == 0, preflight.stderr
    assert f"broker mqtts://localhost:{port}: reachable, TLSv1." in preflight.stdout
    assert "certificate trusted" in preflight.stdout

    rider = system.make_agent()
    state = tmp_path / "state"
    state.mkdir()
    device = AgentProcess(system, rider, state)
    try:
        device.wait_for(worklist)
        order = system.ready_order("confirmed")
        system.assign(order["id"], rider["id"])
        device.wait_for(lambda x: worklist(x) and order["id"] in ids(x), timeout=10)
    finally:
        stop_group(device.proc)
        device.err.close()
    assert f"relay connected to mqtts://localhost:{port}" in (tmp_path / "relay.log").read_text()


@pytest.mark.e2e
def test_socketio_bridge_subscribes_over_mqtts(tls_system, tmp_path: Path):
    """The Socket.IO bridge (its own settings: ORDERBUS_MQTT_URL, ORDERBUS_MQTT_CA_FILE) reaches the
    broker over mqtts://: its /healthz answers 200 once its feed is subscribed."""
    system = tls_system
    system.start("socketio")
    url = f"http://127.0.0.1:{system.env['ORDERBUS_SOCKETIO_PORT']}/healthz"
    deadline = time.monotonic() + 20
    while http_status(url) != 200:
        assert time.monotonic() < deadline, (tmp_path / "socketio.log").read_text()
        time.sleep(0.1)
    port = system.mosquitto.tls_port
    assert f"on mqtts://localhost:{port}" in (tmp_path / "socketio.log").read_text()


@pytest.mark.e2e
def test_bridges_feed_works_over_wss(tls_system):
    """The webhook worker's and the Socket.IO bridge's feed (MqttFeed, the bridges' login) over
    wss://: it receives the retained state the relay published."""
    system = tls_system
    order = system.ready_order("confirmed")
    settings = load_settings(
        {
            "data_dir": system.env["ORDERBUS_DATA_DIR"],
            "mqtt_url": f"wss://localhost:{system.mosquitto.wss_port}/mqtt",
            "mqtt_ca_file": system.env["ORDERBUS_MQTT_CA_FILE"],
        }
    )
    address = bridge_address(settings, WEBHOOKS)
    assert address.tls and address.transport == "websockets"
    received: queue.Queue = queue.Queue()
    feed = MqttFeed(address, "test-wss-feed", received.put, filters=(f"orders/{order['id']}/status",))
    feed.start()
    try:
        message = received.get(timeout=10)
        assert message.retain and order["id"].encode() in message.payload
    finally:
        feed.stop()


@pytest.mark.e2e
def test_without_the_ca_the_broker_is_not_trusted(tls_system, certificates: Certificates):
    """The system's CAs do not know the test's CA: preflight says so, the device is refused."""
    system = tls_system
    env = {k: v for k, v in system.env.items() if k != "ORDERBUS_MQTT_CA_FILE"}
    preflight = cli(env, "preflight", "--broker")
    assert preflight.returncode == 1
    assert "has a certificate this machine does not trust" in preflight.stderr, preflight.stderr
    assert "ORDERBUS_MQTT_CA_FILE (not set)" in preflight.stderr and "Traceback" not in preflight.stderr
    url = system.env["ORDERBUS_PUBLIC_MQTT_URL"]
    with pytest.raises(FeedError, match="certificate verify failed"):
        Feed(url, ["#"], client_id="untrusting", username="nobody", password="x").start(timeout=5)
    # the same login given the CA gets past TLS to the broker's login check (a wrong password)
    trusting = Feed(
        url, ["#"], client_id="trusting", username="nobody", password="x", ca_file=str(certificates.ca)
    )
    with pytest.raises(FeedError, match="Not authorized|Bad user name or password"):
        trusting.start(timeout=5)
