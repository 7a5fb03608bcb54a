"""Operator commands: `backup` (a consistent copy taken while orders are being written, which
restores to a working database) and `set-password` (rotating a login)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from harness.processes import cli
from order_service.store.db import init_db
from tests.conftest import ADMIN_PASSWORD, BACKEND, order_body


def _counts(url: str) -> tuple[int, int]:
    """(orders, orders/new outbox rows) in the database at ``url``: equal in any consistent state."""
    database = init_db(url)
    with database.connection_context():
        (orders,) = database.execute_sql("SELECT count(*) FROM orders").fetchone()
        (created,) = database.execute_sql("SELECT count(*) FROM outbox WHERE kind = 'new'").fetchone()
    return orders, created


@pytest.fixture
def restored_url(tmp_path: Path, database_url: str):
    """Where the backup is restored: a new SQLite file, or a new PostgreSQL database."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    if shutil.which("pg_restore") is None:
        message = "pg_restore not installed (apt-get install postgresql-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from tests import pg_fixtures

    with pg_fixtures.empty_database("orderbus_restored") as url:
        yield url


def test_backup_while_writing_restores_a_consistent_database(
    client, admin, place_order, database_url, data_dir, restored_url, tmp_path
):
    """A backup taken under a stream of new orders restores to a database whose orders and events
    agree, holding at least every order committed before the backup began."""
    for _ in range(5):
        place_order()
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            assert client.post("/api/v1/orders", json=order_body(), headers=admin.headers).status_code == 201

    writer = threading.Thread(target=write)
    writer.start()
    target = tmp_path / "backups" / ("orderbus.db" if BACKEND == "sqlite" else "orderbus.dump")
    try:
        env = {**os.environ, "ORDERBUS_DATA_DIR": str(data_dir), "ORDERBUS_DATABASE_URL": database_url}
        result = cli(env, "backup", str(target))
    finally:
        stop.set()
        writer.join(10)
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout

    if BACKEND == "sqlite":
        shutil.copy(target, restored_url[len("sqlite:///") :])
    else:
        restore = subprocess.run(
            ["pg_restore", "--no-owner", f"--dbname={restored_url}", str(target)],
            capture_output=True,
            text=True,
        )
        assert restore.returncode == 0, restore.stderr
    orders, created = _counts(restored_url)
    assert orders >= 5 and orders == created
    assert _counts(database_url)[0] >= orders  # the live database went on


def test_backup_names_a_missing_database(tmp_path: Path, database_url: str):
    """Pointed at a database that is not there, backup says so in one line, no traceback."""
    url = f"sqlite:///{tmp_path / 'none.db'}" if BACKEND == "sqlite" else database_url + "_missing"
    env = {**os.environ, "ORDERBUS_DATA_DIR": str(tmp_path), "ORDERBUS_DATABASE_URL": url}
    result = cli(env, "backup")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("Error:"), result.stderr


def test_set_password_rotates_a_login_and_signs_its_sessions_out(client, admin, database_url, data_dir):
    """After `set-password`, the old password and the old token are refused; the new password works."""
    env = {**os.environ, "ORDERBUS_DATA_DIR": str(data_dir), "ORDERBUS_DATABASE_URL": database_url}
    result = cli(env, "set-password", "admin", input="rotated-password-2\nrotated-password-2\n")
    assert result.returncode == 0, result.stderr
    assert client.get("/api/v1/auth/me", headers=admin.headers).status_code == 401
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    assert client.post("/api/v1/auth/token", json=login).status_code == 401
    login["password"] = "rotated-password-2"
    assert client.post("/api/v1/auth/token", json=login).status_code == 200
