"""Measure POST /orders -> orders/new receipt on a running system.

    python -m clients.latency --password-file var/admin-password -n 200

Places orders one at a time (a closed loop: each waits for its own message) and
prints the latency from sending the POST to receiving the order on MQTT, and
the POST's own response time. For load at a rate, see the benchmark suite.
Speaks only the public REST and MQTT contract.
"""

from __future__ import annotations

import json
import queue
import statistics
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import click
import paho.mqtt.client as mqtt

import contract

ORDER = {
    "customer": {"name": "Latency Probe", "phone": "+1 555 0199", "address": "1 Bench St"},
    "items": [{"name": "Tea", "quantity": 1, "unit_price_cents": 300}],
    "notes": "latency probe",
}


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"POST {url}: {exc.code} {exc.read().decode(errors='replace')}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"POST {url}: {exc.reason} (is `make run` running?)") from None


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@click.command()
@click.option("--api", default="http://127.0.0.1:5000/api/v1", show_default=True)
@click.option("--mqtt", "mqtt_url", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--user", default="admin", show_default=True)
@click.option("--password-file", type=click.File(), help="file holding the password (var/admin-password)")
@click.option("--password", envvar="ORDERBUS_ADMIN_PASSWORD", help="or the password itself")
@click.option("-n", "count", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0, 1000))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def main(
    api: str,
    mqtt_url: str,
    user: str,
    password_file,
    password: str | None,
    count: int,
    warmup: int,
    as_json: bool,
) -> None:
    """Place orders one by one and time POST -> orders/new on the broker."""
    secret = password_file.read().strip() if password_file else password
    if not secret:
        raise click.UsageError("give --password-file or --password")
    login = _post(f"{api}/auth/token", {"username": user, "password": secret})
    token = login["access_token"]

    received: queue.Queue[tuple[str, float]] = queue.Queue()
    subscribed = queue.Queue()
    broker = urlsplit(mqtt_url)
    dashboard = login.get("mqtt")  # an admin's read-only dashboard login, this probe's own
    # Both brokers use the username as the client id: the probe takes no one else's connection.
    client_id = dashboard["username"] if dashboard else f"latency-probe-{time.time_ns()}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if dashboard:
        client.username_pw_set(dashboard["username"], dashboard["password"])
    refused: queue.Queue[str] = queue.Queue()

    def on_connect(c, u, f, rc, p) -> None:
        if rc.is_failure:
            refused.put(str(rc))
            subscribed.put(False)
        else:
            c.subscribe(contract.ORDERS_NEW, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.put(True)
    client.on_message = lambda c, u, m: (
        m.payload and received.put((contract.loads(m.payload)["order"]["id"], time.perf_counter()))
    )
    try:
        client.connect(broker.hostname or "127.0.0.1", broker.port or 1883)
    except OSError as exc:
        raise click.ClickException(f"MQTT {mqtt_url}: {exc}") from None
    client.loop_start()
    if not subscribed.get(timeout=10):
        client.loop_stop()
        raise click.ClickException(f"MQTT {mqtt_url} refused the login: {refused.get()}")

    end_to_end: list[float] = []
    response_times: list[float] = []
    try:
        for i in range(warmup + count):
            sent = time.perf_counter()
            order_id = _post(f"{api}/orders", ORDER, token)["id"]
            answered = time.perf_counter()
            while True:
                got, at = received.get(timeout=10)
                if got == order_id:
                    break
            if i >= warmup:
                end_to_end.append((at - sent) * 1000)
                response_times.append((answered - sent) * 1000)
            if not as_json and (i + 1) % 50 == 0:
                click.echo(f"  {i + 1}/{warmup + count} orders", err=True)
    except queue.Empty:
        raise click.ClickException("an order did not arrive on orders/new within 10 s") from None
    finally:
        client.disconnect()
        client.loop_stop()

    result = {
        "orders": count,
        "post_to_receipt_ms": {
            "p50": round(statistics.median(end_to_end), 2),
            "p90": round(_quantile(end_to_end, 0.9), 2),
            "p99": round(_quantile(end_to_end, 0.99), 2),
            "max": round(max(end_to_end), 2),
        },
        "post_response_ms": {
            "p50": round(statistics.median(response_times), 2),
            "p99": round(_quantile(response_times, 0.99), 2),
        },
    }
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    e2e, rest = result["post_to_receipt_ms"], result["post_response_ms"]
    click.echo(
        f"{count} orders: POST -> orders/new p50 {e2e['p50']} ms, p90 {e2e['p90']} ms, "
        f"p99 {e2e['p99']} ms, max {e2e['max']} ms; POST response p50 {rest['p50']} ms, p99 {rest['p99']} ms"
    )


if __name__ == "__main__":
    main()
