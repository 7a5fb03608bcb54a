"""A broker to attack as a process of its own, with the service's login files: the
embedded one (``python -m broker``) or Mosquitto from the repository's mosquitto.conf.

Its memory and open files are read from /proc, which the in-process broker of the other
tests cannot give apart from the test's own. Tests use the ``broker_process`` fixture
with the ``broker_kind`` parameter of tests/test_broker_security.py.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.processes import child_env
from harness.system import System
from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.store.db import db
from tests.test_broker_security import Target, login_accepted, service

FILES = 2_200  # open files a broker and the test may need: 2,000 connections and their own


def room_for_files(count: int) -> None:
    """Raise this process's open-file limit to ``count`` (the brokers started later inherit
    it), or skip (fail with CI=true) when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count and (hard == resource.RLIM_INFINITY or hard >= count):
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        message = f"needs {count} open files; the hard limit is {hard} (ulimit -Hn)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def files_within(pid: int, done: Callable[[int], bool], timeout: float) -> int:
    """The broker's count of open files once ``done(count)``, or when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while not done(count := open_files(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def file_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise KeyError("Max open files")


@dataclass
class BrokerProcess(Target):
    """A broker to attack (a :class:`Target`) running as a process of its own."""

    pid: int


@pytest.fixture
def broker_process(
    request: pytest.FixtureRequest, app, settings_overrides: dict, broker_kind: str, data_dir
) -> Iterator[BrokerProcess]:
    """The broker as a process of its own, with the service's login files, after the
    open-file limit was raised for it (Mosquitto: the ``target`` of test_broker_security)."""
    room_for_files(FILES)
    if broker_kind == "mosquitto":
        target = request.getfixturevalue("target")
        pid = int(Path(target.settings.mosquitto_pid_file).read_text())
        yield BrokerProcess(target.kind, target.host, target.port, target.ws_port, target.settings, pid)
        return
    settings = load_settings(settings_overrides)
    with db.connection_context():
        broker_logins.ensure_service(settings)
        broker_logins.sync_files(settings)
    env = child_env(
        data_dir,
        ORDERBUS_BROKER_PASSWORD_FILE=str(settings.mqtt_password_path),
        ORDERBUS_BROKER_ACL_FILE=str(settings.mqtt_acl_path),
        ORDERBUS_LOG_LEVEL="WARNING",
    )
    system = System(env, data_dir)  # the embedded broker alone
    try:
        system.start("broker")
        port, ws_port = int(env["ORDERBUS_BROKER_PORT"]), int(env["ORDERBUS_BROKER_WS_PORT"])
        started = BrokerProcess("amqtt", "127.0.0.1", port, ws_port, settings, system.procs["broker"].pid)
        deadline = time.monotonic() + 15
        while not _listening(started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert login_accepted(started, *service(started), timeout=15), system.log()
        yield started
    finally:
        system.close()


def _listening(broker: BrokerProcess) -> bool:
    try:
        socket.create_connection((broker.host, broker.port), timeout=1).close()
    except OSError:
        return False
    return True
