"""Request and response models: pydantic validates them, flask-openapi3 documents them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from order_service.lifecycle import FAILURE_REASONS, STATUSES

# No control characters in one-line fields; multi-line fields may hold newlines and tabs.
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
MULTI_LINE = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"
# Anything else a client names (ids, search text): no NUL, which PostgreSQL cannot hold in text.
NO_NUL = r"^[^\x00]*$"
Id32 = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NO_NUL)]
Text200 = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE)
]
Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=40, pattern=r"^\+?[0-9 ()\-.]+$"),
]
Address = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=MULTI_LINE)
]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500, pattern=MULTI_LINE)]
Username = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200, pattern=ONE_LINE)]
AgentPhone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=40, pattern=ONE_LINE)]
Status = Literal[
    "placed", "confirmed", "preparing", "ready", "picked_up", "delivered", "failed", "cancelled", "rejected"
]
assert set(get_args(Status)) == set(STATUSES)
FailureReason = Literal["customer_absent", "wrong_address", "refused", "damaged", "other"]
assert get_args(FailureReason) == FAILURE_REASONS


def _whole_number(value: object) -> object:
    # JSON has one number type: 2.0 is the integer 2 (OpenAPI 3.1 / JSON Schema "integer"), while
    # "2", true and 2.5 are still refused by the strict int check that follows.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_whole_number)]
OptionalInt = Annotated[int | None, BeforeValidator(_whole_number)]

# An optional query parameter or header: absent or a string, never JSON null (a client cannot
# send null in a URL or a header, so the document does not offer it).
OptionalStr = str | SkipJsonSchema[None]

STATUS_NAMES = "(placed|confirmed|preparing|ready|picked_up|delivered|failed|cancelled|rejected)"
# status= in GET /orders: one status or a comma-separated list; spaces and empty items are
# ignored, and an empty value filters nothing.
STATUS_LIST = rf"^([ ,]*{STATUS_NAMES}( *(,[ ,]*){STATUS_NAMES})*[ ,]*)?$"


class Strict(BaseModel):
    """Wrong types are refused (no "2" for 2), unknown fields too: typos are errors."""

    model_config = ConfigDict(strict=True, extra="forbid")


# --- requests ---------------------------------------------------------------


class CustomerIn(Strict):
    name: Text200
    phone: Phone
    address: Address


class ItemIn(Strict):
    """A catalog line, priced by the server; admins only: a custom line (name, unit_price_cents)."""

    item_id: Id32 | None = None
    option_ids: list[Id32] | None = Field(None, max_length=10)
    name: Text200 | None = Field(None, description="custom lines only (admins)")
    quantity: Int = Field(ge=1, le=1000)
    unit_price_cents: OptionalInt = Field(None, ge=0, le=10_000_000, description="custom lines only (admins)")


class LocationIn(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class OrderCreate(Strict):
    customer: CustomerIn
    items: list[ItemIn] = Field(min_length=1, max_length=100)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"  # absent: the catalog's
    notes: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000, pattern=MULTI_LINE)] = ""
    delivery_location: LocationIn | None = Field(
        None,
        description="where to deliver; with the business's origin set, the delivery ETA uses the distance",
    )


class FailureIn(Strict):
    reason: FailureReason
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500, pattern=MULTI_LINE)] = (
        Field("", description="required when the reason is other")
    )


class StatusChange(Strict):
    status: Status
    reason: Reason = ""
    force: bool = Field(False, description="admin only: make an agent's move on its behalf")
    prep_minutes: OptionalInt = Field(
        None, ge=0, le=1440, description="with confirmed: preparation minutes (default: the business's)"
    )
    failure: FailureIn | None = Field(None, description="with failed (required): why the delivery failed")
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")] | None = Field(
        None, description="with delivered: the customer's 4-digit delivery code (pod_code setting)"
    )


class AgentAssign(Strict):
    agent_id: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=NO_NUL)]
    reason: Reason = ""
    offer: bool | None = Field(
        None,
        description="offer instead of assigning (the agent must accept); default: the offer_required setting",
    )


AgentIdIn = Id32


class TokenRequest(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ONE_LINE)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SignupRequest(Strict):
    username: Username
    password: Password
    display_name: DisplayName = ""


class UserCreate(SignupRequest):
    role: Literal["admin", "customer"]


class AgentCreate(Strict):
    name: Text200
    phone: AgentPhone = ""
    username: Username
    password: Password


class AgentPatch(Strict):
    name: Text200 | None = None
    phone: AgentPhone | None = None
    active: bool | None = None


# --- headers (parsed in common.py, so a malformed one is a 400 naming it) ----


def _no_null_defaults(schema: dict) -> None:
    # An absent parameter is not null: a "default": null beside "type": "string" is invalid.
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


# flask-openapi3 asks a header or query model for its JSON Schema on every request it
# validates (only to read each field's type); the schema never changes, so build it once.
_PLAIN_SCHEMAS: dict[type, dict[str, Any]] = {}


class Parameters(BaseModel):
    """Query or header parameters: optional ones are documented as absent, never null."""

    model_config = ConfigDict(json_schema_extra=_no_null_defaults)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args or kwargs:  # the OpenAPI document's calls (ref templates, modes): as built
            return super().model_json_schema(*args, **kwargs)
        schema = _PLAIN_SCHEMAS.get(cls)
        if schema is None:
            schema = _PLAIN_SCHEMAS[cls] = super().model_json_schema()
        return schema


class IdempotencyHeader(Parameters):
    idempotency_key: OptionalStr = Field(
        None,
        alias="Idempotency-Key",
        json_schema_extra={"minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
        description="1-200 printable ASCII characters (a UUID is ideal); a retry with the same key "
        "and body returns the original order, the same key with another body is a 422",
    )


class IfMatchHeader(Parameters):
    if_match: OptionalStr = Field(
        None,
        alias="If-Match",
        json_schema_extra={"pattern": '^\\s*(\\*|(W/)?"?[0-9]{1,9}"?)\\s*$'},
        description='the order version you last read (its ETag), e.g. "3"; a stale one answers 412',
    )


# --- path and query ---------------------------------------------------------


class OrderPath(BaseModel):
    order_id: str = Field(max_length=32, pattern=NO_NUL)


class AgentPath(BaseModel):
    agent_id: str = Field(max_length=32, pattern=NO_NUL)


class OrderListQuery(Parameters):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)

    status: OptionalStr = Field(
        None, description="one status or several, comma-separated", json_schema_extra={"pattern": STATUS_LIST}
    )
    agent_id: OptionalStr = Field(None, max_length=32, pattern=NO_NUL)
    q: OptionalStr = Field(
        None, max_length=200, pattern=NO_NUL, description="order id, number (#12), customer name or phone"
    )
    limit: int = Field(50, ge=1, le=200)
    cursor: OptionalStr = Field(None, max_length=200, pattern=NO_NUL)


class EventQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bounded by the largest id the database can hold: a larger int cannot be bound (500).
    after: int = Field(0, ge=0, le=2**63 - 1, description="the cursor of the last event already read")
    limit: int = Field(100, ge=1, le=1000)


# --- responses (documentation) ---------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ok", "unavailable"]
    schema_version: int | None = None
    schema_expected: int | None = None
    outbox_pending: int | None = None
    outbox_oldest_seconds: float | None = None
    detail: str | None = None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict] | None = None
    allowed: list[str] | None = None


class CustomerOut(BaseModel):
    name: str
    phone: str
    address: str


class ItemOut(BaseModel):
    name: str
    quantity: int
    unit_price_cents: int
    item_id: str | None = Field(None, description="catalog lines: the item it was priced from")
    options: list[str] | None = Field(None, description="catalog lines: the options' names")


class OrderOut(BaseModel):
    id: str
    number: int | None = Field(description="sequential per business day, shown as #12; null before 0008")
    version: int
    status: Status
    agent_id: str | None
    customer: CustomerOut
    items: list[ItemOut]
    total_cents: int
    currency: str
    notes: str
    created_at: str
    updated_at: str
    status_times: dict[str, str]
    eta: str | None
    promised_at: str | None
    delivery_location: dict | None
    offer: dict | None
    failure: dict | None
    delays: dict[str, str]


class OrderList(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None


class HistoryEntry(BaseModel):
    version: int
    event: str
    at: str
    actor: str | None
    actor_role: str
    from_status: str | None
    to_status: str | None
    from_agent: str | None
    to_agent: str | None
    reason: str


class HistoryOut(BaseModel):
    order_id: str
    history: list[HistoryEntry]


class DashboardMqtt(BaseModel):
    url: str = Field(description="MQTT over WebSocket, e.g. ws://127.0.0.1:9001/mqtt")
    tcp_url: str = Field(description="the same broker over TCP, e.g. mqtt://127.0.0.1:1883")
    urls: list[str] = Field(description="every node's url (one without a cluster): try the next on failure")
    tcp_urls: list[str] = Field(description="every node's tcp_url (one without a cluster)")
    client_id: str = Field(description="the username: both brokers use it, whatever id a client sends")
    username: str
    password: str = Field(description="shown once; read-only; revoked by logging out")
    expires_at: str
    topics: dict[str, str] | None = Field(None, description="customers: {orders: its feed, catalog}")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    user: dict
    mqtt: DashboardMqtt | None = Field(None, description="admins, customers: a read-only broker login")


class AgentMqtt(BaseModel):
    url: str = Field(description="the broker over TCP, e.g. mqtt://127.0.0.1:1883")
    ws_url: str = Field(
        description="the same broker over WebSocket (the courier app), e.g. ws://127.0.0.1:9001/mqtt"
    )
    urls: list[str] = Field(description="every node's url (one without a cluster): try the next on failure")
    ws_urls: list[str] = Field(description="every node's ws_url (one without a cluster)")
    client_id: str = Field(
        description="the username, which both brokers use as the client id whatever a client sends;"
        " connect with clean session off, so offline messages wait"
    )
    username: str
    issued_at: str | None
    password: str | None = Field(None, description="only in the response that issued it")


class AgentMqttCredentials(BaseModel):
    agent_id: str
    mqtt: AgentMqtt


class UserOut(BaseModel):
    id: str
    username: str
    role: str
    display_name: str
    agent_id: str | None = None


class AgentOut(BaseModel):
    id: str
    name: str
    phone: str
    active: bool
    username: str | None
    presence: dict
    active_orders: int
    worklist_version: int
    mqtt: AgentMqtt
    created_at: str


class AgentList(BaseModel):
    agents: list[AgentOut]


class Worklist(BaseModel):
    agent_id: str
    version: int
    orders: list[OrderOut]
    offers: list[OrderOut]


class EventOut(BaseModel):
    cursor: int
    topic: str
    payload: dict


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: int


class Lifecycle(BaseModel):
    statuses: list[str]
    terminal: list[str]
    transitions: dict[str, list[str]]
    moves_by_role: dict[str, dict[str, list[str]]]
    assignable: list[str]
    failure_reasons: list[str]
