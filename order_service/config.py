"""Layered configuration: defaults, then ``ORDERBUS_*`` environment variables, then overrides.

Every process (API, relay, broker, CLI) reads the same :class:`Settings`, so one
environment describes one deployment. docs/configuration.md lists every variable.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.link import BrokerAddress, url_host

# A tile server's host[:port], where "{s}." may stand for the subdomains a, b, c.
_TILE_HOST = re.compile(r"^(\{s\}\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


class Settings(BaseSettings):
    # A bad value is named in the error, never echoed: several settings hold secrets.
    model_config = SettingsConfigDict(env_prefix="ORDERBUS_", extra="forbid", hide_input_in_errors=True)

    data_dir: Path = Field(Path("var"), description="Where the database, keys and sockets live.")
    database_url: str = Field(
        "", description="sqlite:///path or postgresql://...; default sqlite:///<data_dir>/orderbus.db"
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    sqlite_group_commit: bool = Field(
        True,
        description="orders placed at the same moment in one API worker share a transaction and"
        " its fsync (store/group.py); false: one transaction each",
    )

    # The embedded broker (python -m broker).
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(1883, ge=0, le=65535)
    broker_ws_port: int = Field(9001, ge=0, le=65535)
    broker_in_relay: bool = Field(
        False,
        description="the relay process runs the embedded broker itself and hands it each message"
        " directly (no broker process, no MQTT hop per message); docs/configuration.md",
    )

    relay_channel: bool = Field(
        True,
        description="the relay hands messages to the embedded broker's process over its publish"
        " channel, not as MQTT publishes (docs/configuration.md)",
    )

    # The broker the relay publishes to; default: the embedded one.
    mqtt_url: str = Field(
        "", description="mqtt://, mqtts:// (TLS), ws:// or wss:// [user:password@]host:port; default embedded"
    )
    mqtt_failover_urls: str = Field(
        "",
        description="brokers the relay moves to, in turn, when ORDERBUS_MQTT_URL's is lost (comma-separated);"
        " default on a cluster: the other nodes",
    )
    mqtt_ca_file: Path | None = Field(None, description="TLS: trust this CA file, not the system's CAs")
    mqtt_username: str = Field("orderbus-service", description="The relay's broker login (service account)")
    mqtt_keepalive: int = Field(30, ge=5, le=3600)
    # Each process has its own login: the client id is the username on both brokers.
    socketio_mqtt_username: str = Field("orderbus-socketio", description="The Socket.IO bridge's login")
    webhooks_mqtt_username: str = Field("orderbus-webhooks", description="The webhook worker's login")

    # Broker logins: the service writes these two files (Mosquitto formats); brokers read them.
    broker_password_file: Path | None = Field(None, description="default <data_dir>/mqtt/passwd")
    broker_acl_file: Path | None = Field(None, description="default <data_dir>/mqtt/acl")
    mqtt_file_mode: int = Field(0o640, ge=0, le=0o777, description="permissions of both files")
    mosquitto_pid_file: Path | None = Field(None, description="SIGHUP this Mosquitto after each change")
    # make run-cluster (docs/scaling.md): NATS nodes with JetStream and MQTT. Node i (from 1)
    # listens for MQTT on broker_port + i - 1 and MQTT over WebSocket on broker_ws_port + i - 1.
    cluster_nodes: int = Field(
        0, ge=0, le=9, description="NATS nodes of make run-cluster; the service writes their users file"
    )
    cluster_client_port: int = Field(14222, ge=1, le=65535, description="node i's NATS port: this + i - 1")
    cluster_route_port: int = Field(16222, ge=1, le=65535, description="node i's route port: this + i - 1")
    cluster_monitor_port: int = Field(
        18222, ge=1, le=65535, description="node i's monitoring port (/healthz): this + i - 1"
    )
    # Logins on the cluster go through `python -m order_service cluster-callout` (one per node),
    # which refuses a client id other than the username (docs/security.md).
    cluster_auth_callout: bool = Field(
        True, description="NATS auth callout: the client id must be the username (docs/scaling.md)"
    )
    # What devices and dashboards are told to connect to (as they reach the broker).
    # A cluster's nodes: several URLs, comma-separated (the default with ORDERBUS_CLUSTER_NODES).
    public_mqtt_url: str = Field("", description="default mqtt://<broker_host>:<broker_port>")
    public_mqtt_ws_url: str = Field("", description="default ws://<broker_host>:<broker_ws_port>/mqtt")

    api_host: str = "127.0.0.1"
    api_port: int = Field(5000, ge=0, le=65535)
    api_workers: int = Field(2, ge=1, le=64)
    api_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="threads per API worker process that run the app; 0: 8 on SQLite (group commit"
        " writes a worker's waiting threads together), 4 on PostgreSQL",
    )
    api_access_log: bool = Field(False, description="The API writes one line per request to its output")
    api_fast_path: bool = Field(
        True, description="POST /orders that succeeds is answered without Flask's per-request machinery"
    )
    api_keepalive_seconds: int = Field(
        30,
        ge=5,
        le=60,
        description="seconds an idle kept-alive API connection stays open (and a request's headers may take)",
    )
    trusted_proxies: str = Field(
        "", description="Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-* count"
    )
    public_api_url: str = Field("", description="Base URL printed in messages; default from host/port")

    admin_user: str = "admin"
    admin_password: str = Field("", description="Bootstrap admin password; generated when empty")

    token_ttl_seconds: int = Field(12 * 3600, ge=60)
    login_max_failures: int = Field(
        5, ge=1, description="failed logins per client address and username before each attempt waits"
    )
    login_window_seconds: int = Field(86400, ge=1, description="how long a failed login counts")
    login_max_delay_seconds: int = Field(
        900, ge=1, description="the longest wait between attempts (it doubles from 1 s per failure)"
    )
    login_username_failures: int = Field(
        100, ge=1, description="failures per username from every address; past it each address gets one try"
    )
    allow_signup: bool = Field(True, description="Anyone may create a customer account (POST /auth/signup)")
    signup_per_address: int = Field(
        10, ge=1, description="sign-ups one client address may make per signup window before a 429"
    )
    signup_window_seconds: int = Field(3600, ge=1, description="the window of ORDERBUS_SIGNUP_PER_ADDRESS")
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="The catalog's currency (ISO 4217)")
    business_timezone: str = Field(
        "UTC", description="IANA time zone whose calendar day numbers orders (#1, #2... per day)"
    )
    metrics_token: str = Field(
        "", description="Bearer token for GET /metrics (Prometheus); unset: admins' tokens only"
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    retain_terminal_seconds: int = Field(3600, ge=0)
    relay_poll_seconds: float = Field(1.0, gt=0, le=60)
    relay_standby_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often a standby relay tries to take the relay lock"
    )
    relay_batch: int = Field(500, ge=1, le=10000)
    relay_recheck_seconds: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="after a reconnect, or an acknowledgement that took over RELAY_STALL_SECONDS, the relay"
        " republishes the state of what changed in this many seconds before; 0: never; default 30 with"
        " failover brokers (a cluster), else 0",
    )
    relay_stall_seconds: float = Field(
        2.0, gt=0, le=60, description="an acknowledgement slower than this makes the relay recheck"
    )
    log_level: str = "INFO"
    backup_keep: int = Field(0, ge=0, description="backup keeps this many newest backups; 0: all")

    # The dispatcher's map on the dashboard: a tile server (XYZ template; empty: no tiles,
    # markers on a plain background). Its origin is added to the dashboard's CSP img-src.
    map_tile_url: str = Field(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="The dashboard map's tile URL template ({z}/{x}/{y}, optional {s}); empty: no tiles",
    )
    map_tile_attribution: str = Field(
        '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
        max_length=500,
        description="The tiles' attribution shown on the map (HTML: text and links)",
    )

    # Dispatch (issue #7). These are the defaults; admins may override them at run
    # time with PATCH /api/v1/settings/dispatch (stored in the database), see dispatch_config.py.
    dispatch_offer_required: bool = False
    dispatch_offer_seconds: int = Field(60, ge=5, le=3600)
    dispatch_auto_assign: bool = False
    dispatch_auto_assign_on: Literal["confirmed", "ready"] = "confirmed"
    dispatch_agent_cap: int = Field(3, ge=1, le=100)
    dispatch_prep_minutes: int = Field(20, ge=0, le=1440)
    dispatch_travel_minutes: int = Field(30, ge=0, le=1440)
    dispatch_travel_speed_kmh: float = Field(20.0, gt=0, le=200)
    dispatch_origin_lat: float | None = Field(None, ge=-90, le=90)
    dispatch_origin_lon: float | None = Field(None, ge=-180, le=180)
    dispatch_delay_unconfirmed_seconds: int = Field(300, ge=0)
    dispatch_delay_unassigned_seconds: int = Field(300, ge=0)
    dispatch_delay_late_grace_seconds: int = Field(0, ge=0)
    # Proof of delivery (issue #19): the customer's 4-digit code, the courier's photo.
    dispatch_pod_code: Literal["off", "optional", "required"] = "off"
    dispatch_pod_photo: Literal["off", "optional", "required"] = "optional"
    # Where the timers run (the relay) and how it trusts presence; environment only.
    dispatch_tick_seconds: float = Field(1.0, gt=0, le=60)
    presence_heartbeat_seconds: int = Field(30, ge=1, le=3600)
    presence_timeout_seconds: int = Field(90, ge=1, le=86400)
    # Live location (issue 19): a position older than this is marked stale; reports of one
    # agent closer together than the interval are dropped (throttled); a picked-up order
    # keeps at most this many trail points.
    location_stale_seconds: int = Field(120, ge=1, le=86400)
    location_min_interval_seconds: float = Field(2.0, ge=0, le=3600)
    location_trail_points: int = Field(500, ge=10, le=10000)

    # Web Push to the courier app (order_service/push/, docs/clients.md).
    vapid_private_key: str = Field(
        "", description="VAPID private key (PEM or base64url); empty: generated once into the data dir"
    )
    vapid_subject: str = Field(
        "mailto:admin@localhost", description="VAPID contact (mailto: or https:) push services may use"
    )
    push_devices_per_agent: int = Field(5, ge=1, le=50, description="push subscriptions kept per agent")
    push_ttl_seconds: int = Field(600, ge=0, le=86400, description="how long a push service keeps a push")
    push_attempts: int = Field(3, ge=1, le=10, description="tries per push (429/5xx/network), then dropped")
    push_timeout_seconds: float = Field(10.0, gt=0, le=120)
    push_poll_seconds: float = Field(1.0, gt=0, le=60, description="how often new worklists are read")
    push_allow_insecure_endpoints: bool = Field(
        False, description="tests only: accept http://127.0.0.1 push endpoints (https only otherwise)"
    )

    # Webhook bridge (python -m order_service.webhooks, issue #6).
    webhook_retry_seconds: float = Field(
        24 * 3600, gt=0, description="Retry a failing delivery this long, then mark the endpoint failing"
    )
    webhook_backoff_seconds: float = Field(1.0, gt=0, description="First retry delay; doubles each time")
    webhook_backoff_max_seconds: float = Field(600.0, gt=0)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    webhook_poll_seconds: float = Field(5.0, gt=0, le=300, description="Event-log scan without wake-up")
    webhooks_allow_private: bool = Field(
        False,
        description="Let webhooks reach private, loopback and link-local addresses (refused by default)",
    )

    # Socket.IO bridge (python -m bridges.socketio, issue #6).
    socketio_host: str = "127.0.0.1"
    socketio_port: int = Field(5001, ge=0, le=65535)
    socketio_cors_origins: str = Field("*", description="Comma-separated browser origins, * for any")
    socketio_recheck_seconds: float = Field(
        30.0, gt=0, le=3600, description="How often connected sockets' tokens are checked again"
    )

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'orderbus.db'}"
        if not self.api_threads:  # measured: docs/benchmarks/findings.md, "Group commit"
            self.api_threads = 8 if self.database_url.startswith("sqlite") else 4
        # A cluster's node i listens on broker_port + i - 1 (MQTT), broker_ws_port + i - 1 (WebSocket):
        # every URL lists every node, comma-separated; clients try the next after a failure.
        host, nodes = url_host(self.broker_host), range(max(self.cluster_nodes, 1))
        if not self.mqtt_url:
            self.mqtt_url = ",".join(f"mqtt://{host}:{self.broker_port + i}" for i in nodes)
        if not self.public_mqtt_url:
            self.public_mqtt_url = ",".join(f"mqtt://{host}:{self.broker_port + i}" for i in nodes)
        if not self.public_mqtt_ws_url:
            self.public_mqtt_ws_url = ",".join(f"ws://{host}:{self.broker_ws_port + i}/mqtt" for i in nodes)
        if not self.public_api_url:
            self.public_api_url = f"http://{self.api_host}:{self.api_port}"
        for name in ("mqtt_url", "public_mqtt_url", "public_mqtt_ws_url"):
            try:
                BrokerAddress.parse(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"ORDERBUS_{name.upper()}: {exc}") from None
        for url in self.mqtt_failover_urls.split(","):
            try:
                if url.strip():
                    BrokerAddress.parse(url.strip())
            except ValueError as exc:
                raise ValueError(f"ORDERBUS_MQTT_FAILOVER_URLS: {exc}") from None
        try:
            _ = self.trusted_proxy_networks  # each item an address or a network
        except ValueError as exc:
            raise ValueError(
                f"ORDERBUS_TRUSTED_PROXIES: {exc} (addresses or networks, e.g. 127.0.0.1,::1)"
            ) from None
        if self.mqtt_ca_file is not None and not self.mqtt_ca_file.is_file():
            raise ValueError(f"ORDERBUS_MQTT_CA_FILE: no file at {self.mqtt_ca_file}")
        return self

    @model_validator(mode="after")
    def _check_timezone(self) -> Settings:
        try:
            ZoneInfo(self.business_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"ORDERBUS_BUSINESS_TIMEZONE: no time zone {self.business_timezone!r} (e.g. Europe/Rome)"
            ) from None
        return self

    @property
    def business_zone(self) -> ZoneInfo:
        return ZoneInfo(self.business_timezone)

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(item.strip()) for item in self.trusted_proxies.split(",") if item.strip()
        ]

    @property
    def public_mqtt_urls(self) -> list[str]:
        """ORDERBUS_PUBLIC_MQTT_URL's URLs: one, or one per node of a cluster."""
        return [url.strip() for url in self.public_mqtt_url.split(",") if url.strip()]

    @property
    def public_mqtt_ws_urls(self) -> list[str]:
        """ORDERBUS_PUBLIC_MQTT_WS_URL's URLs: one, or one per node of a cluster."""
        return [url.strip() for url in self.public_mqtt_ws_url.split(",") if url.strip()]

    @property
    def mqtt_address(self) -> BrokerAddress:
        """The broker of ORDERBUS_MQTT_URL, with ORDERBUS_MQTT_CA_FILE for TLS."""
        return BrokerAddress.parse(self.mqtt_url, ca_file=self.mqtt_ca_file)

    @property
    def mqtt_is_embedded_broker(self) -> bool:
        """ORDERBUS_MQTT_URL names the embedded broker's own address (ORDERBUS_BROKER_HOST/PORT)."""
        address = self.mqtt_address
        return (address.port, url_host(address.host)) == (self.broker_port, url_host(self.broker_host))

    @property
    def relay_recheck_window(self) -> float:
        """ORDERBUS_RELAY_RECHECK_SECONDS, or its default: 30 s when the relay has brokers to fail
        over to (a cluster: NATS may acknowledge what it did not store, docs/scaling.md), else 0."""
        if self.relay_recheck_seconds is not None:
            return self.relay_recheck_seconds
        return 30.0 if self.mqtt_failover_addresses else 0.0

    @property
    def mqtt_failover_addresses(self) -> list[BrokerAddress]:
        """The brokers the relay tries after ORDERBUS_MQTT_URL's, in turn: ORDERBUS_MQTT_FAILOVER_URLS,
        or on a cluster (ORDERBUS_CLUSTER_NODES over 1) every other node's MQTT listener."""
        urls = [url.strip() for url in self.mqtt_failover_urls.split(",") if url.strip()]
        if not urls and self.cluster_nodes > 1:
            host = url_host(self.broker_host)
            urls = [f"mqtt://{host}:{self.broker_port + i}" for i in range(self.cluster_nodes)]
        first = self.mqtt_address
        found = [BrokerAddress.parse(url, ca_file=self.mqtt_ca_file) for url in urls]
        same = (first.host, first.port, first.transport)
        return [a for a in found if (a.host, a.port, a.transport) != same]

    @model_validator(mode="after")
    def _check_vapid_subject(self) -> Settings:
        if not self.vapid_subject.startswith(("mailto:", "https://")):
            raise ValueError("ORDERBUS_VAPID_SUBJECT must be a mailto: or https: URL (RFC 8292)")
        return self

    @model_validator(mode="after")
    def _check_metrics_token(self) -> Settings:
        if self.metrics_token and len(self.metrics_token) < 24:
            raise ValueError(
                "ORDERBUS_METRICS_TOKEN is too short (24 characters or more, e.g. openssl rand -hex 24)"
            )
        return self

    @property
    def drain_body_bytes(self) -> int:
        """The largest request body the API reads to its end even when it refuses it (a 413,
        an early 401 or 415), so that the connection serves the client's next request; a
        larger one (or one of unknown length) is answered with ``Connection: close``."""
        return max(self.max_body_bytes, 1 << 20)

    @property
    def wakeup_socket(self) -> Path:
        return self.data_dir / "relay.sock"

    @model_validator(mode="after")
    def _check_dispatch(self) -> Settings:
        if (self.dispatch_origin_lat is None) != (self.dispatch_origin_lon is None):
            raise ValueError("ORDERBUS_DISPATCH_ORIGIN_LAT and ORDERBUS_DISPATCH_ORIGIN_LON go together")
        if self.presence_timeout_seconds <= self.presence_heartbeat_seconds:
            raise ValueError(
                "ORDERBUS_PRESENCE_TIMEOUT_SECONDS must be longer than ORDERBUS_PRESENCE_HEARTBEAT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _check_map_tiles(self) -> Settings:
        _ = self.map_tile_origin
        return self

    @property
    def map_tile_origin(self) -> str:
        """The tile server's origin as a CSP source ("" without tiles); {s} subdomains: a wildcard."""
        if not self.map_tile_url:
            return ""
        scheme, _, rest = self.map_tile_url.partition("://")
        host = rest.split("/", 1)[0]
        placeholders = all(p in self.map_tile_url for p in ("{z}", "{x}", "{y}"))
        if scheme not in ("http", "https") or not host or not placeholders or not _TILE_HOST.match(host):
            raise ValueError(
                "ORDERBUS_MAP_TILE_URL: an http(s) URL template with {z}, {x} and {y}, "
                "e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (empty: no tiles)"
            )
        return f"{scheme}://{host.replace('{s}', '*')}"

    @property
    def mqtt_password_path(self) -> Path:
        return self.broker_password_file or self.data_dir / "mqtt" / "passwd"

    @property
    def mqtt_acl_path(self) -> Path:
        return self.broker_acl_file or self.data_dir / "mqtt" / "acl"


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the environment, then ``overrides`` (tests, the app factory)."""
    return Settings(**(overrides or {}))
