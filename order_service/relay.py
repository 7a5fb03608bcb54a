"""The relay process: ``python -m order_service.relay``.

Puts three units together in one process, gated by one relay lock (only the active
relay runs any of them; a standby waits to take over):

- the outbox publisher (``outbox.relay``), on the main thread;
- the dispatch timers and presence intake (``dispatch.timers``), which read agent
  presence from the publisher's broker connection;
- the location intake (``dispatch.location_intake``), which reads agents' position
  reports from that connection too;
- the broker's login files (``accounts.sync``).
"""

from __future__ import annotations

import logging
import signal
import threading

from contract.link import masked_url
from order_service.accounts import broker_logins
from order_service.accounts.sync import LoginFileSync
from order_service.config import Settings, load_settings
from order_service.dispatch.location_intake import LocationIntake
from order_service.dispatch.timers import DispatchTimers
from order_service.outbox.relay import Relay
from order_service.store.db import init_db

logger = logging.getLogger(__name__)


def build_relay(settings: Settings) -> Relay:
    timers = DispatchTimers(settings)
    locations = LocationIntake(settings)
    files = LoginFileSync(settings)
    inbound = {topic: timers.on_presence for topic in timers.subscriptions}
    inbound.update({topic: locations.on_report for topic in locations.subscriptions})
    return Relay(
        settings,
        inbound=inbound,
        before_connect=files.sync_now,
        companions=(timers, locations, files),
    )


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s relay %(levelname)s %(message)s")
    init_db(settings.database_url, settings.sqlite_synchronous)
    stop = threading.Event()
    try:
        relay = build_relay(settings)
    except broker_logins.MissingServiceSecret as exc:
        raise SystemExit(f"error: {exc}") from None

    def on_signal(*_: object) -> None:
        stop.set()
        relay.wake()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    logger.info("relay starting: database %s, broker %s", masked_url(settings.database_url), relay.address)
    relay.run(stop)
    logger.info("relay stopped")


if __name__ == "__main__":
    main()
