"""The relay unit that sends Web Push for new assignments and offers.

It reads the worklists the service itself wrote to the outbox (``agents/<id>/assigned``
rows, in id order, from the last one there when the unit started), compares each with
the agent's previous worklist and finds the orders newly assigned (an accepted offer is
not new) and the new offers. When the agent's device was not connected as the worklist
changed (its presence is not ``online`` and has not changed since), each of the agent's
subscriptions gets one push per new order: a small JSON body (:func:`notification`)
encrypted for the browser (RFC 8291, aes128gcm) and signed with the service's VAPID key
(RFC 8292), sent by pywebpush on a small pool of threads, never on a request's path. A
push service's 429, 5xx or a network error is tried again up to ``push_attempts`` times
(backing off, honouring Retry-After up to :data:`MAX_RETRY_AFTER`); a 404 or 410 (the
subscription is gone) deletes the subscription; anything else is logged and dropped. At
most :data:`MAX_PENDING` pushes wait at once; past that new ones are dropped and logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import peewee
import requests
from pywebpush import WebPushException, webpush

from order_service.config import Settings
from order_service.push import keys
from order_service.push.model import PushSubscription
from order_service.store.db import db
from order_service.store.models import Agent, Outbox, utcnow

logger = logging.getLogger(__name__)

MAX_PENDING = 1000
MAX_PER_WORKLIST = 5  # pushes for one worklist change, at most (a burst of assignments)
MAX_RETRY_AFTER = 60.0
GONE = (404, 410)
ADDRESS_CHARS = 200  # a push's body stays far below the 4 KiB push services take


def notification(kind: str, agent_id: str, order: dict) -> dict:
    """The push's body, which the courier app's service worker shows."""
    number = order.get("number")
    label = f"#{number}" if number is not None else order["id"]
    customer = order.get("customer") or {}
    address = str(customer.get("address") or "")[:ADDRESS_CHARS]
    return {
        "kind": kind,  # "assigned" or "offer"
        "agent_id": agent_id,
        "order_id": order["id"],
        "number": number,
        "title": f"New order {label}" if kind == "assigned" else f"Offer: order {label}",
        "body": address,
    }


def new_work(previous: dict | None, current: dict) -> list[tuple[str, dict]]:
    """(kind, order) of each order assigned or offered in ``current`` and not in ``previous``."""
    before_orders = {o["id"] for o in (previous or {}).get("orders", [])}
    before_offers = {o["id"] for o in (previous or {}).get("offers", [])}
    known = before_orders | before_offers  # an accepted offer is not announced again
    found = [("assigned", o) for o in current.get("orders", []) if o["id"] not in known]
    found += [("offer", o) for o in current.get("offers", []) if o["id"] not in before_offers]
    return found


class PushSender:
    name = "push"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._done = threading.Event()
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        self.sent = self.gone = self.failed = self.dropped = 0  # counts, for logs and tests

    def wake(self) -> None:
        self._wake.set()

    def run(self, done: threading.Event, still_active: Callable[[], bool]) -> None:
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay-push")
        self._done = done
        try:
            cursor = Outbox.select(peewee.fn.MAX(Outbox.id)).scalar() or 0
            while not done.is_set() and still_active():
                self._wake.clear()
                try:
                    cursor = self._scan(cursor, pool)
                except peewee.DatabaseError as exc:
                    logger.error("push: database error: %s", exc)
                except Exception:  # a bug here must not stop the relay's other units
                    logger.exception("push: scan failed")
                self._wake.wait(self.settings.push_poll_seconds)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            db.close()

    def _scan(self, cursor: int, pool: ThreadPoolExecutor) -> int:
        # Without the payloads: a worklist holds every order of its agent, and only the few
        # of an agent that may get a push are read and parsed (a busy agent's worklist is
        # large, and parsing each one cost the relay O(K) per change, O(K²) for a backlog).
        rows = (
            Outbox.select(Outbox.id, Outbox.topic, Outbox.agent_id, Outbox.created_at)
            .where((Outbox.id > cursor) & (Outbox.kind == "worklist"))
            .order_by(Outbox.id)
            .limit(500)
        )
        for row in list(rows):
            cursor, agent_id = row.id, row.agent_id
            subscriptions = self._pushable(agent_id, row.created_at) if agent_id else []
            if not agent_id or not subscriptions:
                continue
            current = json.loads(Outbox.select(Outbox.payload).where(Outbox.id == row.id).scalar())
            previous = (
                Outbox.select(Outbox.payload)
                .where((Outbox.topic == row.topic) & (Outbox.id < row.id))
                .order_by(Outbox.id.desc())
                .first()
            )
            work = new_work(json.loads(previous.payload) if previous else None, current)
            if work:
                self._announce(agent_id, subscriptions, work[:MAX_PER_WORKLIST], pool)
        return cursor

    def _pushable(self, agent_id: str, written_at: datetime) -> list[PushSubscription]:
        """The subscriptions to push a worklist change to: none while the agent's app is
        connected (it shows the order itself) or when it went offline after the change."""
        agent = Agent.get_or_none(Agent.id == agent_id)
        if agent is None or agent.presence == "online":
            return []
        if agent.presence_at is not None and agent.presence_at > written_at:
            return []  # it went offline after the change: it was connected when it came
        return list(PushSubscription.select().where(PushSubscription.agent == agent_id))

    def _announce(
        self,
        agent_id: str,
        subscriptions: list[PushSubscription],
        work: list[tuple[str, dict]],
        pool: ThreadPoolExecutor,
    ) -> None:
        for subscription in subscriptions:
            for kind, order in work:
                if not self._pending.acquire(blocking=False):
                    self.dropped += 1
                    logger.warning("push: %d pushes waiting; dropped one for %s", MAX_PENDING, agent_id)
                    continue
                body = json.dumps(notification(kind, agent_id, order), separators=(",", ":"))
                pool.submit(self._deliver, subscription.id, subscription.info(), body)

    def _deliver(self, subscription_id: str, info: dict, body: str) -> None:
        try:
            status = self._send(info, body)
            with db.connection_context():
                if status in GONE:
                    PushSubscription.delete().where(PushSubscription.id == subscription_id).execute()
                    self.gone += 1
                    logger.info("push: subscription %s is gone (%d): deleted", subscription_id, status)
                elif status is not None:
                    PushSubscription.update(last_sent_at=utcnow(), last_status=status).where(
                        PushSubscription.id == subscription_id
                    ).execute()
        except Exception:
            logger.exception("push: delivery to %s failed", subscription_id)
        finally:
            self._pending.release()

    def _send(self, info: dict, body: str) -> int | None:
        """POST the push, trying again on 429/5xx/network errors; the final status (None:
        no answer)."""
        delay = 1.0
        for attempt in range(1, self.settings.push_attempts + 1):
            wait = delay
            try:
                response = webpush(
                    info,
                    data=body,
                    vapid_private_key=keys.vapid(self.settings),
                    vapid_claims={"sub": self.settings.vapid_subject},  # aud and exp: pywebpush
                    ttl=self.settings.push_ttl_seconds,
                    timeout=self.settings.push_timeout_seconds,
                    headers={"Urgency": "high"},
                )
                self.sent += 1
                return int(getattr(response, "status_code", 201))
            except WebPushException as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status is not None and status != 429 and status < 500:
                    if status not in GONE:
                        self.failed += 1
                        logger.warning("push: refused with %s: %s", status, str(exc)[:300])
                    return status
                wait = _retry_after(exc.response, delay)
                logger.warning("push: attempt %d: %s", attempt, str(exc)[:300])
            except requests.RequestException as exc:
                logger.warning("push: attempt %d: %s", attempt, exc)
            if attempt < self.settings.push_attempts and self._done.wait(wait):
                break
            delay = min(delay * 2, 30.0)
        self.failed += 1
        return None


def _retry_after(response: requests.Response | None, default: float) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(response.headers["Retry-After"])))  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return default
