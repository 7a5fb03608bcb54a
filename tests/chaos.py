"""What every fault test shares: a workload, observers, and the ledger that counts.

The database is the source of truth. After a scenario, :func:`account` reads the
event log (``GET /events``, commit order) and compares it with what an observer
received, topic by topic (``orders/<id>/status`` and ``agents/<id>/assigned``;
``orders/new`` repeats each order's first status event and is left out):

- delivered: events the observer received as themselves (same topic and event id);
- recovered: events it never received, but whose topic it holds at a later version:
  the state caught up after the fault (a reconnect, the relay's republish);
- lost: events whose topic the observer holds at an older version, or not at all;
- duplicated: copies beyond the first of one event (delivery is at least once);
- unexpected: messages the log does not account for (unknown event id, a version
  that differs from the log's), and retained states a fresh subscriber finds that
  are not the log's newest.

A scenario passes with lost 0 and unexpected 0. ``ORDERBUS_CHAOS_SCALE`` (default 1,
``make chaos`` uses more) multiplies the event counts and durations.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clients.rest import Api
from harness.system import System
from tests.mqtt_fixtures import Received, Subscriber

SCALE = max(1, int(os.environ.get("ORDERBUS_CHAOS_SCALE", "1")))
HOST = "127.0.0.1"
STEPS = 24 * SCALE  # a scenario's workload: changes to one order or another
ORDER = {
    "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
    "items": [{"name": "Tea", "quantity": 2, "unit_price_cents": 300}],
}
FILTERS = ("orders/#", "agents/+/assigned")


def accounted(topic: str) -> bool:
    return (topic.startswith("orders/") and topic.endswith("/status")) or topic.endswith("/assigned")


def _version(payload: dict) -> int:
    return payload["order"]["version"] if "order" in payload else payload["version"]


def last_cursor(api: Api) -> int:
    """The event log's newest cursor: a scenario accounts only for what comes after it."""
    after = 0
    while page := api.request("GET", f"/events?after={after}&limit=1000")["events"]:
        after = page[-1]["cursor"]
    return after


def event_log(api: Api, after: int = 0) -> list[dict]:
    """Events in commit order: {"topic", "event_id", "version"} (accounted topics only)."""
    events = []
    while True:
        page = api.request("GET", f"/events?after={after}&limit=1000")
        for row in page["events"]:
            if accounted(row["topic"]):
                payload = row["payload"]
                events.append(
                    {"topic": row["topic"], "event_id": payload["event_id"], "version": _version(payload)}
                )
        if not page["events"]:
            return events
        after = page["next_cursor"]


def newest(events: list[dict]) -> dict[str, int]:
    state: dict[str, int] = {}
    for event in events:
        state[event["topic"]] = max(state.get(event["topic"], 0), event["version"])
    return state


@dataclass
class Counts:
    delivered: int = 0
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    events: int = 0

    def report(self, scenario: str) -> str:
        line = (
            f"[chaos] {scenario}: events={self.events} delivered={self.delivered} "
            f"recovered={self.recovered} lost={self.lost} duplicated={self.duplicated} "
            f"unexpected={self.unexpected}"
        )
        print(line)
        return line

    def check(self, scenario: str) -> None:
        line = self.report(scenario)
        assert self.events > 0, f"nothing happened: {line}"
        assert self.lost == 0 and self.unexpected == 0, line


def account(
    events: list[dict],
    received: list[Received],
    retained: dict[str, int] | None = None,
    known: list[dict] | None = None,
) -> Counts:
    """Compare the scenario's events with what one observer received (and, optionally, with
    the retained state a fresh subscriber read: topic -> version). ``known`` is the whole
    log, when ``events`` is only the scenario's part of it: older retained states the
    observer receives are then known, not unexpected."""
    counts = Counts(events=len(events))
    by_id = {(e["topic"], e["event_id"]): e for e in (known or events)}
    copies: Counter[tuple[str, str]] = Counter()
    held: dict[str, int] = {}
    for message in received:
        if not accounted(message.topic) or not message.payload:
            continue
        body = message.json
        key = (message.topic, body["event_id"])
        match = by_id.get(key)
        if match is None or match["version"] != _version(body):
            counts.unexpected += 1
            continue
        copies[key] += 1
        held[message.topic] = max(held.get(message.topic, 0), match["version"])
    counts.duplicated = sum(n - 1 for n in copies.values())
    for event in events:
        if copies[(event["topic"], event["event_id"])]:
            counts.delivered += 1
        elif held.get(event["topic"], 0) >= event["version"]:
            counts.recovered += 1
        else:
            counts.lost += 1
    if retained is not None:
        for topic, version in newest(events).items():
            if retained.get(topic, 0) < version:
                counts.lost += 1
        counts.unexpected += sum(1 for t, v in retained.items() if v > newest(events).get(t, v))
    return counts


def admin_api(api_url: str, data_dir: Path) -> tuple[Api, dict]:
    """A logged-in admin client and its dashboard broker login."""
    api = Api(api_url)
    login = api.login("admin", (data_dir / "admin-password").read_text().strip())
    return api, login["mqtt"]


def page_login(api: Api) -> dict:
    """Another dashboard broker login for the admin's token, as another dashboard page gets one
    (both brokers use a login's username as its client id: one login per connection)."""
    return api.request("POST", "/auth/mqtt-credentials")


def observer(host: str, port: int, login: dict, filters: tuple[str, ...] = FILTERS) -> Subscriber:
    """A dashboard (or a device): a broker login of its own, whose username is its client id,
    a persistent session, paho's own reconnects."""
    sub = Subscriber(host, port, filters, login=login, client_id=login["username"], clean_session=False)
    sub.client.reconnect_delay_set(0.2, 2)
    return sub.start(15)


def wait_converged(
    sub: Subscriber, api: Api, after: int = 0, topic: str | None = None, timeout: float = 30.0
) -> list[dict]:
    """Collect until the observer holds the log's newest version of every topic (of the
    events after ``after``, on ``topic`` only if given); return those events."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in event_log(api, after) if topic in (None, e["topic"])]
        sub.settle(quiet=0.2, timeout=2)
        held = {t: r.version for t, r in sub.latest().items() if accounted(t) and r.payload}
        behind = {t: v for t, v in newest(events).items() if (held.get(t) or 0) < v}
        if not behind or time.monotonic() > deadline:
            return events


def retained_state(host: str, port: int, login: dict, settle: float = 0.5) -> dict[str, int]:
    """What a brand-new dashboard (``login``: its own) finds on the broker: topic -> retained version."""
    fresh = Subscriber(host, port, FILTERS, login=login, client_id=login["username"]).start(15)
    try:
        fresh.settle(quiet=settle, timeout=15)
        return {t: r.version for t, r in fresh.latest().items() if accounted(t) and r.payload}
    finally:
        fresh.stop()


class Workload:
    """Orders moved through their lifecycle by an admin, some assigned to an agent.

    ``step()`` makes one change; a scenario interleaves its fault between steps, so the
    relay is publishing when the fault strikes.
    """

    PATH = ("confirmed", "preparing", "ready")

    def __init__(self, api: Api, agent_id: str | None = None) -> None:
        self.api, self.agent_id = api, agent_id
        self.orders: list[dict] = []
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        moving = [o for o in self.orders if o["status"] != "ready"]
        if len(moving) < 3:
            self.orders.append(self.api.request("POST", "/orders", ORDER))
            return
        order = moving[self.steps % len(moving)]
        nxt = self.PATH[self.PATH.index(order["status"]) + 1] if order["status"] in self.PATH else "confirmed"
        changed = self.api.request("PATCH", f"/orders/{order['id']}/status", {"status": nxt})
        if nxt == "confirmed" and self.agent_id:
            changed = self.api.request(
                "PUT", f"/orders/{order['id']}/agent", {"agent_id": self.agent_id, "offer": False}
            )
        order.update(changed)

    def run(self, count: int, pause: float = 0.0) -> None:
        for _ in range(count):
            self.step()
            if pause:
                time.sleep(pause)


def in_background(work: Workload, steps: int, pause: float = 0.02) -> threading.Thread:
    """The workload's ``steps`` on a thread of their own (the scenario strikes meanwhile)."""
    thread = threading.Thread(target=work.run, args=(steps, pause), name="workload", daemon=True)
    thread.start()
    return thread


def waited(condition: Callable[[], bool], timeout: float = 30) -> bool:
    """Whether ``condition`` came true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextmanager
def restarted(system: System, name: str, **env: str) -> Iterator[None]:
    """Run process ``name`` with extra environment inside the block, as configured after it."""
    system.stop(name)
    saved = dict(system.env)
    system.env.update(env)
    try:
        system.start(name)
        yield
    finally:
        system.env.clear()
        system.env.update(saved)
        if name in system.procs:
            system.stop(name)
        system.start(name)


# -- a scenario: a workload, a fault a third of the way in, the counts ----------------------


def broker_port(system: System) -> int:
    return int(system.env["ORDERBUS_BROKER_PORT"])


def data_dir_of(system: System) -> Path:
    return Path(system.env["ORDERBUS_DATA_DIR"])


def while_down(work: Workload, steps: int = 5) -> None:
    """The outage lasts while the workload makes ``steps`` more changes: rows wait in the outbox."""
    done = work.steps
    assert waited(lambda: work.steps >= done + steps), "the workload stalled while the broker was down"


def streaming(fault: Callable[[Workload], None], api: Api, agent: dict, seconds: float = 60 * SCALE) -> None:
    """The workload runs in the background; ``fault`` strikes a third of the way in; the
    workload must finish within ``seconds``."""
    work = Workload(api, agent["id"])
    runner = in_background(work, STEPS)
    assert waited(lambda: work.steps >= STEPS // 3), "the workload did not start"
    fault(work)
    runner.join(seconds)
    assert not runner.is_alive(), "the workload did not finish"


def scenario(system: System, name: str, fault: Callable[[Workload], None], port: int | None = None) -> Counts:
    """A dashboard watches while a workload runs in the background and ``fault`` strikes a
    third of the way in; then the dashboard and a fresh subscriber must hold the newest state."""
    port = port or broker_port(system)
    api, login = admin_api(system.api_url, data_dir_of(system))
    agent = system.make_agent()
    mark = last_cursor(api)
    sub = observer(HOST, port, login)
    try:
        streaming(fault, api, agent)
        events = wait_converged(sub, api, mark)
        fresh = retained_state(HOST, port, page_login(api))
        counts = account(events, sub.seen, fresh, known=event_log(api))
        counts.check(name)
        assert not sub.contract_errors, sub.contract_errors
        return counts
    finally:
        sub.stop()
