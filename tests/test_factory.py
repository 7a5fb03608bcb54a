"""The app factory and layered configuration: defaults, then environment, then overrides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from order_service.api.app import create_app
from order_service.config import load_settings


def test_defaults_follow_the_contract(monkeypatch):
    """Without variables: API 127.0.0.1:5000, MQTT 1883, WebSocket 9001, SQLite in var/."""
    for name in list(__import__("os").environ):
        if name.startswith("ORDERBUS_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.public_api_url == "http://127.0.0.1:5000"
    assert settings.mqtt_url == "mqtt://127.0.0.1:1883"
    assert settings.broker_ws_port == 9001
    assert settings.database_url == "sqlite:///var/orderbus.db"


def test_environment_then_overrides(monkeypatch, tmp_path):
    """ORDERBUS_* variables override defaults; the factory's test_config overrides both."""
    monkeypatch.setenv("ORDERBUS_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("ORDERBUS_BROKER_PORT", "1999")
    monkeypatch.setenv("ORDERBUS_DATA_DIR", str(tmp_path))
    assert load_settings().mqtt_url == "mqtt://127.0.0.1:1999"
    assert load_settings().database_url == f"sqlite:///{tmp_path}/orderbus.db"
    app = create_app({"token_ttl_seconds": 120})
    assert app.config["MAX_CONTENT_LENGTH"] == 4096
    assert app.config["ORDERBUS"].token_ttl_seconds == 120


def test_bad_values_name_the_variable(monkeypatch):
    """A malformed variable fails with its name; unknown settings are refused."""
    monkeypatch.setenv("ORDERBUS_API_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="api_port"):
        load_settings()
    monkeypatch.delenv("ORDERBUS_API_PORT")
    with pytest.raises(ValidationError, match="no_such_setting"):
        load_settings({"no_such_setting": 1})
    with pytest.raises(ValidationError, match="ORDERBUS_MQTT_URL"):
        load_settings({"mqtt_url": "http://example.invalid"})


def test_postgresql_urls_make_a_pooled_serialised_database():
    """A postgresql:// URL gives the pooled database with the writer lock; no connection is opened."""
    from order_service.store.db import OrderbusPostgresqlDatabase, make_database

    database = make_database("postgresql://app:p%40ss@db.example:6543/orders?max_connections=5")
    assert isinstance(database, OrderbusPostgresqlDatabase)
    assert database.database == "orders"
    assert database.connect_params["user"] == "app" and database.connect_params["password"] == "p@ss"
    assert database.connect_params["host"] == "db.example" and database.connect_params["port"] == 6543
    assert database._max_connections == 5
    assert isinstance(make_database("postgres://app@db.example/orders"), OrderbusPostgresqlDatabase)
    with pytest.raises(ValueError, match="dbname"):
        make_database("postgresql://app@db.example")
