"""python -m clients.simulate: a demo and load simulator over the public REST API.

    python -m clients.simulate --password-file var/admin-password --agents 3 --orders 20 --rate 2

Creates agents (``sim-<run>-<n>``, password printed with ``--show-logins`` so you
can start ``python -m clients.agent`` as one of them), places orders at ``--rate``
per second with an Idempotency-Key, moves each through confirmed -> preparing ->
ready, assigns it to an agent (round robin), and, as that agent, picks it up and
delivers it; ``--cancel-every N`` cancels every Nth order instead. ``--step``
is the pause between lifecycle steps (so a demo's screens have time to show them).
With ``--ride SECONDS`` each order gets a delivery location near ``--around`` (default:
the business's origin from the dispatch settings, else a demo point), and its courier
rides there between picked up and delivered, reporting its position every second over
MQTT with its own broker login, as the courier app does: the dispatcher's map and the
customer's tracking page move.
Progress goes to stderr; ``--json`` prints a final report for scripts (the
benchmark issue can reuse :func:`simulate`).
"""

from __future__ import annotations

import json
import math
import random
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import click
import paho.mqtt.client as mqtt

from contract.address import BrokerAddress

from .rest import DEFAULT_API, Api, ApiError, ApiUnreachable

ORDER = {
    "customer": {"name": "Sim Customer", "phone": "+1 555 0142", "address": "42 Demo Street"},
    "items": [{"name": "Margherita", "quantity": 1, "unit_price_cents": 1299}],
    "notes": "simulated",
}


@dataclass
class Report:
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, error: str | None = None) -> None:
        with self.lock:
            self.counts[what] += 1
            if error and len(self.errors) < 20:
                self.errors.append(error)


def create_agents(admin: Api, count: int, run: str) -> list[dict]:
    agents = []
    for n in range(1, count + 1):
        username, password = f"sim-{run}-{n}", secrets.token_urlsafe(12)
        agent = admin.request(
            "POST", "/agents", {"name": f"Sim Rider {n}", "username": username, "password": password}
        )
        api = Api(admin.base)
        api.login(username, password)
        agents.append(
            {"id": agent["id"], "username": username, "password": password, "api": api, "mqtt": agent["mqtt"]}
        )
    return agents


DEMO_POINT = (52.5200, 13.4050)  # where the demo rides when the business has no origin set


class Rides:
    """The couriers' positions while they ride: one MQTT connection per courier, with the
    broker login the service issued it, reporting ``{lat, lon, acc, tst}`` every second on its
    own ``agents/<id>/location/report`` (QoS 0, as the courier app does)."""

    def __init__(self, riders: list[dict], origin: tuple[float, float], seconds: float) -> None:
        self.origin, self.seconds = origin, seconds
        self.clients: dict[str, mqtt.Client] = {}
        for rider in riders:
            login = rider["mqtt"]
            address = BrokerAddress.parse(login["url"])
            client = address.client(login["client_id"], clean_session=True)
            client.username_pw_set(login["username"], login.get("password"))
            client.connect_async(address.host, address.port, 30)
            client.loop_start()
            self.clients[rider["id"]] = client

    def destination(self) -> dict[str, float]:
        """A delivery location 0.5-2.5 km from the origin."""
        bearing, km = random.uniform(0, 2 * math.pi), random.uniform(0.5, 2.5)
        lat = self.origin[0] + km / 111.0 * math.cos(bearing)
        lon = self.origin[1] + km / (111.0 * math.cos(math.radians(self.origin[0]))) * math.sin(bearing)
        return {"lat": round(lat, 6), "lon": round(lon, 6)}

    def report(self, agent_id: str, lat: float, lon: float) -> None:
        body = {"lat": round(lat, 6), "lon": round(lon, 6), "acc": 8, "tst": int(time.time())}
        self.clients[agent_id].publish(f"agents/{agent_id}/location/report", json.dumps(body), qos=0)

    def ride(self, agent_id: str, to: dict[str, float]) -> None:
        steps = max(1, int(self.seconds))
        for k in range(steps + 1):
            f = k / steps
            self.report(
                agent_id,
                self.origin[0] + (to["lat"] - self.origin[0]) * f,
                self.origin[1] + (to["lon"] - self.origin[1]) * f,
            )
            if k < steps:
                time.sleep(self.seconds / steps)

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def parse_point(ctx: click.Context | None, param: click.Parameter | None, value: str | None):
    """``LAT,LON`` as a pair of floats in range, or None."""
    if value is None:
        return None
    try:
        lat, lon = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LAT,LON (e.g. 52.52,13.405)") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise click.BadParameter(f"{value!r}: latitude -90..90, longitude -180..180")
    return lat, lon


def business_origin(admin: Api, around: tuple[float, float] | None) -> tuple[float, float]:
    if around:
        return around
    values = admin.request("GET", "/settings/dispatch").get("values", {})
    if values.get("origin_lat") is not None and values.get("origin_lon") is not None:
        return float(values["origin_lat"]), float(values["origin_lon"])
    return DEMO_POINT


def run_order(
    admin: Api, agent: dict, cancel: bool, step: float, report: Report, rides: Rides | None = None
) -> None:
    try:
        body = ORDER if rides is None else {**ORDER, "delivery_location": rides.destination()}
        order = admin.request("POST", "/orders", body, {"Idempotency-Key": uuid.uuid4().hex})
        report.add("placed")
        oid = order["id"]
        for status in ("confirmed", "preparing", "ready"):
            time.sleep(step)
            admin.request("PATCH", f"/orders/{oid}/status", {"status": status})
            if status == "confirmed":
                time.sleep(step)
                admin.request("PUT", f"/orders/{oid}/agent", {"agent_id": agent["id"], "offer": False})
                report.add("assigned")
        if cancel:
            admin.request("PATCH", f"/orders/{oid}/status", {"status": "cancelled", "reason": "simulated"})
            report.add("cancelled")
            return
        for status in ("picked_up", "delivered"):
            time.sleep(step)
            if status == "delivered" and rides is not None:
                rides.ride(agent["id"], body["delivery_location"])
            agent["api"].request("PATCH", f"/orders/{oid}/status", {"status": status})
        report.add("delivered")
    except (ApiError, ApiUnreachable) as exc:
        report.add("errors", str(exc))


def simulate(
    admin: Api,
    *,
    agents: int,
    orders: int,
    rate: float,
    step: float = 0.2,
    cancel_every: int = 0,
    ride: float = 0.0,
    around: tuple[float, float] | None = None,
    progress=None,
) -> dict:
    """Run a simulation; return its report (counts, errors, agents, seconds)."""
    run = uuid.uuid4().hex[:6]
    started = time.monotonic()
    riders = create_agents(admin, agents, run)
    rides = Rides(riders, business_origin(admin, around), ride) if ride > 0 else None
    report = Report()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            progress(report)

    if progress:
        threading.Thread(target=tick, name="sim-progress", daemon=True).start()
    try:
        with ThreadPoolExecutor(max_workers=64) as pool:
            for i in range(orders):
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
                cancel = bool(cancel_every) and (i + 1) % cancel_every == 0
                pool.submit(run_order, admin, riders[i % len(riders)], cancel, step, report, rides)
    finally:
        done.set()
        if rides is not None:
            rides.close()
    if progress:
        progress(report)
    return {
        "run": run,
        "orders": orders,
        "seconds": round(time.monotonic() - started, 2),
        "counts": dict(report.counts),
        "errors": report.errors,
        "agents": [{"id": a["id"], "username": a["username"], "password": a["password"]} for a in riders],
    }


@click.command()
@click.option("--api", default=DEFAULT_API, show_default=True, envvar="ORDERBUS_API")
@click.option("--user", default="admin", show_default=True)
@click.option("--password-file", type=click.File(), help="the admin's password file (var/admin-password)")
@click.option("--password", envvar="ORDERBUS_ADMIN_PASSWORD", help="or the password itself")
@click.option("--agents", default=3, show_default=True, type=click.IntRange(1, 500))
@click.option("--orders", default=20, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option(
    "--rate", default=2.0, show_default=True, type=click.FloatRange(0.01, 10_000), help="orders/second"
)
@click.option(
    "--step", default=0.5, show_default=True, type=click.FloatRange(0, 60), help="seconds between steps"
)
@click.option(
    "--cancel-every", default=0, show_default=True, type=click.IntRange(0), help="cancel every Nth order"
)
@click.option(
    "--ride",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="seconds each courier rides to the customer, reporting its position every second (0: none)",
)
@click.option(
    "--around",
    metavar="LAT,LON",
    callback=parse_point,
    help="where the rides start (default: the business's origin)",
)
@click.option("--show-logins", is_flag=True, help="print the agents' usernames and passwords")
@click.option("--json", "as_json", is_flag=True, help="print the final report as JSON")
def main(
    api,
    user,
    password_file,
    password,
    agents,
    orders,
    rate,
    step,
    cancel_every,
    ride,
    around,
    show_logins,
    as_json,
) -> None:
    """Create agents, place orders at a rate and move them through their lifecycle."""
    secret = password_file.read().strip() if password_file else password
    if not secret:
        raise click.UsageError("give --password-file or --password")
    admin = Api(api)
    try:
        admin.login(user, secret)
    except ApiError as exc:
        raise click.ClickException(exc.explain()) from None
    except ApiUnreachable as exc:
        raise click.ClickException(f"the API does not answer: {exc}. Is `make run` running?") from None

    def progress(report: Report) -> None:
        c = report.counts
        sys.stderr.write(
            f"\rplaced {c['placed']}/{orders}  assigned {c['assigned']}  delivered {c['delivered']}"
            f"  cancelled {c['cancelled']}  errors {c['errors']}   "
        )
        sys.stderr.flush()

    try:
        result = simulate(
            admin,
            agents=agents,
            orders=orders,
            rate=rate,
            step=step,
            cancel_every=cancel_every,
            ride=ride,
            around=around,
            progress=progress,
        )
    except (ApiError, ApiUnreachable) as exc:
        raise click.ClickException(exc.explain() if isinstance(exc, ApiError) else str(exc)) from None
    sys.stderr.write("\n")
    if not show_logins:
        for agent in result["agents"]:
            agent.pop("password")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(f"{result['orders']} orders in {result['seconds']} s: {result['counts']}")
        for agent in result["agents"]:
            click.echo(f"  agent {agent['id']} {agent['username']} {agent.get('password', '')}".rstrip())
        for error in result["errors"]:
            click.echo(f"  error: {error}")
    if result["counts"].get("errors"):
        sys.exit(1)


if __name__ == "__main__":
    main()
