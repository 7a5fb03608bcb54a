"""The relay process: ``python -m order_service.relay``.

Puts its units together in one process, gated by one relay lock (only the active
relay runs any of them; a standby waits to take over):

- the outbox publisher (``outbox.relay``), on the main thread;
- the dispatch timers and presence intake (``dispatch.timers``), which read agent
  presence from the publisher's broker connection;
- the location intake (``dispatch.location_intake``), which reads agents' position
  reports from that connection too;
- the broker's login files (``accounts.sync``);
- Web Push to agents whose device is not connected (``push.sender``).

With ``ORDERBUS_BROKER_IN_RELAY=true`` the process also runs the embedded broker
(``broker.server``) on the broker's ports, and the publisher hands it each message
directly instead of over its MQTT connection (which it keeps for what it reads and for
its retained marker): no broker process, no packet, no PUBACK per message.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from broker.server import BrokerStartError, EmbeddedBroker
from contract.link import LocalPublish, masked_url
from order_service.accounts import broker_logins
from order_service.accounts.sync import LoginFileSync
from order_service.config import Settings, load_settings
from order_service.dispatch.location_intake import LocationIntake
from order_service.dispatch.timers import DispatchTimers
from order_service.outbox.relay import Relay
from order_service.push.sender import PushSender
from order_service.store.checkpoint import Checkpointer
from order_service.store.db import init_db

logger = logging.getLogger(__name__)

# How long a thread of the relay may hold the GIL while another waits for it (CPython's
# default: 5 ms). The publisher waits on paho's network thread for every PUBACK, and the
# companions run on threads of their own: with the default, a PUBACK read while the
# publisher ran Python waited up to 5 ms for its turn, several times per batch. Measured
# on the production profile at 250 orders/s (docs/benchmarks/findings.md): receipt p50
# over seven runs each, median 12 ms with 5 ms, 4.5 ms with 0.5 ms.
SWITCH_INTERVAL_SECONDS = 0.0005


def build_relay(settings: Settings, local_publish: LocalPublish | None = None) -> Relay:
    timers = DispatchTimers(settings)
    locations = LocationIntake(settings)
    files = LoginFileSync(settings)
    inbound = {topic: timers.on_presence for topic in timers.subscriptions}
    inbound.update({topic: locations.on_report for topic in locations.subscriptions})
    return Relay(
        settings,
        inbound=inbound,
        before_connect=files.sync_now,
        companions=(timers, locations, files, PushSender(settings), Checkpointer()),
        local_publish=local_publish,
    )


def in_process_broker(settings: Settings) -> EmbeddedBroker:
    """The embedded broker for ``ORDERBUS_BROKER_IN_RELAY`` (not started), as ``python -m
    broker`` would run it from the same settings; SystemExit when the relay publishes elsewhere."""
    if settings.cluster_nodes > 1 or settings.mqtt_failover_urls:
        raise SystemExit(
            "error: ORDERBUS_BROKER_IN_RELAY runs the embedded broker: not with a cluster or failover brokers"
        )
    if not settings.mqtt_is_embedded_broker:
        here = f"{settings.broker_host}:{settings.broker_port}"
        raise SystemExit(
            f"error: ORDERBUS_BROKER_IN_RELAY runs the embedded broker on {here}, but ORDERBUS_MQTT_URL"
            f" is {masked_url(settings.mqtt_url)}: unset it, or turn ORDERBUS_BROKER_IN_RELAY off"
        )
    return EmbeddedBroker(
        settings.broker_host,
        settings.broker_port,
        settings.broker_ws_port,
        password_file=settings.mqtt_password_path,
        acl_file=settings.mqtt_acl_path,
    )


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s relay %(levelname)s %(message)s")
    init_db(settings.database_url, settings.sqlite_synchronous, "orderbus-relay-data")
    stop = threading.Event()
    broker = in_process_broker(settings) if settings.broker_in_relay else None
    try:
        relay = build_relay(settings, broker.publish_local if broker else None)
    except broker_logins.MissingServiceSecret as exc:
        raise SystemExit(f"error: {exc}") from None
    if broker is not None:
        try:
            broker.start()
        except BrokerStartError as exc:
            raise SystemExit(f"error: {exc}") from None
        logger.info("the embedded broker runs in this process, on %s:%d", settings.broker_host, broker.port)

    def on_signal(*_: object) -> None:
        stop.set()
        relay.wake()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    logger.info("relay starting: database %s, broker %s", masked_url(settings.database_url), relay.address)
    try:
        relay.run(stop)
    finally:
        if broker is not None:
            broker.stop()
    logger.info("relay stopped")


if __name__ == "__main__":
    main()
