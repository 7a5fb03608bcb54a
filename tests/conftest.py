"""Shared fixtures: a fresh database per test, the API, users and tokens.

The backend is SQLite (a file per test) unless ``ORDERBUS_TEST_DATABASE=postgresql``:
then each test gets its own PostgreSQL database, copied from a template migrated
once per session, on the server at ``ORDERBUS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Unreachable server: the
PostgreSQL run is skipped, or fails with ``CI=true``. Tests marked
``sqlite_only`` are skipped on PostgreSQL.

Broker and relay fixtures live in tests/mqtt_fixtures.py (imported below); which tests
form the security suite (the ``security`` marker), in tests/security_suite.py.

The ORDERBUS_* settings of the shell configure the `make run` there, not the tests: they
are removed from this process's environment before any test runs, so neither a test nor a
process it starts uses that system's ports, broker or database.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient

try:  # Imported here, at collection, before any test starts a thread: a first import of it in
    # a fixture while other threads imported too once failed every browser test of a CI worker
    # with a KeyError from importlib's module locks (CPython issue 87712).
    import playwright.sync_api  # noqa: F401
except ImportError:  # the browser fixtures say what is missing
    pass

from harness.processes import ToolMissing, without_service_settings
from order_service.api.app import create_app
from order_service.store.db import db, init_db
from order_service.store.migrations import migrate

pytest_plugins = ["tests.mqtt_fixtures", "tests.clients_system", "tests.pg_fixtures", "tests.security_suite"]

ADMIN_PASSWORD = "admin-password-1"
BACKEND = os.environ.get("ORDERBUS_TEST_DATABASE", "sqlite")
if BACKEND not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"ORDERBUS_TEST_DATABASE={BACKEND!r}: use sqlite or postgresql")


IGNORED = sorted(set(os.environ) - set(without_service_settings(os.environ)))
for _name in IGNORED:
    del os.environ[_name]


def pytest_report_header() -> list[str]:
    header = [f"orderbus database backend: {BACKEND}"]
    if IGNORED:
        header.append("ignored (settings of this shell's make run): " + ", ".join(IGNORED))
    return header


def _without_tool():
    """A test that needs a program this machine lacks (Mosquitto, openssl, nginx,
    systemd-analyze): skipped, or failed with CI=true."""
    try:
        return (yield)
    except ToolMissing as exc:
        missing = str(exc)
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; .ci/run installs it with apt-get", pytrace=False)
    pytest.skip(missing)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    return (yield from _without_tool())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _without_tool())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL: run only the tests that use a database; skip the SQLite-specific ones."""
    if BACKEND == "sqlite":
        return
    skip = pytest.mark.skip(reason="SQLite-specific (the database file itself)")
    keep, without_db = [], []
    for item in items:
        uses_db = "database_url" in getattr(item, "fixturenames", ())
        # Browser tests (the dashboard) and fault tests do not depend on the backend: they run
        # once, on SQLite.
        once = item.get_closest_marker("browser") or item.get_closest_marker("chaos")
        (keep if uses_db and not once else without_db).append(item)
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)
    if without_db:  # backend-independent: the SQLite run covers them
        config.hook.pytest_deselected(items=without_db)
        items[:] = keep


_names = itertools.count(1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture
def database_url(data_dir: Path, request: pytest.FixtureRequest) -> str:
    """This test's own, migrated, empty database."""
    if BACKEND == "postgresql":
        return request.getfixturevalue("postgres_database")
    return f"sqlite:///{data_dir / 'orderbus.db'}"


@pytest.fixture
def settings_overrides(data_dir: Path, database_url: str) -> dict:
    """Settings every test process shares; MQTT fixtures add the broker's URL."""
    return {"data_dir": data_dir, "admin_password": ADMIN_PASSWORD, "database_url": database_url}


@pytest.fixture
def app(settings_overrides: dict):
    database = init_db(settings_overrides["database_url"])
    migrate(database, log=lambda _msg: None)
    application = create_app(settings_overrides)
    application.config["TESTING"] = True
    yield application
    if not db.is_closed():
        db.close()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@dataclass
class Actor:
    """A logged-in user: its id, role, headers to send, and the agent id for agents."""

    user_id: str
    username: str
    role: str
    headers: dict[str, str]
    agent_id: str | None = None
    mqtt: dict | None = None  # broker login: an agent's device or an admin's dashboard


def _login(client: FlaskClient, username: str, password: str) -> dict:
    response = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture
def admin(client: FlaskClient) -> Actor:
    from order_service.accounts import users
    from order_service.store.models import User

    with db.connection_context():
        if not User.get_or_none(User.username == "admin"):
            users.create_user("admin", ADMIN_PASSWORD, "admin")
    body = _login(client, "admin", ADMIN_PASSWORD)
    return Actor(
        body["user"]["id"],
        "admin",
        "admin",
        {"Authorization": f"Bearer {body['access_token']}"},
        mqtt=body["mqtt"],
    )


@pytest.fixture
def make_customer(client: FlaskClient) -> Callable[[], Actor]:
    def make() -> Actor:
        n = next(_names)
        name = f"customer{n}"
        # Each from an address of its own: sign-ups are limited per address.
        response = client.post(
            "/api/v1/auth/signup",
            json={"username": name, "password": "password-1"},
            environ_base={"REMOTE_ADDR": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"},
        )
        assert response.status_code == 201, response.json
        body = _login(client, name, "password-1")
        return Actor(
            body["user"]["id"],
            name,
            "customer",
            {"Authorization": f"Bearer {body['access_token']}"},
            mqtt=body.get("mqtt"),
        )

    return make


@pytest.fixture
def make_agent(client: FlaskClient, admin: Actor) -> Callable[..., Actor]:
    def make(name: str | None = None) -> Actor:
        username = name or f"agent{next(_names)}"
        response = client.post(
            "/api/v1/agents",
            json={"name": username.title(), "username": username, "password": "password-1"},
            headers=admin.headers,
        )
        assert response.status_code == 201, response.json
        body = _login(client, username, "password-1")
        return Actor(
            body["user"]["id"],
            username,
            "agent",
            {"Authorization": f"Bearer {body['access_token']}"},
            agent_id=response.json["id"],
            mqtt=response.json["mqtt"],
        )

    return make


def order_body(**overrides) -> dict:
    body = {
        "customer": {"name": "Zoë Ångström", "phone": "+1 555 0100", "address": "1 Main St"},
        "items": [{"name": "Margherita", "quantity": 2, "unit_price_cents": 1299}],
        "notes": "ring twice",
    }
    body.update(overrides)
    return body


@pytest.fixture
def place_order(client: FlaskClient, admin: Actor, request: pytest.FixtureRequest) -> Callable[..., dict]:
    """Place an order as ``actor`` (default: the admin, with order_body's custom line; a
    customer orders the same from the catalog: the ``menu`` fixture's Margherita)."""

    def place(actor: Actor | None = None, **overrides) -> dict:
        body = order_body(**overrides)
        if actor is not None and actor.role == "customer" and "items" not in overrides:
            body = request.getfixturevalue("menu").order(**overrides)
        response = client.post("/api/v1/orders", json=body, headers=(actor or admin).headers)
        assert response.status_code == 201, response.json
        return response.json

    return place


@dataclass
class Menu:
    """A small catalog an admin made: Margherita (12.99; options Extra basil +1.00, Large
    +3.00) and Tea (3.00) in Pizza, Soup (5.00, sold out) in Starters."""

    category_id: str
    margherita: str
    basil: str
    large: str
    tea: str
    soup: str

    def line(self, item_id: str | None = None, quantity: int = 2, option_ids: tuple[str, ...] = ()) -> dict:
        return {"item_id": item_id or self.margherita, "quantity": quantity, "option_ids": list(option_ids)}

    def order(self, **overrides) -> dict:
        """order_body with catalog lines (2 Margherita: 25.98, as order_body's custom line)."""
        return order_body(**{"items": [self.line()], **overrides})


@pytest.fixture
def menu(client: FlaskClient, admin: Actor) -> Menu:
    def post(path: str, body: dict) -> dict:
        response = client.post(f"/api/v1/catalog/{path}", json=body, headers=admin.headers)
        assert response.status_code == 201, response.json
        return response.json

    pizza = post("categories", {"name": "Pizza"})
    starters = post("categories", {"name": "Starters"})
    margherita = post(
        "items",
        {
            "category_id": pizza["id"],
            "name": "Margherita",
            "price_cents": 1299,
            "options": [
                {"name": "Extra basil", "price_delta_cents": 100},
                {"name": "Large", "price_delta_cents": 300},
            ],
        },
    )
    tea = post("items", {"category_id": pizza["id"], "name": "Tea", "price_cents": 300})
    soup = post(
        "items", {"category_id": starters["id"], "name": "Soup", "price_cents": 500, "available": False}
    )
    basil, large = (o["id"] for o in margherita["options"])
    return Menu(pizza["id"], margherita["id"], basil, large, tea["id"], soup["id"])
