"""Mosquitto started from the repository's own mosquitto.conf, on ephemeral ports.

Only what must differ on a test or benchmark machine is rewritten: the listener ports, the file and
directory paths (into the test's data directory) and, when the tests run as root,
``user root`` so that Mosquitto can read the test's private files instead of
dropping to the ``mosquitto`` user. Everything else — anonymous access off,
persistence, queue limits — is the configuration users run.

With ``tls=`` (certificates from harness/tls.py) it also has the TLS listener of
deploy/mosquitto-tls.conf (MQTT over TLS, ``tls_port``) and, for the clients' wss://,
a WebSocket listener with the same certificate (``wss_port``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from broker.server import pick_free_port
from harness.processes import ROOT, ToolMissing
from harness.tls import Certificates

CONF = ROOT / "mosquitto.conf"
TLS_CONF = ROOT / "deploy" / "mosquitto-tls.conf"


class MosquittoMissing(ToolMissing):
    """No mosquitto executable on this machine (the tests skip, or fail with CI=true)."""


def mosquitto_binary() -> str:
    """The mosquitto executable; :class:`MosquittoMissing` if there is none."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )
    if found is None:
        raise MosquittoMissing("mosquitto is not installed (apt-get install mosquitto)")
    return found


class Mosquitto:
    def __init__(
        self,
        data_dir: Path,
        password_file: Path,
        acl_file: Path,
        host: str = "127.0.0.1",
        tls: Certificates | None = None,
        *,
        replace: dict[str, str] | None = None,
    ) -> None:
        """``replace``: settings of mosquitto.conf to run with another value (key -> value)."""
        self.host = host
        self.replace = dict(replace or {})
        self.dir = data_dir / "mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = pick_free_port(host)
        self.ws_port = pick_free_port(host, avoid=self.port)
        self.tls = tls
        self.tls_port: int | None = None
        self.wss_port: int | None = None
        self.pid_file = self.dir / "mosquitto.pid"
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        conf = self._rewrite(CONF.read_text(), password_file, acl_file)
        if tls is not None:
            conf += self._tls_listeners(tls)
        self.conf_path.write_text(conf)
        self.process: subprocess.Popen | None = None

    def _tls_listeners(self, tls: Certificates) -> str:
        """deploy/mosquitto-tls.conf on a free port with the test's certificate; then a wss listener."""
        self.tls_port = pick_free_port(self.host, avoid=self.ws_port)
        self.wss_port = pick_free_port(self.host, avoid=self.tls_port)
        lines = []
        for line in TLS_CONF.read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key == "listener":
                line = f"listener {self.tls_port} {self.host}"
            elif key in ("certfile", "keyfile"):
                line = f"{key} {tls.cert if key == 'certfile' else tls.key}"
            lines.append(line)
        if sum(line.startswith("listener ") for line in lines) != 1:
            raise RuntimeError("deploy/mosquitto-tls.conf should have one listener")
        lines += [
            f"listener {self.wss_port} {self.host}",
            "protocol websockets",
            "use_username_as_clientid true",
            f"certfile {tls.cert}",
            f"keyfile {tls.key}",
        ]
        return "\n".join(lines) + "\n"

    def _rewrite(self, text: str, password_file: Path, acl_file: Path) -> str:
        ports = iter((self.port, self.ws_port))
        lines = []
        for line in text.splitlines():
            key = line.split(" ", 1)[0]
            if key == "listener":
                line = f"listener {next(ports)} {self.host}"
            elif key == "password_file":
                line = f"password_file {password_file}"
            elif key == "acl_file":
                line = f"acl_file {acl_file}"
            elif key == "pid_file":
                line = f"pid_file {self.pid_file}"
            elif key == "persistence_location":
                line = f"persistence_location {self.dir}/"
            elif key in self.replace:
                line = f"{key} {self.replace.pop(key)}"
            lines.append(line)
        assert next(ports, None) is None, "mosquitto.conf should have a TCP and a WebSocket listener"
        assert not self.replace, f"not in mosquitto.conf: {sorted(self.replace)}"
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def setting(self, key: str) -> str | None:
        match = re.search(rf"^{key} (.+)$", self.conf_path.read_text(), re.M)
        return match.group(1) if match else None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            try:
                for port in (self.port, self.ws_port, self.tls_port, self.wss_port):
                    if port is not None:
                        socket.create_connection((self.host, port), timeout=0.2).close()
                if self.pid_file.exists():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen within {timeout} s: {self.log()[-2000:]}")

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
