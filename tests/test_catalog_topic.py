"""The retained topic ``catalog`` on a real broker, read by real paho clients: every change
arrives live, a newcomer reads the current catalog, only the service may write it (both
brokers), and a broker that restarted empty gets it back from the relay."""

from __future__ import annotations

import json

from tests import both_brokers
from tests.helpers import API, wait_until
from tests.test_broker_security import (  # noqa: F401 (fixtures)
    Client,
    Target,
    connect,
    login_accepted,
    relays,
    target,
)

broker_kind = both_brokers.broker_kind
settings_overrides = both_brokers.settings_overrides


def _versions(client: Client) -> list[int]:
    found = []
    for message in list(client.messages):
        if message.topic == "catalog":
            try:
                found.append(json.loads(message.payload)["version"])
            except (ValueError, KeyError, TypeError):
                found.append(-1)  # not the service's
    return found


def _catalog_at(client: Client, version: int) -> dict:
    wait_until(lambda: version in _versions(client), 15, f"catalog version {version}")
    return next(
        json.loads(m.payload)
        for m in client.messages
        if m.topic == "catalog" and json.loads(m.payload)["version"] == version
    )


def test_the_catalog_is_live_on_the_bus_and_only_the_service_writes_it(
    target: Target,  # noqa: F811 (the fixtures imported above)
    relays,  # noqa: F811
    connect,  # noqa: F811
    client,
    admin,
    menu,
    make_agent,
):
    """A dashboard reads the retained catalog and sees the sold-out switch live; an agent's
    device reads it too; forged catalogs from the device and the dashboard reach no one
    and leave the retained catalog alone (control: the service's next change arrives
    after them, and a newcomer reads the service's catalog)."""
    relays()
    # Each login is used once the broker has re-read its files (Mosquitto: after a SIGHUP).
    assert login_accepted(target, admin.mqtt["username"], admin.mqtt["password"], timeout=15)
    board = connect(admin.mqtt["username"], admin.mqtt["password"], ws=True)
    assert board.subscribe("catalog") == [1]
    assert _catalog_at(board, 5) == client.get(f"{API}/catalog").json

    sold_out = client.patch(
        f"{API}/catalog/items/{menu.tea}", json={"available": False}, headers=admin.headers
    )
    assert sold_out.status_code == 200
    live = _catalog_at(board, 6)
    tea = next(i for i in live["categories"][0]["items"] if i["id"] == menu.tea)
    assert tea["available"] is False
    assert max(_versions(board)) == 6 and _versions(board) == sorted(_versions(board))

    agent = make_agent()
    assert login_accepted(target, agent.agent_id, agent.mqtt["password"], timeout=15)
    device = connect(agent.agent_id, agent.mqtt["password"], client_id=agent.agent_id)
    assert device.ok and device.subscribe("catalog") == [1]
    assert _catalog_at(device, 6)["categories"][0]["items"][1]["available"] is False

    forged = json.dumps({**live, "version": 999, "categories": []}).encode()
    device.publish("catalog", forged, retain=True)
    board.publish("catalog", forged, retain=True)
    back = client.patch(f"{API}/catalog/items/{menu.tea}", json={"available": True}, headers=admin.headers)
    assert back.status_code == 200
    _catalog_at(board, 7)
    _catalog_at(device, 7)
    assert 999 not in _versions(board) + _versions(device)

    newcomer = connect(admin.mqtt["username"] + "x", "nope")
    assert not newcomer.ok  # positive control of the logins: a wrong one is refused
    fresh = client.post(f"{API}/auth/mqtt-credentials", headers=admin.headers).json
    assert login_accepted(target, fresh["username"], fresh["password"], timeout=15)
    late = connect(fresh["username"], fresh["password"])
    assert late.subscribe("catalog") == [1]
    retained = _catalog_at(late, 7)
    assert retained == client.get(f"{API}/catalog").json
    assert all(m.retain for m in late.messages if m.topic == "catalog")
