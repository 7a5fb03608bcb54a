"""The webhook worker: ``python -m order_service.webhooks``.

Follows the service's event log (the query behind ``GET /api/v1/events``) from a
cursor stored in the database, queues one delivery per subscribed endpoint and
POSTs it, signed, retrying with exponential backoff. MQTT is only a wake-up
signal: every state change is in the database, so the bridge may be killed at any
point and resumes where it stopped. Delivery is at least once: a POST that
succeeded just before a crash is sent again, with the same ``X-Orderbus-Event-Id``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from contract.link import MqttFeed
from order_service.accounts.broker_logins import WEBHOOKS, MissingServiceSecret, bridge_address
from order_service.config import Settings, load_settings
from order_service.store.db import db, init_db
from order_service.store.models import utcnow
from order_service.webhooks import destination
from order_service.webhooks import model as webhooks
from order_service.webhooks.model import WebhookDelivery

logger = logging.getLogger(__name__)

BATCH = 50


@dataclass
class Outcome:
    status_code: int | None
    error: str
    duration_ms: int


def post(
    opener: urllib.request.OpenerDirector, url: str, secret: str, delivery: WebhookDelivery, timeout: float
) -> Outcome:
    """One attempt, through ``opener`` (``destination.opener``: checked addresses, no redirect)."""
    body = webhooks.payload_bytes(delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "orderbus-webhooks/1",
        webhooks.EVENT_HEADER: delivery.event,
        webhooks.EVENT_ID_HEADER: delivery.event_id,
        webhooks.DELIVERY_HEADER: str(delivery.id),
        webhooks.TIMESTAMP_HEADER: str(int(time.time())),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret, body),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
            code, error = response.status, ""
    except urllib.error.HTTPError as exc:
        code, error = exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        code, error = None, f"{type(exc).__name__}: {exc}"
    return Outcome(code, error, int((time.monotonic() - started) * 1000))


def _post_all(
    opener: urllib.request.OpenerDirector, deliveries: list[WebhookDelivery], timeout: float
) -> list[Outcome]:
    return [post(opener, d.endpoint.url, d.endpoint.secret, d, timeout) for d in deliveries]


class WebhookBridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.wakeup = threading.Event()
        self.feed: MqttFeed | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook")
        self._opener = destination.opener(settings.webhooks_allow_private)

    def wake(self) -> None:
        self.wakeup.set()

    def run(self, stop: threading.Event, *, mqtt: bool = True) -> None:
        if mqtt:
            address = bridge_address(self.settings, WEBHOOKS)
            # Its own login, whose username is its client id on both brokers.
            self.feed = MqttFeed(address, address.username or "", lambda _m: self.wakeup.set()).start()
        db.connect(reuse_if_open=True)
        try:
            while not stop.is_set():
                try:
                    self.step()
                    timeout = self._idle_seconds()
                except Exception:  # the database may be briefly locked or away: keep going
                    logger.exception("webhook worker step failed; retrying")
                    timeout = 1.0
                self.wakeup.wait(timeout)
                self.wakeup.clear()
        finally:
            if self.feed:
                self.feed.stop()
            self._pool.shutdown(wait=True)
            db.close()

    def step(self) -> int:
        """Queue new events, then make every due attempt; returns the attempts made."""
        while webhooks.fan_out() > 0:
            pass
        made = 0
        while True:
            due = list(WebhookDelivery.due(utcnow(), BATCH))
            if not due:
                return made
            timeout = self.settings.webhook_timeout_seconds
            # In parallel across endpoints, in event order within one (the usual case: no retries).
            by_endpoint: dict[str, list[WebhookDelivery]] = {}
            for d in due:
                by_endpoint.setdefault(d.endpoint_id, []).append(d)
            batches = [
                (group, self._pool.submit(_post_all, self._opener, group, timeout))
                for group in (sorted(g, key=lambda d: d.cursor) for g in by_endpoint.values())
            ]
            outcomes = [
                (d, outcome) for group, f in batches for d, outcome in zip(group, f.result(), strict=True)
            ]
            for delivery, outcome in outcomes:
                state = webhooks.record_attempt(
                    delivery,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                    retry_seconds=self.settings.webhook_retry_seconds,
                    backoff_seconds=self.settings.webhook_backoff_seconds,
                    backoff_max_seconds=self.settings.webhook_backoff_max_seconds,
                )
                log = logger.info if state == "delivered" else logger.warning
                log(
                    "webhook %s event %s attempt %d: %s (%s)",
                    delivery.endpoint_id,
                    delivery.event_id,
                    delivery.attempts + 1,
                    outcome.status_code or outcome.error,
                    state,
                )
            made += len(due)

    def _idle_seconds(self) -> float:
        wait = self.settings.webhook_poll_seconds
        next_due = WebhookDelivery.next_due_at()
        if next_due is not None:
            wait = min(wait, max((next_due - utcnow()).total_seconds(), 0.0))
        return max(wait, 0.01)


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s webhooks %(levelname)s %(message)s")
    init_db(settings.database_url, settings.sqlite_synchronous, "orderbus-webhooks")
    bridge = WebhookBridge(settings)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        bridge.wake()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        bridge.run(stop)
    except MissingServiceSecret as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
