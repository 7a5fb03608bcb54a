"""The API's HTTP server as the Procfile and the systemd unit run it (``python -m
order_service.api_server``: granian, WSGI, two worker processes), on real sockets.

A worker killed with SIGKILL is replaced while the other serves; SIGHUP replaces every
worker while requests go on succeeding; SIGTERM to the main process lets a request under
way finish, then the server exits cleanly; an idle kept-alive connection stays open for
ORDERBUS_API_KEEPALIVE_SECONDS and is closed after, and a client trickling its headers is
cut off after as long; oversized request heads are refused; the access log is written
only when ORDERBUS_API_ACCESS_LOG is on; ORDERBUS_API_THREADS bounds the requests a worker
runs at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.processes import child_env, cli
from harness.system import System
from order_service.api_server import build
from order_service.config import load_settings
from tests.helpers import wait_until
from tests.test_processes import ORDER

pytestmark = pytest.mark.e2e

WORKERS = 2


@dataclass
class Api:
    system: System
    port: int
    token: str

    @property
    def pid(self) -> int:
        return self.system.procs["api"].pid

    def workers(self) -> set[int]:
        """The main process's children: its worker processes."""
        found: set[int] = set()
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                found |= {int(pid) for pid in task.read_text().split()}
        return found

    def get(self, path: str = "/api/v1/healthz") -> int:
        """One request on a connection of its own: the status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def log(self) -> str:
        return (self.system.tmp / "api.log").read_text()


def start_api(tmp_path: Path, **settings: str) -> System:
    tmp_path.mkdir(exist_ok=True)
    env = child_env(tmp_path / "var", **{"ORDERBUS_API_WORKERS": str(WORKERS), **settings})
    for step in ("migrate", "bootstrap"):
        result = cli(env, step)
        assert result.returncode == 0, result.stderr
    system = System(env, tmp_path)
    system.start("api")  # returns once /readyz answers
    return system


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API alone, two workers, its default settings (access log off), on a fresh SQLite file."""
    system = start_api(tmp_path)
    try:
        password = (tmp_path / "var" / "admin-password").read_text().strip()
        token = system.admin.login("admin", password)["access_token"]
        yield Api(system, int(system.env["ORDERBUS_API_PORT"]), token)
    finally:
        system.close()
    assert "Traceback" not in system.log(), system.log()


def test_a_killed_worker_is_replaced_and_the_other_serves_meanwhile(api: Api):
    """kill -9 of one worker: once it is gone, every request on a new connection is answered
    (by the other worker), and the main process starts a new worker at once; the main
    process stays. (A connection that reached the killed worker itself is lost with it, as
    under any server; see docs/production.md on tcp_migrate_req for the ones it had queued.)"""
    before = wait_until(lambda: len(api.workers()) == WORKERS and api.workers(), what="two workers")
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in api.workers(), what="the killed worker gone")
    statuses = []

    def replaced() -> bool:
        statuses.append(api.get())
        now = api.workers()
        return len(now) == WORKERS and bool(now - before)

    wait_until(replaced, timeout=15, what="the killed worker replaced")
    statuses += [api.get() for _ in range(20)]
    assert set(statuses) == {200}, statuses
    assert api.system.procs["api"].poll() is None


def test_sighup_replaces_every_worker_while_requests_go_on_succeeding(api: Api):
    """SIGHUP (systemd's reload): each worker is replaced by a new one, which serves before the
    old one stops; requests sent all along, each on a new connection, are answered 200. At
    most one connection, opened as an old worker stops, may be reset unanswered (seen once,
    in a CI run on a loaded machine: granian's worker stopping with it accepted, its request
    not read); the next request on a new connection is answered (docs/operations.md)."""
    before = wait_until(lambda: len(api.workers()) == WORKERS and api.workers(), what="two workers")
    statuses: list[int | str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                statuses.append(api.get())
            except (OSError, http.client.HTTPException) as exc:
                statuses.append(repr(exc))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_until(lambda: statuses, what="the first answer")
        os.kill(api.pid, signal.SIGHUP)
        wait_until(
            lambda: len(now := api.workers()) == WORKERS and not now & before,
            timeout=30,
            what="every worker replaced",
        )
        during = len(statuses)
        wait_until(lambda: len(statuses) > during + 5, what="answers from the new workers")
    finally:
        stop.set()
        thread.join(15)
    failed = [s for s in statuses if s != 200]
    resets = [s for s in failed if isinstance(s, str) and s.startswith("ConnectionResetError")]
    assert len(statuses) > 10 and failed == resets and len(resets) <= 1, failed[:5]
    assert statuses[-1] == 200
    assert api.system.procs["api"].poll() is None


def test_sigterm_lets_a_request_under_way_finish_then_exits_cleanly(api: Api):
    """SIGTERM to the main process (systemd's stop, KillMode=mixed) while a POST is under way
    (the app is reading its body): the order is created and answered 201, then the server
    exits with status 0 and its port no longer answers."""
    body = json.dumps(ORDER).encode()
    with _held_post(api.port, api.token) as raw:  # the request is in the app
        os.kill(api.pid, signal.SIGTERM)
        readable, _, _ = select.select([raw], [], [], 0.5)
        assert not readable, "the connection was closed under the request"
        raw.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"201", answer[:300]
    created = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert created["status"] == "placed"
    assert api.system.procs["api"].wait(20) == 0, api.log()
    with pytest.raises(OSError):
        api.get()


def test_an_idle_kept_alive_connection_stays_open_for_the_keepalive_setting(tmp_path: Path):
    """ORDERBUS_API_KEEPALIVE_SECONDS=5: a connection idle for 3 s still serves the next
    request on it; idle after that, the server closes it, 5 s after its last answer (not
    sooner: a client or proxy that reuses its connections for less never meets the close)."""
    system = start_api(tmp_path, ORDERBUS_API_KEEPALIVE_SECONDS="5")
    try:
        port = int(system.env["ORDERBUS_API_PORT"])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.request("GET", "/api/v1/healthz")
        conn.getresponse().read()
        first = conn.sock
        readable, _, _ = select.select([first], [], [], 3)
        assert not readable, "the server closed a connection idle for less than 3 s"
        conn.request("GET", "/api/v1/healthz")
        response = conn.getresponse()
        response.read()
        assert response.status == 200 and conn.sock is first
        answered = time.monotonic()
        readable, _, _ = select.select([first], [], [], 15)
        closed_after = time.monotonic() - answered
        assert readable and first.recv(1) == b"", "the idle connection was not closed"
        assert 4.5 <= closed_after <= 8, closed_after
        conn.close()
    finally:
        system.close()


def test_the_access_log_is_written_only_when_switched_on(api: Api, tmp_path: Path):
    """Off (the default): requests leave no line. On: one line per request, in the API's
    shape (client, request line, status, bytes, time); a path with a newline stays one line."""
    assert api.get() == 200 and api.get("/api/v1/nowhere%0Aforged") == 404
    assert '"GET /api/v1/healthz' not in api.log()

    on = start_api(tmp_path / "on", ORDERBUS_API_ACCESS_LOG="true")
    try:
        port = int(on.env["ORDERBUS_API_PORT"])
        logged = Api(on, port, "")
        assert logged.get() == 200 and logged.get("/api/v1/nowhere%0Aforged?x=1") == 404
        lines = wait_until(
            lambda: [line for line in logged.log().splitlines() if "nowhere" in line], what="the access line"
        )
        assert any(
            line.startswith('127.0.0.1 "GET /api/v1/healthz HTTP/1.1" 200 16 ')
            for line in logged.log().splitlines()
        )
        assert lines == [
            '127.0.0.1 "GET /api/v1/nowhere%0Aforged?x=1 HTTP/1.1" 404 ' + lines[0].split(" 404 ")[1]
        ]
        assert lines[0].endswith("ms")
    finally:
        on.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection, then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_oversized_request_heads_are_refused_and_the_server_goes_on(api: Api):
    """A header of 600 KB, 200 header lines, a 100 KB URL: 431, 431 and 414 with
    ``connection: close``, before the app sees them; the next request is served."""
    head = b"GET /api/v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    cases = [
        (head + b"X-Big: " + b"a" * 600_000 + b"\r\n\r\n", b"431"),
        (head + b"".join(b"X-Header-%d: 1\r\n" % n for n in range(200)) + b"\r\n", b"431"),
        (b"GET /api/v1/healthz?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"414"),
    ]
    for data, status in cases:
        answer = raw_exchange(api.port, data)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == status, answer[:200]
        assert b"connection: close" in rest.lower()
    assert api.get() == 200


def test_a_client_trickling_its_headers_is_cut_off_at_the_keepalive_setting(tmp_path: Path):
    """ORDERBUS_API_KEEPALIVE_SECONDS=5 also bounds how long a request's headers may take: a
    client sending one header line a second, never ending the head, is disconnected about
    5 s after it began, not kept as long as it trickles (the slow-headers attack)."""
    system = start_api(tmp_path, ORDERBUS_API_KEEPALIVE_SECONDS="5")
    try:
        port = int(system.env["ORDERBUS_API_PORT"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started, cut_after = time.monotonic(), None
            for _ in range(15):
                readable, _, _ = select.select([conn], [], [], 1)  # the close, or a second
                try:
                    if readable and conn.recv(1024) == b"":
                        cut_after = time.monotonic() - started
                        break
                    conn.sendall(b"X-Slow: 1\r\n")
                except OSError:  # reset by the server: cut off as well
                    cut_after = time.monotonic() - started
                    break
        assert cut_after is not None, "the trickling client was kept for 15 s"
        assert 4.5 <= cut_after <= 8, cut_after
        assert Api(system, port, "").get() == 200
    finally:
        system.close()


def _held_post(port: int, token: str) -> socket.socket:
    """A POST whose app thread waits for its body: the server answered 100 Continue once the
    app asked for it, so the request holds one of the worker's threads until the body comes."""
    body = json.dumps(ORDER).encode()
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    raw.sendall(
        b"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Expect: 100-continue\r\n\r\n"
    )
    interim = raw.recv(4096)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return raw


@pytest.mark.parametrize("threads", [1, 2])
def test_api_threads_is_how_many_requests_a_worker_runs_at_once(tmp_path: Path, threads: int):
    """One worker with ORDERBUS_API_THREADS=1: while a request holds its thread, the next
    request waits and is answered once the first is done. With 2 (the positive control), the
    next request is answered meanwhile."""
    system = start_api(tmp_path, ORDERBUS_API_WORKERS="1", ORDERBUS_API_THREADS=str(threads))
    try:
        port = int(system.env["ORDERBUS_API_PORT"])
        password = (tmp_path / "var" / "admin-password").read_text().strip()
        token = system.admin.login("admin", password)["access_token"]
        statuses: list[int] = []
        with _held_post(port, token) as held:
            probe = threading.Thread(target=lambda: statuses.append(Api(system, port, token).get()))
            probe.start()
            probe.join(2)
            answered_while_held = bool(statuses)
            held.sendall(json.dumps(ORDER).encode())
            assert held.recv(65536).startswith(b"HTTP/1.1 201"), "the held order was not placed"
        probe.join(15)
        assert statuses == [200]
        assert answered_while_held == (threads > 1), statuses
    finally:
        system.close()


def test_api_threads_default_to_8_on_sqlite_and_4_on_postgresql(tmp_path: Path) -> None:
    """Unset (or 0), the threads per worker follow the database: 8 on SQLite, where group
    commit writes a worker's waiting threads together, 4 on PostgreSQL (docs/operations.md);
    a value given is kept. What granian is built with is what the settings say."""

    sqlite = load_settings({"data_dir": tmp_path})
    postgres = load_settings({"data_dir": tmp_path, "database_url": "postgresql://u@127.0.0.1:1/db"})
    given = load_settings(
        {"data_dir": tmp_path, "database_url": "postgresql://u@127.0.0.1:1/db", "api_threads": 6}
    )
    assert (sqlite.api_threads, postgres.api_threads, given.api_threads) == (8, 4, 6)
    assert build(sqlite).blocking_threads == 8
    assert build(postgres).blocking_threads == 4


def test_a_workers_app_leaves_what_it_built_to_no_collection(tmp_path: Path, database_url: str, monkeypatch):
    """worker_app(), which granian runs in each worker: the app, and everything made while
    building it, frozen out of the garbage collector's walks (gc.freeze)."""
    import gc

    from order_service.api_server import worker_app

    monkeypatch.setenv("ORDERBUS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ORDERBUS_DATABASE_URL", database_url)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0  # the positive control: nothing frozen before
    try:
        app = worker_app()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen  # the modules, the app, its routes and schemas
        assert app.url_map.bind("x").match("/api/v1/orders", method="POST")  # a working app
    finally:
        gc.unfreeze()
