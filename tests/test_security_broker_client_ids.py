"""Client ids are bound to logins, on both brokers: the client id IS the username.

Whatever client id a client sends, the broker uses its username instead (Mosquitto:
``use_username_as_clientid true`` on both listeners of mosquitto.conf; the embedded
broker: its password-file plugin). So a device holding a valid login can neither evict
another client (the relay, another device) nor take over, and so wipe, another
device's offline session. Each test runs on the embedded broker and on a Mosquitto
started from the repository's mosquitto.conf, with the logins the service issues.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.mqtt_raw import RawClient
from tests.test_broker_security import (  # noqa: F401 (fixtures)
    Target,
    broker_kind,
    connect,
    service,
    settings_overrides,
    target,
)

pytestmark = pytest.mark.security


def raw(to: Target) -> RawClient:
    return RawClient(to.host, to.port)


def alive(client: RawClient) -> bool:
    """Whether the broker still serves this connection (a SUBSCRIBE answered)."""
    try:
        client.subscribe(("agents/+/presence", 1), packet_id=7)
    except (ConnectionError, OSError, TimeoutError):
        return False
    return True


def test_a_device_login_cannot_evict_the_relay(target: Target, make_agent) -> None:  # noqa: F811
    """An agent login connecting every 100 ms with the relay's client id used to knock it off."""
    username, secret = service(target)
    relay = raw(target)
    assert relay.connect(username, username=username, password=secret) == (False, 0)
    agent = make_agent()
    for _ in range(10):
        attacker = raw(target)
        # Accepted, as itself: the client id it sent is replaced by its username.
        assert attacker.connect(username, username=agent.agent_id, password=agent.mqtt["password"])[1] == 0
        attacker.close()
        time.sleep(0.1)
    assert alive(relay), "the relay's connection was taken over"
    # Positive control: the relay's own login, whatever id it sends, is the relay's client id,
    # so a second relay process fences the first (active/standby relays rely on it).
    second = raw(target)
    assert second.connect("orderbus-relay-2", username=username, password=secret)[1] == 0
    assert relay.wait_closed(10), "a second connection of the same login did not take over"
    assert alive(second)
    second.close()


def test_another_login_cannot_wipe_a_devices_offline_queue(target: Target, connect, make_agent) -> None:  # noqa: F811
    """The reproduction: B is offline with a message queued; A connects with B's client id and
    clean session off and reads nothing; B comes back and gets its message."""
    a, b = make_agent(), make_agent()
    topic = f"agents/{b.agent_id}/assigned"
    device_b = raw(target)
    assert device_b.connect(b.agent_id, username=b.agent_id, password=b.mqtt["password"], clean=False)[1] == 0
    assert device_b.subscribe((topic, 1)) == [1]
    device_b.disconnect()
    device_b.close()
    feed = connect(*service(target), client_id=service(target)[0])
    feed.publish(topic, b'{"queued": "for b"}')  # QoS 1, not retained: only B's session holds it

    device_a = raw(target)
    present, rc = device_a.connect(b.agent_id, username=a.agent_id, password=a.mqtt["password"], clean=False)
    assert (present, rc) == (False, 0)  # its own, new session: none of B's
    with pytest.raises(TimeoutError):
        device_a.read_publish(1.0)
    device_a.disconnect()
    device_a.close()

    device_b = raw(target)
    present, rc = device_b.connect(b.agent_id, username=b.agent_id, password=b.mqtt["password"], clean=False)
    assert (present, rc) == (True, 0), "B's session is gone"
    message = device_b.read_publish(5)
    device_b.close()
    assert (message.topic, json.loads(message.payload)) == (topic, {"queued": "for b"})


def test_a_device_sending_another_client_id_gets_its_logins_session(
    target: Target,  # noqa: F811
    connect,  # noqa: F811
    make_agent,
) -> None:
    """The rule, identical on both brokers: a client id other than the username is replaced
    by it, so that device's persistent session is its login's, whichever id it sends."""
    agent = make_agent()
    topic = f"agents/{agent.agent_id}/assigned"
    device = raw(target)
    assert (
        device.connect("device-7", username=agent.agent_id, password=agent.mqtt["password"], clean=False)[1]
        == 0
    )
    assert device.subscribe((topic, 1)) == [1]
    device.disconnect()
    device.close()
    feed = connect(*service(target), client_id=service(target)[0])
    feed.publish(topic, b'{"n": 1}')
    device = raw(target)
    present, rc = device.connect(
        agent.agent_id, username=agent.agent_id, password=agent.mqtt["password"], clean=False
    )
    assert (present, rc) == (True, 0)
    assert device.read_publish(5).payload == b'{"n": 1}'
    device.close()


def test_no_client_id_with_clean_session_off_is_refused(target: Target, make_agent) -> None:  # noqa: F811
    agent = make_agent()
    device = raw(target)
    assert device.connect("", username=agent.agent_id, password=agent.mqtt["password"], clean=False)[1] == 2
    device.close()
    device = raw(target)  # with clean session on, the broker uses the username
    assert device.connect("", username=agent.agent_id, password=agent.mqtt["password"])[1] == 0
    device.close()
