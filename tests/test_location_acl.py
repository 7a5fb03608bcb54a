"""Who may write and read positions, on both brokers (the embedded one and Mosquitto), with
the logins the REST API issued: an agent writes only its own ``agents/<id>/location/report``;
only the service reads reports; dashboards read ``agents/<id>/location`` (not the reports);
a customer reads no agent topic at all."""

from __future__ import annotations

from tests import both_brokers, test_broker_security
from tests.test_broker_security import Target, login_accepted, service

broker_kind = both_brokers.broker_kind
settings_overrides = both_brokers.settings_overrides
target = test_broker_security.target
connect = test_broker_security.connect


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
