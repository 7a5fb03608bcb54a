"""peewee models: the database is the source of truth (ARCHITECTURE.md, guarantee 1).

The schema itself is created by the numbered migrations in ``migrations/``;
these classes describe it for queries. Query logic that views need lives here
as methods returning queries.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Self, cast, overload

import peewee as pw

from order_service.lifecycle import TERMINAL
from order_service.store.db import db


def utcnow() -> datetime:
    """Naive UTC, the one time representation stored in the database."""
    return datetime.now(UTC).replace(tzinfo=None)


@overload
def rfc3339(value: datetime) -> str: ...
@overload
def rfc3339(value: datetime | None) -> str | None: ...
def rfc3339(value: datetime | None) -> str | None:
    """``2026-12-06T23:50:52.230Z``: naive UTC to the millisecond (truncated), as every payload
    carries times. ``isoformat`` takes a third of ``strftime``'s time, and a new order formats
    several."""
    if value is None:
        return None
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def new_id(prefix: str) -> str:
    """Topic-safe identifier (no '/', '+', '#'): prefix plus 48 random bits in hex."""
    return f"{prefix}_{secrets.token_hex(6)}"


def tuple_rows(query: pw.BaseQuery) -> Iterable[tuple[Any, ...]]:
    """``query.tuples()``: its rows as tuples (peewee's stubs keep the model as the row type)."""
    return cast("Iterable[tuple[Any, ...]]", query.tuples())


def dict_rows(query: pw.BaseQuery) -> Iterable[dict[str, Any]]:
    """``query.dicts()``: its rows as dicts (peewee's stubs keep the model as the row type)."""
    return cast("Iterable[dict[str, Any]]", query.dicts())


class JSONField(pw.TextField):
    """JSON stored as text, portable between SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    """A foreign key ``x`` also gives ``x_id``, the referenced key without a query; the
    bare annotations ``x_id: ...`` under each foreign key declare it for the type checker
    (peewee ignores them). A backref (``order.items``) is annotated on its target the same way."""

    class Meta:
        database = db
        legacy_table_names = False


class User(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    username = pw.CharField(unique=True, max_length=64)
    password_hash = pw.TextField()
    role = pw.CharField(max_length=16)
    display_name = pw.CharField(max_length=200, default="")
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "users"


class Token(BaseModel):
    token_hash = pw.CharField(primary_key=True, max_length=64)
    user = pw.ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    user_id: str
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()

    class Meta:
        table_name = "tokens"


class Agent(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32)
    user = pw.ForeignKeyField(User, unique=True, null=True, on_delete="SET NULL")
    user_id: str | None
    name = pw.CharField(max_length=200)
    phone = pw.CharField(max_length=40, default="")
    active = pw.BooleanField(default=True)
    worklist_version = pw.IntegerField(default=0)
    presence = pw.CharField(max_length=16, null=True)
    presence_at = pw.DateTimeField(null=True)
    # Dispatch: when the device was last heard (presence or heartbeat) and who set the
    # state ("device", or "timeout" when the server gave up waiting for a heartbeat).
    last_seen_at = pw.DateTimeField(null=True)
    presence_source = pw.CharField(max_length=16, null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "agents"

    def active_orders(self) -> pw.ModelSelect[Order]:
        return Order.active_for_agent(self.id)


class Order(BaseModel):
    items: Iterable[OrderItem]  # backref of OrderItem.order (a list once prefetched)
    id = pw.CharField(primary_key=True, max_length=32)
    version = pw.IntegerField(default=1)
    status = pw.CharField(max_length=16)
    agent = pw.ForeignKeyField(Agent, null=True, backref="orders", on_delete="RESTRICT")
    agent_id: str | None
    owner = pw.ForeignKeyField(User, null=True, backref="orders", on_delete="SET NULL")
    owner_id: str | None
    customer_name = pw.CharField(max_length=200)
    customer_phone = pw.CharField(max_length=40)
    customer_address = pw.CharField(max_length=500)
    notes = pw.TextField(default="")
    currency = pw.CharField(max_length=3, default="USD")
    total_cents = pw.BigIntegerField()
    eta = pw.DateTimeField(null=True)
    status_times = JSONField()
    terminal_at = pw.DateTimeField(null=True)
    retained_cleared_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # Dispatch (migration 0003): ETA, offer, failure, late-order alerts.
    promised_at = pw.DateTimeField(null=True)
    delivery_lat = pw.DoubleField(null=True)
    delivery_lon = pw.DoubleField(null=True)
    offer_agents = JSONField(null=True)  # ids of the agents a pending offer waits on, or None
    offered_at = pw.DateTimeField(null=True)
    offer_expires_at = pw.DateTimeField(null=True)
    failure_reason = pw.CharField(max_length=32, null=True)
    failure_note = pw.TextField(default="")
    delays = JSONField(default=dict)  # alert rule -> when it fired (RFC 3339)
    # Migration 0008: the human number, sequential per business day (orders/numbers.py).
    number = pw.IntegerField(null=True)
    business_day = pw.CharField(max_length=10, null=True)
    # Migration 0011: proof of delivery (orders/proof.py).
    delivery_code = pw.CharField(max_length=4, null=True)  # shown to the order's customer only
    pod_code_checked = pw.BooleanField(default=False)
    pod_photo_type = pw.CharField(max_length=16, null=True)  # image/jpeg|png|webp once uploaded
    pod_photo_at = pw.DateTimeField(null=True)
    pod_at = pw.DateTimeField(null=True)  # when delivered with its proof

    class Meta:
        table_name = "orders"

    @classmethod
    def active(cls) -> pw.ModelSelect[Self]:
        return cls.select().where(cls.status.not_in(TERMINAL))

    @classmethod
    def active_for_agent(cls, agent_id: str) -> pw.ModelSelect[Self]:
        return cls.active().where(cls.agent == agent_id).order_by(cls.created_at, cls.id)

    @classmethod
    def offered_to(cls, agent_id: str) -> pw.ModelSelect[Self]:
        """Orders with a pending offer to this agent, oldest first."""
        pending = OrderOffer.select(OrderOffer.order).where(
            (OrderOffer.agent == agent_id) & (OrderOffer.state == "pending")
        )
        return cls.select().where(cls.id.in_(pending)).order_by(cls.created_at, cls.id)


class OrderItem(BaseModel):
    order = pw.ForeignKeyField(Order, backref="items", on_delete="CASCADE")
    order_id: str
    position = pw.IntegerField()
    name = pw.CharField(max_length=200)
    quantity = pw.IntegerField()
    unit_price_cents = pw.BigIntegerField()
    # Migration 0008: the catalog item the line was priced from and the names of its options
    # (a snapshot); both None on an admin's custom line and on lines older than the catalog.
    item_id = pw.CharField(max_length=32, null=True)
    options = JSONField(null=True)

    class Meta:
        table_name = "order_items"


class OrderNumber(BaseModel):
    """The last order number handed out on a business day (one row per day)."""

    business_day = pw.CharField(primary_key=True, max_length=10)
    last_number = pw.IntegerField()

    class Meta:
        table_name = "order_numbers"


class OrderHistory(BaseModel):
    order = pw.ForeignKeyField(Order, backref="history", on_delete="CASCADE")
    order_id: str
    version = pw.IntegerField()
    event = pw.CharField(max_length=40)
    at = pw.DateTimeField(default=utcnow)
    actor = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    actor_id: str | None
    actor_role = pw.CharField(max_length=16, default="system")
    from_status = pw.CharField(max_length=16, null=True)
    to_status = pw.CharField(max_length=16, null=True)
    from_agent = pw.CharField(max_length=32, null=True)
    to_agent = pw.CharField(max_length=32, null=True)
    reason = pw.TextField(default="")

    class Meta:
        table_name = "order_history"


class Outbox(BaseModel):
    """One row per MQTT publish; also the event log behind GET /events.

    ``kind`` is ``status`` (orders/<id>/status), ``new`` (orders/new: the same
    event as its ``status`` row, so the event log skips it), ``worklist`` or
    ``customer`` (customers/<user id>/orders, a customer's feed: the event log skips it).
    """

    id = pw.BigAutoField()
    event_id = pw.CharField(max_length=40)
    event = pw.CharField(max_length=40)
    kind = pw.CharField(max_length=16)
    topic = pw.CharField(max_length=200)
    payload = pw.TextField()
    order_id = pw.CharField(max_length=32, null=True)
    agent_id = pw.CharField(max_length=32, null=True)
    created_at = pw.DateTimeField(default=utcnow)
    published_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "outbox"

    @classmethod
    def unpublished(cls, limit: int) -> pw.ModelSelect[Self]:
        return cls.select().where(cls.published_at.is_null()).order_by(cls.id).limit(limit)


class IdempotencyKey(BaseModel):
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    user_id: str
    key = pw.CharField(max_length=200)
    request_hash = pw.CharField(max_length=64)
    order = pw.ForeignKeyField(Order, on_delete="CASCADE")
    order_id: str
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "idempotency_keys"
        indexes = ((("user", "key"), True),)


class MqttCredential(BaseModel):
    """A broker login the service issued; only a Mosquitto-format hash of the secret is kept.

    ``kind`` is ``service`` (the relay), ``bridge`` (the Socket.IO bridge, the webhook
    worker: one each), ``agent`` (one per agent; username = agent id), ``dashboard``
    (one per dashboard page, tied to and expiring with an admin's bearer token) or
    ``customer`` (one per shop page or CLI, tied to and expiring with a customer's token).
    """

    username = pw.CharField(primary_key=True, max_length=64)
    kind = pw.CharField(max_length=16)
    secret_hash = pw.TextField()
    # The same secret's bcrypt hash, for the NATS cluster's users file (None: issued before it).
    nats_hash = pw.TextField(null=True)
    agent = pw.ForeignKeyField(Agent, null=True, unique=True, on_delete="CASCADE")
    agent_id: str | None
    user = pw.ForeignKeyField(User, null=True, on_delete="CASCADE")
    user_id: str | None
    token = pw.ForeignKeyField(Token, null=True, on_delete="CASCADE", column_name="token_hash")
    token_hash: str | None
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "mqtt_credentials"


class OrderOffer(BaseModel):
    """One agent's part of an offer: pending until it accepts, declines, or the offer ends.

    ``state``: pending, accepted, declined, expired (no answer in time, or the agent
    went offline), taken (another agent accepted first) or withdrawn (an admin
    assigned, unassigned or re-offered, or the order moved on). Rows are kept, so a
    late answer gets a 409 that says what happened.
    """

    id = pw.AutoField()
    order = pw.ForeignKeyField(Order, backref="offers", on_delete="CASCADE")
    order_id: str
    agent = pw.ForeignKeyField(Agent, backref="offers", on_delete="CASCADE")
    agent_id: str
    state = pw.CharField(max_length=16, default="pending")
    offered_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()
    answered_at = pw.DateTimeField(null=True)
    reason = pw.TextField(default="")

    class Meta:
        table_name = "order_offers"

    @classmethod
    def pending_for(cls, order_id: str) -> pw.ModelSelect[Self]:
        return cls.select().where((cls.order == order_id) & (cls.state == "pending")).order_by(cls.id)

    @classmethod
    def latest(cls, order_id: str, agent_id: str) -> OrderOffer | None:
        """This agent's most recent offer row for this order."""
        return (
            cls.select()
            .where((cls.order == order_id) & (cls.agent == agent_id))
            .order_by(cls.id.desc())
            .first()
        )


class OrderAlert(BaseModel):
    """A late-order rule that fired for an order: the primary key makes it fire once."""

    order = pw.ForeignKeyField(Order, on_delete="CASCADE")
    order_id: str
    rule = pw.CharField(max_length=32)
    fired_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "order_alerts"
        primary_key = pw.CompositeKey("order", "rule")


class DispatchSettingsRow(BaseModel):
    """The one row of run-time dispatch settings: overrides of the ORDERBUS_DISPATCH_* defaults."""

    id = pw.IntegerField(primary_key=True)
    overrides = JSONField(default=dict)
    version = pw.IntegerField(default=0)
    updated_at = pw.DateTimeField(default=utcnow)
    updated_by = pw.CharField(max_length=32, null=True)

    class Meta:
        table_name = "dispatch_settings"


class RelayEpoch(BaseModel):
    """The one row: this database's epoch id, in the relay's retained marker (outbox/relay.py)."""

    id = pw.IntegerField(primary_key=True)
    epoch = pw.CharField(max_length=32)

    class Meta:
        table_name = "relay_epoch"


class LoginFailure(BaseModel):
    """One failed password login for a username (known or not) from a client address; see
    accounts.users.check_throttle."""

    username = pw.CharField(max_length=64)
    address = pw.CharField(max_length=64, default="")
    at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "login_failures"


class PodCodeRefusal(BaseModel):
    """One wrong delivery code (``orderbus_pod_code_refused_total``; bounds guessing)."""

    order = pw.ForeignKeyField(Order, backref="code_refusals", on_delete="CASCADE")
    agent_id = pw.CharField(max_length=32, null=True)
    at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "pod_code_refusals"
