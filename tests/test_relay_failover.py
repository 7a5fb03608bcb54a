"""Relay high availability: two relays, one active (holds the relay lock), one standby.

The relays here are real processes (``python -m order_service.relay``) so that the
active one can be killed with SIGKILL, as a crash or a lost machine would: no
clean shutdown, no lock released by the relay itself. The lock is a file lock
on SQLite and a session-level advisory lock on PostgreSQL (order_service/leader.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness.processes import ROOT, free_port, stop_group
from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.store.db import db
from order_service.store.models import Order, Outbox
from tests.conftest import BACKEND
from tests.helpers import all_published, wait_until
from tests.mqtt_fixtures import Subscriber
from tests.tcp_proxy import TcpProxy

STREAM_ORDERS = 40
STEPS = ("confirmed", "preparing", "ready")


class RelayProcess:
    def __init__(self, name: str, env: dict, tmp: Path) -> None:
        self.name, self.log_path = name, tmp / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "order_service.relay"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"{self.name}: no {text!r} within {timeout} s:\n{self.log()}"
            time.sleep(0.02)
        return time.monotonic()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_group(self.proc, sig)


@pytest.fixture
def relay_env(app, settings_overrides: dict, broker) -> dict:
    settings = load_settings(settings_overrides)
    with db.connection_context():  # what `python -m order_service bootstrap` does
        broker_logins.ensure_service(settings)
        broker_logins.sync_files(settings)
    return {
        **os.environ,
        "ORDERBUS_DATA_DIR": str(settings_overrides["data_dir"]),
        "ORDERBUS_DATABASE_URL": settings_overrides["database_url"],
        "ORDERBUS_MQTT_URL": f"mqtt://{broker.host}:{broker.port}",
        "ORDERBUS_RELAY_STANDBY_POLL_SECONDS": "0.25",
        "ORDERBUS_RELAY_POLL_SECONDS": "0.5",
    }


@pytest.fixture
def relays(relay_env: dict, tmp_path: Path):
    made: list[RelayProcess] = []

    def start(name: str) -> RelayProcess:
        made.append(RelayProcess(name, relay_env, tmp_path))
        return made[-1]

    yield start
    for relay in made:
        relay.stop()


def _retained_versions(broker, within: float = 10.0) -> dict[str, int]:
    """What a fresh subscriber is given: the retained version of every order's status topic
    (sent on subscribing; ``within`` bounds the wait while live traffic keeps flowing)."""
    fresh = Subscriber(broker.host, broker.port, ("orders/+/status",)).start()
    try:
        fresh.settle(quiet=0.5, timeout=within)
    finally:
        fresh.stop()
    first: dict[str, int] = {}
    for r in fresh.seen:
        if r.retain and r.payload and r.topic not in first:
            first[r.topic] = r.version
    return first


def test_killed_active_relay_is_replaced_without_loss(client, admin, broker, relays, subscribe):
    """kill -9 the active relay under a stream of changes: the standby takes over within seconds;
    every event reaches a live subscriber, in commit order per topic; retained never goes back."""
    first = relays("relay-a")
    first.wait_log("relay active")
    second = relays("relay-b")
    second.wait_log("relay standby")
    live = subscribe("orders/#")

    errors: list[str] = []
    placed: list[str] = []

    def stream() -> None:  # one writer: each change commits and wakes the relay
        try:
            for _ in range(STREAM_ORDERS):
                oid = client.post("/api/v1/orders", json=_ORDER, headers=admin.headers).json["id"]
                placed.append(oid)
                for step in STEPS:
                    r = client.patch(
                        f"/api/v1/orders/{oid}/status", json={"status": step}, headers=admin.headers
                    )
                    if r.status_code != 200:
                        errors.append(f"{oid} {step}: {r.status_code}")
                time.sleep(0.05)  # the stream's pace: it must outlast the kill
        except Exception as exc:  # reported in the test thread
            errors.append(repr(exc))

    writer = threading.Thread(target=stream)
    writer.start()
    live.wait_for(lambda r: r.topic.endswith("/status") and r.version == 3, timeout=15)
    before = _retained_versions(broker, within=0.5)
    assert "relay connected" not in second.log(), "the standby connected to the broker"

    assert writer.is_alive(), "the stream should still be running when the relay is killed"
    killed_at = time.monotonic()
    first.stop(signal.SIGKILL)
    took_over = second.wait_log("relay connected", timeout=15) - killed_at
    after = _retained_versions(broker, within=0.5)
    writer.join(60)
    assert not writer.is_alive() and not errors, errors
    restarted = relays("relay-a2")  # the killed one comes back: as the standby
    restarted.wait_log("relay standby")
    wait_until(all_published, 20, "the outbox published")

    with db.connection_context():
        rows = list(Outbox.select(Outbox.topic, Outbox.event_id).order_by(Outbox.id).tuples())
        current = {f"orders/{o.id}/status": o.version for o in Order.select()}
    expected: dict[str, list[str]] = {}
    for topic, event_id in rows:
        expected.setdefault(topic, []).append(event_id)
    for topic, ids in expected.items():  # the last event of each topic: the ones before come first
        live.wait_for(lambda r, t=topic, e=ids[-1]: r.topic == t and r.payload and r.json["event_id"] == e)
    delivered: dict[str, list[str]] = {}
    for r in live.seen:
        if r.payload and r.json["event_id"] not in delivered.setdefault(r.topic, []):
            delivered[r.topic].append(r.json["event_id"])  # first delivery of each event
    assert len(placed) == STREAM_ORDERS and len(rows) == STREAM_ORDERS * (2 + len(STEPS))
    lost = {t: [e for e in ids if e not in delivered.get(t, [])] for t, ids in expected.items()}
    assert not any(lost.values()), f"events never delivered: {lost}"
    assert delivered == expected  # per topic: every event, first seen in commit order

    for topic, version in before.items():
        assert after.get(topic, 0) >= version, (
            f"{topic}: retained went back from {version} to {after.get(topic)}"
        )
    assert _retained_versions(broker) == current
    print(f"standby took over {took_over:.2f} s after kill -9 of the active relay")
    assert took_over < 10


_ORDER = {
    "customer": {"name": "Ada", "phone": "+1 555 0100", "address": "1 Main St"},
    "items": [{"name": "Tea", "quantity": 1, "unit_price_cents": 300}],
}


def test_metrics_show_whether_a_relay_is_active(client, admin, start_relay):
    """/metrics: orderbus_relay_active is 1 while a relay holds the lock, 0 once none does."""

    def gauge() -> str:
        text = client.get("/api/v1/metrics", headers=admin.headers).get_data(as_text=True)
        return next(line for line in text.splitlines() if line.startswith("orderbus_relay_active "))

    assert gauge() == "orderbus_relay_active 0.0"
    start_relay()  # returns once connected: it holds the lock by then
    assert gauge() == "orderbus_relay_active 1.0"
    start_relay.stop_all()
    # PostgreSQL: the server ends the lock's session a moment after the relay closes it.
    wait_until(lambda: gauge() == "orderbus_relay_active 0.0", 10, "the lock released")


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL: the lock is a database session")
def test_relay_that_loses_its_lock_session_stops_publishing(start_relay, client, admin, subscribe, caplog):
    """The server ends the active relay's lock session: that relay stops publishing and stands by;
    one relay (either) is active again within seconds and publishes."""
    from order_service.outbox.leader import APPLICATION_NAME, RELAY_LOCK

    first = start_relay(relay_standby_poll_seconds=0.25)
    second = start_relay(connect=False, relay_standby_poll_seconds=0.25)
    wait_until(lambda: second.role != "starting", 10, "the second relay trying the lock")
    assert (first.role, second.role) == ("active", "standby")
    with db.connection_context():
        (pid,) = db.execute_sql(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s"
            " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s"
            # This test's database only: tests running in parallel have relays of their own.
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (APPLICATION_NAME, RELAY_LOCK),
        ).fetchone()
        db.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: "relay lost the relay lock" in caplog.text, 10, "the relay noticing it lost its lock")
    wait_until(
        lambda: [first.active.is_set(), second.active.is_set()].count(True) == 1, 10, "a relay taking over"
    )
    live = subscribe("orders/new")
    order = client.post("/api/v1/orders", json=_ORDER, headers=admin.headers).json
    live.wait_for(lambda r: r.json and r.json["order"]["id"] == order["id"], timeout=10)
    assert [first.active.is_set(), second.active.is_set()].count(True) == 1


def test_relay_says_the_database_is_unreachable_not_that_another_relay_is_active(tmp_path: Path):
    """With the database out of reach the relay cannot know who holds the lock: it says the
    database is unreachable (once, not once per retry), never "another relay is active"."""
    env = {
        **os.environ,
        "ORDERBUS_DATA_DIR": str(tmp_path / "var"),
        "ORDERBUS_DATABASE_URL": f"postgresql://orderbus@127.0.0.1:{free_port()}/orderbus",
        "ORDERBUS_MQTT_URL": f"mqtt://orderbus-service:secret@127.0.0.1:{free_port()}",
        "ORDERBUS_RELAY_STANDBY_POLL_SECONDS": "0.1",
    }
    relay = RelayProcess("relay-nodb", env, tmp_path)
    try:
        relay.wait_log("the database is unreachable")
        time.sleep(1.0)  # about ten retries
        log = relay.log()
    finally:
        relay.stop()
    assert "another relay is active" not in log and "relay active" not in log, log
    assert log.count("the database is unreachable") == 1, log
    assert "Connection refused" in log  # the cause, as libpq gave it


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL: the lock is a database session")
def test_relay_takes_the_lead_once_the_database_answers(start_relay, database_url: str, caplog):
    """The database comes back: the waiting relay says so, takes the lock and connects."""
    caplog.set_level(logging.INFO, logger="order_service.outbox.relay")
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname, target.port or 5432).start()
    proxy.cut()
    through_proxy = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
    try:
        relay = start_relay(connect=False, database_url=through_proxy, relay_standby_poll_seconds=0.1)
        deadline = time.monotonic() + 10
        while relay.role != "no database":
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
        assert not relay.connected.is_set()
        proxy.restore()
        assert relay.connected.wait(10), caplog.text
        assert relay.role == "active"
        assert "the database answers again" in caplog.text and "another relay is active" not in caplog.text
    finally:
        start_relay.stop_all()
        proxy.stop()
