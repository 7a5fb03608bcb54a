"""A real webhook receiver on 127.0.0.1 and webhook workers in threads or processes."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.store.db import db
from order_service.webhooks.worker import WebhookBridge


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """Answers 500 to the first ``fail_first`` POSTs, then 204; every POST is recorded."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.hits: queue.Queue[Hit] = queue.Queue()
        self.all: list[Hit] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    failing = len(receiver.all) < receiver.fail_first
                    hit = Hit(dict(self.headers), body, 500 if failing else 204)
                    receiver.all.append(hit)
                self.send_response(hit.answered)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.hits.put(hit)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def next(self, timeout: float = 10.0) -> Hit:
        return self.hits.get(timeout=timeout)

    def delivered(self, count: int, timeout: float = 10.0) -> list[Hit]:
        """The first ``count`` POSTs answered 2xx, in arrival order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = [h for h in self.all if h.answered < 300]
            if len(ok) >= count:
                return ok
            time.sleep(0.05)
        raise AssertionError(f"{len([h for h in self.all if h.answered < 300])} of {count} deliveries")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BridgeRunner:
    """Webhook bridges in threads, as ``python -m order_service.webhooks`` runs them."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.running: list[tuple[WebhookBridge, threading.Event, threading.Thread]] = []
        with db.connection_context():  # what `python -m order_service bootstrap` does
            loaded = load_settings(settings)
            broker_logins.ensure_bridges(loaded)
            broker_logins.sync_files(loaded)

    def __call__(self, mqtt: bool = True, **overrides) -> WebhookBridge:
        bridge = WebhookBridge(load_settings({**self.settings, **overrides}))
        stop = threading.Event()
        thread = threading.Thread(target=bridge.run, args=(stop,), kwargs={"mqtt": mqtt}, daemon=True)
        thread.start()
        self.running.append((bridge, stop, thread))
        return bridge

    def stop_all(self) -> None:
        for bridge, stop, thread in self.running:
            stop.set()
            bridge.wake()
            thread.join(15)
            assert not thread.is_alive(), "webhook worker did not stop"
        self.running.clear()
