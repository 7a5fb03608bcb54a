"""Helpers of the live-location tests: a device publishing position reports, and the
drop counters read from /metrics."""

from __future__ import annotations

import json
import re
import time

import paho.mqtt.client as mqtt

from tests.helpers import wait_until

BERLIN = (52.5208, 13.4095)


class Reporter:
    """An agent's device on the real broker, publishing to its own location/report topic."""

    def __init__(self, host: str, port: int, agent_id: str, login: dict | None = None) -> None:
        self.topic = f"agents/{agent_id}/location/report"
        client_id = login["username"] if login else ""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if login is not None:
            self.client.username_pw_set(login["username"], login["password"])
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def raw(self, payload: bytes, topic: str | None = None) -> None:
        self.client.publish(topic or self.topic, payload, qos=1).wait_for_publish(5)

    def report(self, lat: float, lon: float, tst: float | None = None, **extra: object) -> int:
        """Publish a good report; return its tst."""
        stamp = int(tst if tst is not None else time.time())
        self.raw(json.dumps({"lat": lat, "lon": lon, "tst": stamp, "acc": 8, **extra}).encode())
        return stamp

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def drops(client, admin) -> dict[str, float]:
    """``orderbus_locations_dropped_total`` by reason, from GET /metrics."""
    text = client.get("/api/v1/metrics", headers=admin.headers).get_data(as_text=True)
    found = re.findall(r'^orderbus_locations_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def wait_drops(client, admin, **expected: int) -> dict[str, float]:
    """Wait until the counters reach ``expected`` (the intake flushes them about once a second)."""
    return wait_until(
        lambda: (d := drops(client, admin)) and all(d.get(k, 0) >= v for k, v in expected.items()) and d,
        timeout=15,
        what=f"drop counters {expected}",
    )
