"""Presence the server trusts: device messages, heartbeats and a server-side timeout.

Devices are real paho clients on the real broker; the relay records what they
publish; the timeout is a timer, run here with a chosen clock.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt

from order_service.store.models import rfc3339
from tests.dispatch_helpers import (
    Device,
    accept,
    after,
    agent_presence,
    eventually,
    is_event,
    now,
    offer,
    run_tick,
    utc,
    wait_presence,
    worklist_where,
)
from tests.helpers import assert_problem, walk_to


def test_heartbeats_keep_an_agent_online_and_silence_takes_it_offline(
    app, client, admin, make_agent, place_order, broker, relay, subscribe
):
    """GET /agents shows state, since when and last seen. A heartbeat moves last_seen on; an
    agent not heard from for the timeout (90 s) is offline (source: timeout) and loses its
    pending offers; its next heartbeat brings it back online."""
    agent = make_agent()
    device = Device(broker, agent.agent_id)
    try:
        device.online()
        first = wait_presence(client, admin, agent.agent_id, "online")
        assert first["source"] == "device" and first["last_seen"] is not None
        time.sleep(0.05)  # deliberate: the clock moves on, so the heartbeat's last_seen is later
        device.heartbeat()
        beat = eventually(
            lambda: (
                (p := agent_presence(client, admin, agent.agent_id))["last_seen"] > first["last_seen"] and p
            )
        )
        assert beat["at"] == first["at"]  # still online since the same moment
        order = walk_to(client, admin, place_order()["id"], "confirmed")
        assert (
            offer(client, admin, order["id"], make_agent(), agent, expires_in_seconds=600).status_code == 200
        )
        watch = subscribe("orders/+/status", f"agents/{agent.agent_id}/assigned")

        heard = utc(beat["last_seen"])
        assert run_tick(app, after(heard, seconds=89)).offline == []
        assert agent_presence(client, admin, agent.agent_id)["state"] == "online"
        assert run_tick(app, after(heard, seconds=91)).offline == [agent.agent_id]
        assert run_tick(app, after(heard, seconds=92)).offline == []  # once
        gone = agent_presence(client, admin, agent.agent_id)
        assert (gone["state"], gone["source"], gone["last_seen"]) == ("offline", "timeout", beat["last_seen"])
        event = watch.wait_for(is_event(f"orders/{order['id']}/status", "order.offer_expired")).json
        assert "no heartbeat for 90 s" in event["reason"]
        assert agent.agent_id not in event["order"]["offer"]["agent_ids"]  # the other agent still has it
        watch.wait_for(worklist_where(agent.agent_id, lambda w: w["offers"] == []))
        assert assert_problem(accept(client, agent, order["id"]), 409)["offer_state"] == "expired"

        device.heartbeat()
        back = wait_presence(client, admin, agent.agent_id, "online")
        assert back["source"] == "device" and back["last_seen"] > beat["last_seen"]
    finally:
        device.close()


def test_a_stale_retained_online_does_not_make_an_agent_online(
    client, admin, make_agent, broker, start_relay
):
    """A retained `online` the broker replays to the relay was heard when it was sent: if that is
    longer ago than the timeout (a device that vanished without a will), the agent stays offline."""
    agent = make_agent()
    stale = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stale-{agent.agent_id}")
    stale.connect(broker.host, broker.port)
    stale.loop_start()
    ten_minutes_ago = rfc3339(after(now(), minutes=-10))
    body = json.dumps({"agent_id": agent.agent_id, "state": "online", "at": ten_minutes_ago})
    stale.publish(f"agents/{agent.agent_id}/presence", body, qos=1, retain=True).wait_for_publish(5)
    stale.disconnect()
    stale.loop_stop()

    start_relay()  # subscribes agents/+/presence and receives the retained message
    seen = eventually(lambda: (p := agent_presence(client, admin, agent.agent_id))["last_seen"] and p)
    assert seen["last_seen"] == ten_minutes_ago
    assert seen["state"] == "unknown"
