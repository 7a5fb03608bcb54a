"""The system behind deploy/nginx/orderbus.conf, as docs/production.md installs it: HTTPS for
the API and the dashboard, WSS for the dashboards' MQTT and Socket.IO, metrics kept inside.

The site file is used as it is in the repository; only what must differ on a test
machine is rewritten (host name, ports, certificate paths), and each rewrite must apply,
so a change of the file's shape fails here instead of going untested. The certificate
is made by the test (harness/tls.py) and trusted through its CA.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from contract.link import BrokerAddress, MqttFeed
from harness.processes import ROOT, free_port, require_tool, stop_group
from harness.system import make_system
from harness.tls import Certificates, make_certificates
from tests.test_processes import ORDER

pytestmark = pytest.mark.e2e
SITE = ROOT / "deploy" / "nginx" / "orderbus.conf"
METRICS_TOKEN = "metrics-token-for-the-scraper-0123"
SPOOFED = "203.0.113.9"  # what a client claims in X-Forwarded-For: must never be believed


class Nginx:
    def __init__(
        self, tmp: Path, certs: Certificates, ports: tuple[int, int], upstreams: dict[int, int]
    ) -> None:
        self.dir = tmp / "nginx"
        (self.dir / "www").mkdir(parents=True)
        self.http_port, self.https_port = ports
        rewrites = [
            ("orders.example.com", "localhost"),
            ("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            ("listen [::]:80;", ""),
            ("listen 443 ssl;", f"listen 127.0.0.1:{self.https_port} ssl;"),
            ("listen [::]:443 ssl;", ""),
            ("/etc/letsencrypt/live/localhost/fullchain.pem", str(certs.cert)),
            ("/etc/letsencrypt/live/localhost/privkey.pem", str(certs.key)),
            ("root /var/www/html;", f"root {self.dir / 'www'};"),
            *((f"server 127.0.0.1:{port};", f"server 127.0.0.1:{ours};") for port, ours in upstreams.items()),
        ]
        site = SITE.read_text()
        for old, new in rewrites:
            assert old in site, f"deploy/nginx/orderbus.conf no longer has {old!r}"
            site = site.replace(old, new)
        (self.dir / "orderbus.conf").write_text(site)
        temp = "\n".join(f"    {kind}_temp_path {self.dir / kind};" for kind in ("client_body", "proxy"))
        temp += "\n" + "\n".join(
            f"    {kind}_temp_path {self.dir / kind};" for kind in ("fastcgi", "uwsgi", "scgi")
        )
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"daemon off;\nworker_processes 1;\npid {self.dir / 'nginx.pid'};\n"
            f"error_log {self.dir / 'error.log'} notice;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n    access_log {self.dir / 'access.log'};\n{temp}\n"
            f"    include {self.dir / 'orderbus.conf'};\n}}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        nginx = require_tool(
            "nginx", "nginx-light", "the reverse proxy's configuration", also=("/usr/sbin/nginx",)
        )
        self.process = subprocess.Popen(
            [nginx, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, (self.dir / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
                log = (self.dir / "error.log").read_text()
                assert "bind()" not in log, f"nginx could not listen (another program holds the port): {log}"
                return self
            except OSError:
                assert time.monotonic() < deadline, (self.dir / "error.log").read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, signal.SIGQUIT)


def request(
    port: int, method: str, path: str, *, tls: ssl.SSLContext | None = None, source: str = "127.0.0.1",
    headers: dict[str, str] | None = None, body: str | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One HTTP(S) request to 127.0.0.1:``port`` from the local address ``source``."""
    if tls is not None:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=tls, source_address=(source, 0), timeout=10
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0), timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _status(port: int, path: str) -> int:
    try:
        return request(port, "GET", path)[0]
    except OSError:
        return 0


def test_the_system_behind_nginx(tmp_path: Path):
    """Through nginx: HTTPS and its redirect, the client's address as nginx saw it (never as the
    client claims it, in the API and its access log), metrics refused, the dashboard and its
    MQTT over WSS, Socket.IO."""
    certs = make_certificates(tmp_path / "tls")
    tls = ssl.create_default_context(cafile=str(certs.ca))
    socketio_port, http_port, https = free_port(), free_port(), free_port()
    nginx = None
    system = make_system(
        tmp_path,
        "mosquitto",
        ORDERBUS_TRUSTED_PROXIES="127.0.0.1",
        ORDERBUS_API_ACCESS_LOG="true",  # its client addresses are checked below
        ORDERBUS_METRICS_TOKEN=METRICS_TOKEN,
        ORDERBUS_SOCKETIO_PORT=str(socketio_port),
        ORDERBUS_PUBLIC_API_URL=f"https://127.0.0.1:{https}",
        ORDERBUS_PUBLIC_MQTT_WS_URL=f"wss://127.0.0.1:{https}/mqtt",
    )
    try:
        api_port = int(system.env["ORDERBUS_API_PORT"])
        upstreams = {5000: api_port, 5001: socketio_port, 9001: system.mosquitto.ws_port}
        nginx = Nginx(tmp_path, certs, (http_port, https), upstreams)
        system.start("socketio")
        nginx.start()

        status, _, body = request(https, "GET", "/api/v1/readyz", tls=tls)
        assert status == 200 and b'"status":"ok"' in body.replace(b" ", b""), body
        status, headers, _ = request(nginx.http_port, "GET", "/api/v1/readyz")
        assert status == 301 and headers["Location"] == "https://127.0.0.1/api/v1/readyz"

        # metrics: never through the proxy, even with the scraper's token; directly, with it
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert request(https, "GET", "/api/v1/metrics", tls=tls, headers=bearer)[0] == 404
        assert request(https, "GET", "/api/v1/metrics/", tls=tls, headers=bearer)[0] == 404
        assert request(api_port, "GET", "/api/v1/metrics", headers=bearer)[0] == 200

        # the client's address: the one nginx saw (127.0.0.2 here), never what the client claims
        password = (Path(system.env["ORDERBUS_DATA_DIR"]) / "admin-password").read_text().strip()
        login_body = f'{{"username": "admin", "password": "{password}"}}'
        spoof = {"X-Forwarded-For": SPOOFED}
        status, _, body = request(
            https, "POST", "/api/v1/auth/token", tls=tls, source="127.0.0.2", headers=spoof, body=login_body
        )
        assert status == 200, body
        login = json.loads(body)
        # directly to the API from an address that is not a trusted proxy: the header is ignored
        request(api_port, "GET", "/api/v1/healthz", source="127.0.0.3", headers=spoof)
        # The access log's line is written just after the answer: wait for both lines.
        seen = (
            r'^127\.0\.0\.2 "POST /api/v1/auth/token HTTP/1\.[01]" 200',
            r'^127\.0\.0\.3 "GET /api/v1/healthz ',
        )
        deadline = time.monotonic() + 10
        while not all(re.search(line, api_log := (tmp_path / "api.log").read_text(), re.M) for line in seen):
            assert time.monotonic() < deadline, api_log
            time.sleep(0.05)
        assert SPOOFED not in api_log

        # the dashboard and the shop over HTTPS, MQTT over WSS through the proxy, with the login given
        for path in ("/admin/", "/admin/vendor/mqtt.esm.js", "/shop/", "/shop/js/live.js"):
            assert request(https, "GET", path, tls=tls)[0] == 200, path
        mqtt = login["mqtt"]
        assert mqtt["url"] == f"wss://127.0.0.1:{https}/mqtt"
        address = BrokerAddress.parse(mqtt["url"], ca_file=str(certs.ca))
        address = BrokerAddress(
            **{**address.__dict__, "username": mqtt["username"], "password": mqtt["password"]}
        )
        received: queue.Queue = queue.Queue()
        feed = MqttFeed(address, "dashboard-through-nginx", received.put, filters=("orders/new",)).start()
        try:
            assert feed.connected.wait(10), "no MQTT session over wss:// through nginx"
            token = {"Authorization": f"Bearer {login['access_token']}"}
            status, _, body = request(https, "POST", "/api/v1/orders", tls=tls, headers=token,
                                      body=json.dumps(ORDER))  # fmt: skip
            assert status == 201, body
            order_id = json.loads(body)["id"]
            deadline = time.monotonic() + 10
            while True:
                message = received.get(timeout=max(0.1, deadline - time.monotonic()))
                if order_id.encode() in message.payload:
                    break
        finally:
            feed.stop()

        # the courier app over HTTPS (a service worker needs it), and its agent login's wss:// URL
        for path in ("/courier/", "/courier/sw.js", "/courier/vendor/mqtt.esm.js"):
            assert request(https, "GET", path, tls=tls)[0] == 200, path
        rider = json.dumps({"name": "Rider", "username": "rider", "password": "rider-password"})
        status, _, body = request(https, "POST", "/api/v1/agents", tls=tls, headers=token, body=rider)
        assert status == 201, body
        assert json.loads(body)["mqtt"]["ws_url"] == f"wss://127.0.0.1:{https}/mqtt"

        # Socket.IO through the proxy: the Engine.IO handshake, once the bridge is up
        deadline = time.monotonic() + 20
        while _status(socketio_port, "/healthz") != 200:
            assert time.monotonic() < deadline, (tmp_path / "socketio.log").read_text()
            time.sleep(0.1)
        status, _, body = request(https, "GET", "/socket.io/?EIO=4&transport=polling", tls=tls)
        assert status == 200 and body.startswith(b"0{"), body
    finally:
        if nginx is not None:
            nginx.stop()
        for name in list(system.procs):
            system.stop(name)
        system.mosquitto.stop()
