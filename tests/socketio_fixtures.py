"""The Socket.IO bridge as a process, the API it checks tokens with served over real HTTP,
and the seed's Node ``socket.io-client`` driven by tests."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bridges" / "node_test"


def node_client_ready() -> None:
    """``socket.io-client`` installed from the lock file (``make node-test-deps``); CI must have it."""
    if (NODE_DIR / "node_modules" / "socket.io-client").is_dir() and shutil.which("node"):
        return
    npm = shutil.which("npm")
    if npm and shutil.which("node"):
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
        )
        if result.returncode == 0:
            return
        pytest.fail("npm ci failed:\n" + result.stderr[-2000:])
    if os.environ.get("CI") == "true":
        pytest.fail("node and npm are required in CI for the Socket.IO bridge tests")
    pytest.skip("node/npm not installed: the Socket.IO client tests need them")


class NodeClient:
    """One ``node client.js`` process: its JSON lines land on a queue read by the test thread."""

    def __init__(self, url: str, token: str) -> None:
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "client.js"), url, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if predicate(line):
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        stderr = ""
        if self.proc.poll() is not None and self.proc.stderr is not None:
            stderr = self.proc.stderr.read()
        raise AssertionError(f"not seen within {timeout} s; seen: {self.seen} {stderr}")

    def event(self, name: str, timeout: float = 10.0, **data) -> dict:
        line = self.wait_for(
            lambda m: (
                m["type"] == "event"
                and m["event"] == name
                and all(m["data"].get(k) == v for k, v in data.items())
            ),
            timeout,
        )
        return line["data"]

    def events(self, name: str) -> list[dict]:
        """Every ``name`` event received so far. Wait for a later event first (a positive
        control): the bridge emits in the order it hears, so what was due came before it."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                break
        return [m["data"] for m in self.seen if m["type"] == "event" and m["event"] == name]

    def connected(self) -> None:
        line = self.wait_for(lambda m: m["type"] in ("connected", "connect_error"))
        assert line["type"] == "connected", line

    def join(self, room: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"join": room}) + "\n")
        self.proc.stdin.flush()
        return self.wait_for(lambda m: m["type"] == "ack" and m["room"] == room)["reply"]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


class ApiServer:
    """The test's Flask app served over HTTP on a free port (werkzeug, threaded), so processes
    under test reach the same API and database the test drives with its test client."""

    def __init__(self, app) -> None:
        self.app = app
        self.port = 0
        self.server: BaseWSGIServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> None:
        """Serve (again, on the same port once it had one)."""
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, name="api-server", daemon=True).start()

    def stop(self) -> None:
        """Stop answering: new connections to the port are refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class SocketBridgeProcess:
    """``python -m bridges.socketio`` with the test's data directory, broker and API."""

    def __init__(self, data_dir: Path, mqtt_url: str, port: int, log: Path, api_url: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "ORDERBUS_DATA_DIR": str(data_dir),
            "ORDERBUS_API_URL": api_url,
            "ORDERBUS_MQTT_URL": mqtt_url,
            "ORDERBUS_SOCKETIO_PORT": str(port),
            "ORDERBUS_LOG_LEVEL": "INFO",
            "ORDERBUS_SOCKETIO_RECHECK_SECONDS": "0.5",
        }
        self._log = open(log, "w")  # noqa: SIM115 (closed in stop())
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridges.socketio"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("socketio bridge exited:\n" + self.log.read_text())
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError("socketio bridge not ready:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log.close()
