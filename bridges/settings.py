"""The Socket.IO bridge's settings: the ``ORDERBUS_*`` variables it reads, nothing more.

The names and defaults are the service's (``order_service/config.py``), so one
environment describes one deployment; the bridge reads them itself because it
knows the service only through its public interfaces:

- the broker: ``ORDERBUS_MQTT_URL`` (default ``mqtt://<ORDERBUS_BROKER_HOST>:<ORDERBUS_BROKER_PORT>``;
  ``mqtts://`` and ``wss://`` with TLS, trusting ``ORDERBUS_MQTT_CA_FILE`` if set),
  logged in as the bridge's own read-only login ``ORDERBUS_SOCKETIO_MQTT_USERNAME``
  whose secret ``python -m order_service bootstrap`` writes to
  ``<ORDERBUS_DATA_DIR>/mqtt/socketio-secret`` (credentials in the URL are the
  relay's and are not used here). Both brokers use a login's username as its
  client id, so a second bridge (another host) needs a username of its own;
- the REST API, where bearer tokens are checked: ``ORDERBUS_API_URL`` (default
  ``http://<ORDERBUS_API_HOST>:<ORDERBUS_API_PORT>/api/v1``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.link import BrokerAddress, url_host


class MissingBridgeSecret(Exception):
    """The bridges' broker secret file is not there (bootstrap not run)."""


class BridgeSettings(BaseSettings):
    # A bad value is named in the error, never echoed: a URL may hold a password.
    model_config = SettingsConfigDict(env_prefix="ORDERBUS_", extra="forbid", hide_input_in_errors=True)

    data_dir: Path = Field(Path("var"), description="where <data_dir>/mqtt/socketio-secret is")
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(1883, ge=0, le=65535)
    cluster_nodes: int = Field(0, ge=0, le=9, description="make run-cluster's nodes: MQTT on broker_port + i")
    mqtt_url: str = Field(
        "", description="mqtt://, mqtts://, ws:// or wss:// URL of the broker; default the embedded one"
    )
    mqtt_ca_file: Path | None = Field(None, description="TLS: trust this CA file, not the system's CAs")
    socketio_mqtt_username: str = Field(
        "orderbus-socketio", description="the bridge's read-only broker login"
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(5000, ge=0, le=65535)
    api_url: str = Field(
        "", description="the REST API's base URL; default http://<api_host>:<api_port>/api/v1"
    )

    socketio_host: str = "127.0.0.1"
    socketio_port: int = Field(5001, ge=0, le=65535)
    socketio_cors_origins: str = Field("*", description="Comma-separated browser origins, * for any")
    socketio_recheck_seconds: float = Field(
        30.0, gt=0, le=3600, description="How often connected sockets' tokens are checked again"
    )
    socketio_token_cache_seconds: float = Field(
        10.0, ge=0, le=3600, description="How long a token's answer is reused; at most the recheck period"
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _derive_defaults(self) -> BridgeSettings:
        if not self.mqtt_url:  # a cluster: every node, tried in turn (contract/address.py)
            nodes = range(max(self.cluster_nodes, 1))
            self.mqtt_url = ",".join(
                f"mqtt://{url_host(self.broker_host)}:{self.broker_port + i}" for i in nodes
            )
        try:
            BrokerAddress.parse(self.mqtt_url)
        except ValueError as exc:  # names the scheme, masks a password
            raise ValueError(f"ORDERBUS_MQTT_URL: {exc}") from None
        if not self.api_url:
            self.api_url = f"http://{url_host(self.api_host)}:{self.api_port}/api/v1"
        if urlsplit(self.api_url).scheme not in ("http", "https"):
            raise ValueError(f"ORDERBUS_API_URL: {self.api_url!r} is not an http(s) URL")
        self.api_url = self.api_url.rstrip("/")
        return self

    @property
    def token_cache_seconds(self) -> float:
        """How long a token's answer is reused: never longer than the recheck period."""
        return min(self.socketio_token_cache_seconds, self.socketio_recheck_seconds)

    @property
    def bridge_secret_path(self) -> Path:
        return self.data_dir / "mqtt" / "socketio-secret"

    def broker_address(self) -> BrokerAddress:
        """The broker of ORDERBUS_MQTT_URL, logged in as this bridge's own login."""
        path = self.bridge_secret_path
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            raise MissingBridgeSecret(
                f"no MQTT secret for the Socket.IO bridge's login in {path}; "
                "run `python -m order_service bootstrap` (make run does)"
            ) from None
        address = BrokerAddress.parse(self.mqtt_url, ca_file=self.mqtt_ca_file)
        return dataclasses.replace(address, username=self.socketio_mqtt_username, password=secret)
