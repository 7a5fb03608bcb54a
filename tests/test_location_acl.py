"""Who may write and read positions, on both brokers (the embedded one and Mosquitto), with
the logins the REST API issued: an agent writes only its own ``agents/<id>/location/report``;
only the service reads reports; dashboards read ``agents/<id>/location`` (not the reports);
a customer reads no agent topic at all."""

from __future__ import annotations

import contextlib
import itertools
import json
import time

from tests import both_brokers, test_broker_security
from tests.test_broker_security import Target, login_accepted, service

broker_kind = both_brokers.broker_kind
settings_overrides = both_brokers.settings_overrides
target = test_broker_security.target
connect = test_broker_security.connect
relays = test_broker_security.relays


def test_an_agent_reports_only_its_own_position(target: Target, connect, make_agent, admin, make_customer):
    one, two = make_agent(), make_agent()
    customer = make_customer()
    for login in (admin.mqtt, customer.mqtt):
        assert login_accepted(target, login["username"], login["password"])
    reader = connect(*service(target))  # the service reads every agent's reports
    assert reader.subscribe("agents/+/location/report") == [1]
    board = connect(admin.mqtt["username"], admin.mqtt["password"], ws=True)
    assert board.subscribe("agents/#")[0] == 1
    shop = connect(customer.mqtt["username"], customer.mqtt["password"])
    granted = shop.subscribe(f"agents/{one.agent_id}/location", "catalog")
    assert granted[-1] == 1
    if target.kind == "amqtt":  # Mosquitto grants every SUBSCRIBE and filters delivery
        assert granted[0] == 0x80
    me = connect(one.agent_id, one.mqtt["password"], client_id=one.agent_id)
    assert me.ok
    me.publish(f"agents/{two.agent_id}/location/report", b'{"lat": 1, "lon": 1, "tst": 1}')
    me.publish(f"agents/{two.agent_id}/location", b'{"forged": true}', retain=True)
    me.publish(f"agents/{one.agent_id}/location", b'{"forged": true}', retain=True)
    me.publish(f"agents/{one.agent_id}/location/report", b'{"lat": 2, "lon": 2, "tst": 2}')  # its own
    reader.wait_for(f"agents/{one.agent_id}/location/report", timeout=10)  # after the forbidden ones
    assert [(m.topic, m.payload) for m in reader.messages] == [
        (f"agents/{one.agent_id}/location/report", b'{"lat": 2, "lon": 2, "tst": 2}')
    ]
    # The service's position reaches the dashboard; the report never does, nor the forgeries.
    feed = connect(*service(target))
    feed.publish(f"agents/{one.agent_id}/location", b'{"marker": true}', retain=True)
    feed.publish("catalog", b'{"marker": true}')
    board.wait_for(f"agents/{one.agent_id}/location", payload=b'{"marker": true}', timeout=10)
    shop.wait_for("catalog", payload=b'{"marker": true}', timeout=10)  # published after the position
    position = (f"agents/{one.agent_id}/location", b'{"marker": true}')
    assert [(m.topic, m.payload) for m in board.messages] == [position]
    assert [m.topic for m in shop.messages] == ["catalog"]
    # The other agent reads its own topics only: not one's position.
    other = connect(two.agent_id, two.mqtt["password"], client_id=two.agent_id)
    other.subscribe(f"agents/{two.agent_id}/#")
    feed.publish(f"agents/{two.agent_id}/assigned", b'{"marker": true}')
    other.wait_for(f"agents/{two.agent_id}/assigned", timeout=10)
    assert [m.topic for m in other.messages] == [f"agents/{two.agent_id}/assigned"]


def test_the_relay_takes_an_agents_report_and_a_dashboard_reads_the_position(
    target: Target, connect, relays, make_agent, admin
):
    """End to end on each broker: the agent's own login reports, the relay (its service
    login) reads it and publishes the retained position a dashboard reads."""
    agent = make_agent()
    assert login_accepted(target, admin.mqtt["username"], admin.mqtt["password"])
    relays(location_min_interval_seconds=0)
    me = connect(agent.agent_id, agent.mqtt["password"], client_id=agent.agent_id)
    assert me.ok
    board = connect(admin.mqtt["username"], admin.mqtt["password"])
    board.subscribe(f"agents/{agent.agent_id}/location")
    # Reports are not retained: one sent before the relay's subscription is acknowledged
    # is lost, as on a phone; so the device reports again until the position shows.
    stamps = itertools.count(int(time.time()) - 60)
    deadline = time.monotonic() + 20
    while not board.messages and time.monotonic() < deadline:
        report = {"lat": 45.5, "lon": -73.6, "tst": next(stamps)}
        me.publish(f"agents/{agent.agent_id}/location/report", json.dumps(report).encode())
        with contextlib.suppress(AssertionError):
            board.wait_for(f"agents/{agent.agent_id}/location", timeout=1)
    position = json.loads(board.wait_for(f"agents/{agent.agent_id}/location", timeout=5).payload)
    assert (position["lat"], position["lon"], position["agent_id"]) == (45.5, -73.6, agent.agent_id)
