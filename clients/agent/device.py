"""The agent's device: REST login, broker login, presence, live worklist, queued actions.

Used by the headless ``--json`` mode (and meant for the TUI). The device connects
with its agent id as a stable client id and a persistent session (clean session
off), registers a retained last will ``offline`` on ``agents/<id>/presence``,
publishes ``online`` there on every connect and every heartbeat
(``ORDERBUS_PRESENCE_HEARTBEAT_SECONDS``, docs/dispatch.md), and follows
``agents/<id>/assigned`` through :class:`clients.subscriber.Feed`, which drops
older or duplicate worklists and resyncs from ``GET /agents/<id>/orders`` on
every (re)connect.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import contract

from ..rest import Api, ApiError, ApiUnreachable
from ..subscriber import Feed, FeedError, Update
from .state import ActionQueue, Outcome, StateDir, Worklist, now_rfc3339

# How long a broker login issued a moment ago may be refused before it counts as refused.
FRESH_LOGIN_WAIT = 10.0
# With the broker unreachable at start, how long to wait for a refusal before starting offline.
KEEP_TRYING_WAIT = 5.0
# The broker link down this long: "offline" rather than "reconnecting" (paho retries either way).
OFFLINE_AFTER = float(os.environ.get("ORDERBUS_AGENT_OFFLINE_SECONDS", "15"))
# What an order that left the worklist became, by its status now.
GONE_BECAUSE = {
    "cancelled": "cancelled",
    "rejected": "cancelled",
    "delivered": "finished",
    "failed": "finished",
}


class DeviceError(Exception):
    """Something the user must fix (bad login, not an agent, broker refuses)."""


class AgentDevice:
    def __init__(
        self,
        api: Api,
        state: StateDir,
        *,
        mqtt_url: str | None = None,
        mqtt_ca_file: str | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self.api = api
        self.state = state
        self.mqtt_url = mqtt_url
        self.mqtt_ca_file = mqtt_ca_file  # mqtts:// or wss://: this CA instead of the system's
        self.heartbeat = heartbeat or float(os.environ.get("ORDERBUS_PRESENCE_HEARTBEAT_SECONDS", "30"))
        self.agent_id = ""
        self.worklist = Worklist(state)
        self.queue = ActionQueue(state)
        self.feed: Feed | None = None
        self._stop = threading.Event()
        self._login: tuple[str, str] | None = None
        self.gone: list[dict[str, Any]] = []  # orders that left the worklist, not yet explained
        self.finished_here: set[str] = set()  # delivered or failed from this device
        self._down_since: float | None = None
        self._keep_trying = False

    # -- start ---------------------------------------------------------------------
    def login(self, username: str, password: str, *, allow_offline: bool = False) -> None:
        """Log in over REST. With ``allow_offline`` and the API unreachable, a device that
        logged in before starts from its state dir (its broker login): it shows the
        worklist from the broker and queues actions until the API answers."""
        try:
            answer = self.api.login(username, password)
        except ApiError as exc:
            raise DeviceError(exc.explain()) from None
        except ApiUnreachable as exc:
            stored = self.state.load("mqtt.json", None)
            if allow_offline and stored and stored.get("login") == username and stored.get("agent_id"):
                self.agent_id = stored["agent_id"]
                self._login = (username, password)
                return
            raise DeviceError(f"the API does not answer ({exc}); is `make run` running?") from None
        user = answer["user"]
        if user["role"] != "agent" or not user.get("agent_id"):
            raise DeviceError(f"{username!r} is a {user['role']}, not a delivery agent")
        self.agent_id = user["agent_id"]
        self._login = (username, password)

    def _credentials(self, rotate: bool = False) -> tuple[dict[str, Any], bool]:
        """The device's broker login, and whether it was issued just now (not stored before)."""
        stored = self.state.load("mqtt.json", None)
        if stored and stored.get("agent_id") == self.agent_id and not rotate:
            return stored, False
        try:
            issued = self.api.request("POST", f"/agents/{self.agent_id}/mqtt-credentials")["mqtt"]
        except ApiError as exc:
            raise DeviceError("could not get this device's broker login:\n" + exc.explain()) from None
        except ApiUnreachable as exc:
            raise DeviceError(
                f"the broker refused the stored login and the API does not answer ({exc})"
            ) from None
        stored = {**issued, "agent_id": self.agent_id, "login": self._login[0] if self._login else None}
        self.state.save("mqtt.json", stored)
        return stored, True

    def presence(self, state: str) -> bytes:
        return contract.presence(self.agent_id, state, now_rfc3339())

    @property
    def presence_topic(self) -> str:
        return contract.agent_presence(self.agent_id)

    def _snapshot(self) -> list[tuple[str, dict[str, Any]]]:
        body = self.api.request("GET", f"/agents/{self.agent_id}/orders")
        return [(contract.agent_assigned(self.agent_id), body)]

    def connect(self, *, keep_trying: bool = False) -> None:
        """Connect with the stored broker login; if the broker refuses it, with a new one. With
        ``keep_trying`` an unreachable broker is no error: the device starts, says it is not
        online (:meth:`connection`) and connects when the broker is back."""
        self._keep_trying = keep_trying
        feed = self._connect(*self._credentials())
        if feed is None:
            feed = self._connect(*self._credentials(rotate=True))
        self.feed = feed
        threading.Thread(target=self._heartbeat, name="presence-heartbeat", daemon=True).start()

    def _connect(self, login: dict[str, Any], fresh: bool) -> Feed | None:
        """A started feed; None when the broker refuses a stored login. A login issued just now
        is tried again for a while before it counts as refused: the broker learns of it when it
        reads its password file again, which Mosquitto does a moment later (on SIGHUP)."""
        deadline = time.monotonic() + (FRESH_LOGIN_WAIT if fresh else 0.0)
        delay = 0.2
        while True:
            feed = Feed(
                self.mqtt_url or ",".join(login.get("urls") or [login["url"]]),  # a cluster: every node
                [contract.agent_assigned(self.agent_id)],
                client_id=login.get("client_id") or self.agent_id,
                username=login["username"],
                password=login["password"],
                clean_session=False,
                resync=self._snapshot,
                will=(self.presence_topic, self.presence("offline")),
                birth=lambda: (self.presence_topic, self.presence("online")),
                ca_file=self.mqtt_ca_file,
            )
            try:
                return feed.start(KEEP_TRYING_WAIT, keep_trying=True) if self._keep_trying else feed.start()
            except FeedError as exc:
                if not feed.refused:
                    raise DeviceError(str(exc)) from None
                if time.monotonic() >= deadline:
                    if not fresh:
                        return None
                    raise DeviceError(
                        f"{exc}: the broker refuses the login the API has just issued. Does it read the"
                        " service's password file, and re-read it when it changes? (docs/production.md)"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if self.feed is not None and self.feed.connected.is_set():
                self.feed.publish(self.presence_topic, self.presence("online"))

    def stop(self, *, say_offline: bool = True) -> None:
        self._stop.set()
        if self.feed is not None:
            if say_offline:  # a clean exit: the will only fires on an unclean drop
                info = self.feed.client.publish(
                    self.presence_topic, self.presence("offline"), qos=1, retain=True
                )
                try:
                    info.wait_for_publish(2)
                except (RuntimeError, ValueError):
                    pass
            self.feed.stop()

    # -- running -------------------------------------------------------------------
    def next_update(self, timeout: float) -> Update | None:
        assert self.feed is not None
        update = self.feed.get(timeout)
        if update is not None and update.kind == "worklist" and update.key == self.agent_id:
            left = self.worklist.apply(update.payload)
            self.gone += [o for o in left if o["id"] not in self.finished_here]
            return update
        return None

    def connection(self) -> str:
        """The broker link, truthfully: ``online``; ``reconnecting`` (down, paho retrying);
        ``offline`` (down for OFFLINE_AFTER seconds or more: the network or the broker is gone)."""
        if self.feed is not None and self.feed.connected.is_set():
            self._down_since = None
            return "online"
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        return "offline" if now - self._down_since >= OFFLINE_AFTER else "reconnecting"

    def notices(self) -> list[dict[str, Any]]:
        """Explain the orders that left the worklist without this device finishing them, asking
        the API what became of each: ``cancelled``, ``reassigned`` (to another agent, or taken
        off), ``finished`` (by an admin) or ``removed`` (the API does not answer)."""
        explained = []
        while self.gone:
            order = self.gone.pop(0)
            name = (order.get("customer") or {}).get("name", "")
            notice = {"event": "notice", "order_id": order["id"], "customer": name}
            try:
                now = self.api.request("GET", f"/orders/{order['id']}")
            except ApiError as exc:  # 404: no longer ours to see
                kind = "reassigned" if exc.status in (403, 404) else "removed"
                explained.append({**notice, "kind": kind, "status": None})
                continue
            except ApiUnreachable:
                explained.append({**notice, "kind": "removed", "status": None})
                continue
            kind = GONE_BECAUSE.get(now["status"], "reassigned")
            explained.append({**notice, "kind": kind, "status": now["status"]})
        return explained

    def act(self, order_id: str, status: str, failure: dict[str, str] | None = None) -> list[Outcome]:
        """Queue an action (with the version seen now and the time) and try to send the queue."""
        order = self.worklist.orders.get(order_id)
        if status in ("delivered", "failed"):
            self.finished_here.add(order_id)
        self.queue.add(order_id, status, order["version"] if order else None, failure)
        return self.replay()

    def answer_offer(self, order_id: str, accept: bool) -> dict[str, Any]:
        verb = "accept" if accept else "decline"
        try:
            self.api.request("POST", f"/orders/{order_id}/offer/{verb}")
            return {"event": "offer", "order_id": order_id, "result": verb + "ed"}
        except (ApiError, ApiUnreachable) as exc:
            detail = exc.explain() if isinstance(exc, ApiError) else str(exc)
            return {"event": "offer", "order_id": order_id, "result": "failed", "detail": detail}

    def replay(self) -> list[Outcome]:
        outcomes = self.queue.replay(self.api)
        if self.queue.needs_login and self._login is not None:
            self.queue.needs_login = False
            try:
                self.login(*self._login)
            except DeviceError:
                return outcomes
            outcomes += self.queue.replay(self.api)
        return outcomes
