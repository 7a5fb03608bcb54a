"""Relay reconnects cost subscribers nothing; a broker that lost state gets it back.

An attacker who evicts the relay's session, or a flapping network, reconnects the relay
again and again. Each reconnect used to republish every live order and worklist: a
dashboard idle at 0 messages got 14,048 messages (9.2 MB) in 5 s of reconnects. The
relay now reads back its retained marker (``orderbus/relay/epoch``) and republishes
only what the broker lacks. On both brokers, with the logins and ACL the service writes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

import contract
from broker.server import EmbeddedBroker
from harness.mosquitto import Mosquitto
from order_service.accounts import broker_logins
from order_service.config import Settings, load_settings
from order_service.outbox.relay import Relay
from order_service.store.db import db
from order_service.store.models import Order, Outbox, new_id
from tests import both_brokers
from tests.helpers import assign, max_outbox_id, set_status, wait_until
from tests.mqtt_fixtures import RelayRunner, Subscriber
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.security

ORDERS = 12

# Every test on each broker: the embedded one and Mosquitto.
broker_kind = both_brokers.broker_kind
settings_overrides = both_brokers.settings_overrides


class Broker:
    """The embedded broker or a Mosquitto from mosquitto.conf, reading the service's files."""

    def __init__(self, kind: str, settings: Settings, **mosquitto_conf: str) -> None:
        self.kind = kind
        if kind == "mosquitto":
            self.mosquitto = Mosquitto(
                settings.data_dir, settings.mqtt_password_path, settings.mqtt_acl_path, replace=mosquitto_conf
            ).start()
            self.host, self.port = self.mosquitto.host, self.mosquitto.port
        else:
            self.embedded = EmbeddedBroker(
                password_file=settings.mqtt_password_path, acl_file=settings.mqtt_acl_path
            )
            self.embedded.start()
            self.host, self.port = self.embedded.host, self.embedded.port

    def restart(self, *, sig: int = signal.SIGTERM, lose_store: bool = False) -> None:
        """Stop and start again on the same ports. The embedded broker always comes back
        empty; Mosquitto restores its persistence file unless ``lose_store``."""
        if self.kind == "mosquitto":
            self.mosquitto.stop(sig)
            if lose_store:
                (self.mosquitto.dir / "mosquitto.db").unlink()
            self.mosquitto.start()
        else:
            self.embedded.stop()
            self.embedded.start()

    def stop(self) -> None:
        if self.kind == "mosquitto":
            self.mosquitto.stop()
        else:
            self.embedded.stop()


@dataclass
class Bench:
    settings: Settings
    start_broker: Callable[..., Broker]
    relays: RelayRunner  # relays to start with ``mqtt_url`` of the broker (or proxy) to use


@pytest.fixture
def bench(app, settings_overrides: dict, broker_kind: str) -> Iterator[Bench]:
    settings = load_settings(settings_overrides)
    with db.connection_context():
        broker_logins.ensure_service(settings)
        broker_logins.sync_files(settings)
    started: list[Broker] = []

    def start(**mosquitto_conf: str) -> Broker:
        started.append(Broker(broker_kind, settings, **mosquitto_conf))
        return started[-1]

    relays = RelayRunner({**settings_overrides, "relay_poll_seconds": 0.5})
    yield Bench(settings, start, relays)
    relays.stop_all()
    for broker in started:
        broker.stop()


def caught_up(relay: Relay, after: int) -> None:
    """Wait until the relay has connected again and caught up after its ``after``-th connection."""
    wait_until(lambda: relay.catch_ups > after, 15, "the relay reconnected and caught up")


def database_state() -> dict[str, int]:
    """Topic -> version of every order and worklist, as the database has them."""
    with db.connection_context():
        state = {contract.order_status(o.id): o.version for o in Order.select()}
        for row in Outbox.select().where(Outbox.kind == "worklist"):
            version = contract.loads(row.payload.encode())["version"]
            state[row.topic] = max(version, state.get(row.topic, 0))
    return state


def dashboard(broker: Broker, login: dict, *filters: str) -> Subscriber:
    """A dashboard's subscription, with an admin's dashboard login (one connection at a time)."""
    return Subscriber(
        broker.host, broker.port, filters or ("orders/#", "agents/#"), login=login, client_id=new_id("dash")
    ).start()


def holds(subscriber: Subscriber, state: dict[str, int], timeout: float = 15.0) -> None:
    """Wait until what ``subscriber`` received has every topic of ``state`` at its version."""

    def complete() -> bool:
        subscriber.settle(quiet=0.05, timeout=0.2)
        latest = {topic: r.version for topic, r in subscriber.latest().items()}
        return all(latest.get(topic) == version for topic, version in state.items())

    wait_until(complete, timeout, "the subscriber holds the database's state")


def broker_holds_the_database(broker: Broker, login: dict) -> None:
    """A dashboard connecting now gets, retained, every order and worklist at its current version."""
    late = dashboard(broker, login)
    try:
        holds(late, database_state())
    finally:
        late.stop()


def published(relay: Relay) -> None:
    """Wait until the broker has acknowledged every outbox row, the relay's marker included."""
    last = max_outbox_id()
    wait_until(lambda: relay.marked == last, 15, "the relay's marker covers every outbox row")


@pytest.fixture
def orders(client, admin, make_agent, place_order) -> list[str]:
    """ORDERS live orders, two of them assigned to two agents."""
    ids = [place_order()["id"] for _ in range(ORDERS)]
    for order_id in ids[:2]:
        set_status(client, admin, order_id, "confirmed")
        assign(client, admin, order_id, make_agent().agent_id)
    return ids


def test_relay_reconnects_and_restarts_republish_nothing(client, admin, orders, bench):
    """Five forced reconnects of the relay (its TCP connection reset) and a relay restart:
    a dashboard receives the five changes made meanwhile and nothing else. Positive
    control: once the broker has lost its retained store, the relay republishes it all."""
    broker = bench.start_broker()
    proxy = TcpProxy(broker.host, broker.port).start()
    through_proxy = f"mqtt://127.0.0.1:{proxy.port}"
    try:
        relay = bench.relays(mqtt_url=through_proxy)
        watcher = dashboard(broker, admin.mqtt)
        holds(watcher, database_state())
        watcher.settle(quiet=0.5)
        seen_before = len(watcher.seen)

        changed: list[str] = []

        def change(relay: Relay) -> None:
            """One order confirmed: the one message the dashboard should get. Returns once the
            relay has its acknowledgement (a reset before it would send it again: at least once)."""
            changed.append(orders[2 + len(changed)])
            set_status(client, admin, changed[-1], "confirmed")
            topic = contract.order_status(changed[-1])
            watcher.wait_for(lambda r: r.topic == topic and r.version == 2)
            published(relay)

        for _ in range(5):
            catch_ups = relay.catch_ups
            proxy.drop()
            caught_up(relay, catch_ups)
            change(relay)
        bench.relays.stop_all()
        relay = bench.relays(mqtt_url=through_proxy)
        # As after each reset: the new relay's first catch-up, then the change (on PostgreSQL
        # it may first wait a standby poll for the stopped relay's lock to be released).
        caught_up(relay, 0)
        change(relay)
        watcher.settle(quiet=0.5)

        extra = watcher.seen[seen_before:]
        assert [(r.topic, r.version) for r in extra] == [
            (contract.order_status(oid), 2) for oid in changed
        ], f"{len(extra)} messages for {len(changed)} changes"
        assert relay.republished == 0

        # Positive control: the broker loses its retained store; the relay rebuilds it.
        watcher.stop()  # one connection per dashboard login
        catch_ups = relay.catch_ups
        broker.restart(lose_store=True)
        caught_up(relay, catch_ups)
        assert relay.republished >= ORDERS + 2  # every order, both worklists
        broker_holds_the_database(broker, admin.mqtt)
    finally:
        proxy.stop()


@pytest.mark.parametrize("broker_kind", ["mosquitto"])
def test_mosquitto_restarts_cost_only_what_its_last_save_lacks(client, admin, orders, bench):
    """Mosquitto with persistence on (saving here only when it exits): a clean restart
    restores its retained store, and nothing is republished; a kill -9 restores the last
    save, and the relay republishes exactly the three orders changed since."""
    broker = bench.start_broker(autosave_interval="3600")
    relay = bench.relays(mqtt_url=f"mqtt://{broker.host}:{broker.port}")
    published(relay)

    catch_ups = relay.catch_ups
    broker.restart()  # SIGTERM: Mosquitto saves its store on the way out
    caught_up(relay, catch_ups)
    assert relay.republished == 0
    broker_holds_the_database(broker, admin.mqtt)

    for order_id in orders[2:5]:
        set_status(client, admin, order_id, "confirmed")
    published(relay)
    catch_ups = relay.catch_ups
    broker.restart(sig=signal.SIGKILL)  # back to the last save: without these three changes
    caught_up(relay, catch_ups)
    assert relay.republished == 3
    broker_holds_the_database(broker, admin.mqtt)


def test_only_the_service_reads_or_writes_the_marker(client, admin, make_agent, orders, bench):
    """An agent's device cannot clear or forge the relay's marker, nor can a dashboard read
    it: after their attempts a relay reconnect still republishes nothing. (When the marker
    is really gone the relay republishes everything: the first test's positive control.)"""
    broker = bench.start_broker()
    proxy = TcpProxy(broker.host, broker.port).start()
    try:
        relay = bench.relays(mqtt_url=f"mqtt://127.0.0.1:{proxy.port}")
        published(relay)
        agent = make_agent()
        device = Subscriber(
            broker.host,
            broker.port,
            (f"agents/{agent.agent_id}/#",),
            login=agent.mqtt,
            client_id=agent.agent_id,
        ).start()
        forged = contract.relay_epoch("0" * 32, 0)
        for payload in (b"", forged):
            device.client.publish(contract.RELAY_EPOCH, payload, qos=1, retain=True).wait_for_publish(5)
        device.stop()

        reader = dashboard(broker, admin.mqtt, "orderbus/#", "orders/#")
        set_status(client, admin, orders[2], "confirmed")  # the relay publishes its marker again
        reader.wait_for(lambda r: r.topic == contract.order_status(orders[2]) and r.version == 2)
        published(relay)
        reader.settle(quiet=0.5)
        assert not [r for r in reader.seen if r.topic.startswith("orderbus/")]
        reader.stop()

        catch_ups = relay.catch_ups
        proxy.drop()
        caught_up(relay, catch_ups)
        assert relay.republished == 0
    finally:
        proxy.stop()


@pytest.mark.parametrize("broker_kind", ["amqtt"])
def test_finished_orders_keep_their_retained_state_across_a_broker_restart(
    client, admin, place_order, broker, start_relay, subscribe
):
    """An order finished within ORDERBUS_RETAIN_TERMINAL_SECONDS is republished after the
    embedded broker restarts empty, so an MQTT-only client still tells "finished" from
    "unknown"; one past the window (its retained state cleared) stays cleared, and a live
    one is republished as before."""
    relay = start_relay(retain_terminal_seconds=3600)
    live, finished, old = (place_order()["id"] for _ in range(3))
    set_status(client, admin, finished, "rejected")
    set_status(client, admin, old, "cancelled")
    with db.connection_context():  # finished two hours ago: past the window
        ended = Order.get_by_id(old).terminal_at
        Order.update(terminal_at=ended - timedelta(hours=2)).where(Order.id == old).execute()
    watcher = subscribe(contract.order_status(old))
    watcher.wait_for(lambda r: r.payload == b"", timeout=10)  # cleared by the relay
    watcher.stop()

    catch_ups = relay.catch_ups
    broker.stop()
    broker.start()  # empty: the embedded broker keeps nothing
    caught_up(relay, catch_ups)
    late = subscribe("orders/+/status")
    late.wait_for(lambda r: r.topic == contract.order_status(finished), timeout=10)
    late.wait_for(lambda r: r.topic == contract.order_status(live))
    late.settle(quiet=0.5)
    retained = {r.topic: r.json["order"]["status"] for r in late.seen if r.retain and r.payload}
    assert retained == {contract.order_status(live): "placed", contract.order_status(finished): "rejected"}
