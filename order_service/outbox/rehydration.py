"""What a reconnecting relay republishes: only what the broker lacks of the current state.

The relay keeps a marker retained on ``orderbus/relay/epoch`` (only the service account
may read or write it): the database's epoch id (``relay_epoch``, made once per
database) and ``through``, the last outbox row the broker had acknowledged when the
marker was published. The marker ends every batch of rows, so it is current; a broker
keeps messages in the order they came, so whatever holds the marker holds every row up
to ``through``. After connecting, the relay reads it back (``MqttLink.read_retained``),
sends what is pending, and then (:func:`lacking`):

- no marker, another epoch, or a ``through`` past this database's last row: the broker
  lost its retained store (an embedded broker restarts empty) or holds another
  database's state (``python -m order_service republish`` after a restore renews the
  epoch). The relay republishes the state of every order whose retained state is not
  cleared (live ones, and finished ones within ``ORDERBUS_RETAIN_TERMINAL_SECONDS``),
  every worklist, ``orders/new``, the catalog and the feed of every customer with an
  order active or finished within the feed's window (``customers/<id>/orders``), and
  only then publishes the marker;
- this epoch, ``through`` behind what was published: the broker restored an older
  snapshot (Mosquitto killed between two saves of its persistence file); the relay
  republishes the state of what changed after ``through``;
- this epoch and everything there: the relay's own connection dropped, or Mosquitto
  restarted and restored its store: nothing is republished.

The relay's other reads of the outbox live here too: where it stands
(:func:`published_through`), its hot-path statements (:func:`statement`, :func:`pending`)
and the finished orders whose retained state it clears (:func:`finished_clears`).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import peewee

import contract
from contract import CUSTOMER_FEED_WINDOW_SECONDS as CUSTOMER_FEED_WINDOW
from order_service.store.db import Prepared, db
from order_service.store.models import Order, Outbox, RelayEpoch, tuple_rows, utcnow


def database_epoch() -> str:
    """This database's epoch id (made by migration 0006; made here if its row is gone)."""
    row = RelayEpoch.get_or_none(RelayEpoch.id == 1)
    if row is None:
        with db.atomic():
            row = RelayEpoch.create(id=1, epoch=secrets.token_hex(16))
    return row.epoch


def published_through() -> int:
    """The id of the last published outbox row: the published rows are a prefix of the
    outbox (id order is commit order, and rows are published in id order).

    One statement, so one snapshot. It was two (the first pending row, else the last row):
    rows committed between them, with nothing pending at the first, were taken for
    published, and the relay never sent them."""
    first_pending = Outbox.select(peewee.fn.MIN(Outbox.id)).where(Outbox.published_at.is_null())
    after_last = Outbox.select(peewee.fn.MAX(Outbox.id) + 1)
    first_unpublished = peewee.Select(columns=[peewee.fn.COALESCE(first_pending, after_last, 1)])
    return int(first_unpublished.bind(db).scalar()) - 1


def written_through() -> int:
    """The id of the last outbox row, published or not."""
    return Outbox.select(peewee.fn.MAX(Outbox.id)).scalar() or 0


def lacking(
    held: tuple[str, int] | None, epoch: str, published: int, written: int
) -> tuple[int | None, str | None]:
    """(since, why) from the marker the broker ``held``: why None when it lacks nothing;
    since None when it lacks everything, else the row after which it lacks what changed.

    A marker past ``published`` but not past ``written`` covers rows the broker took but
    whose acknowledgements were lost: they were still pending, and have been sent again."""
    if held is None:
        return None, "no marker"
    if held[0] != epoch:
        return None, "another epoch"
    if held[1] > written:
        return None, f"marker at {held[1]}, past the last row {written}"
    if held[1] < published:
        return held[1], f"marker at {held[1]} of {published}"
    return None, None


def lost_state(retain_terminal_seconds: int, since: int | None, upto: int) -> list[tuple[str, bytes, bool]]:
    """Retained messages: the last published state of every order whose retained state is
    not cleared, of every worklist, of ``orders/new``, of ``catalog`` and of every customer's
    feed that holds an order (``since``: only of those changed by a row after it). Left out: a topic
    whose newest row is past ``upto`` (just drained, so retained already). In id order."""
    now = utcnow()
    cutoff = now - timedelta(seconds=retain_terminal_seconds)
    # A customer's feed holds its orders active or finished within the feed's window.
    in_feeds = Order.select(Order.id).where(
        Order.owner.is_null(False)
        & (Order.terminal_at.is_null() | (Order.terminal_at > now - timedelta(seconds=CUSTOMER_FEED_WINDOW)))
    )
    feeds = Outbox.select(Outbox.topic).where((Outbox.kind == "customer") & Outbox.order_id.in_(in_feeds))
    kept = Order.select(Order.id).where(
        Order.retained_cleared_at.is_null() & (Order.terminal_at.is_null() | (Order.terminal_at > cutoff))
    )
    agents = None
    if since is not None:
        changed = (Outbox.id > since) & (Outbox.id <= upto)
        kept = kept.where(
            Order.id.in_(Outbox.select(Outbox.order_id).where(changed & Outbox.kind.in_(("new", "status"))))
        )
        agents = Outbox.select(Outbox.agent_id).where(changed & (Outbox.kind == "worklist"))
        feeds = Outbox.select(Outbox.topic).where(changed & (Outbox.kind == "customer"))
    rows = _latest_published("new", None, kept)
    rows += _latest_published("status", Outbox.order_id, kept)
    rows += _latest_published("worklist", Outbox.agent_id, agents)
    rows += _latest_published("customer", Outbox.topic, feeds)
    rows += [row for row in _latest_published("catalog", None, None) if since is None or row[0] > since]
    return [(topic, payload.encode(), True) for row, topic, payload in sorted(rows) if row <= upto]


def _latest_published(
    kind: str, group: peewee.Field | None, among: peewee.Query | None
) -> list[tuple[int, str, str]]:
    """(id, topic, payload) of the newest published row of each ``group`` (order, agent or
    topic; None: the newest of all), of orders (agents, topics) ``among`` only if given."""
    newest = Outbox.select(peewee.fn.MAX(Outbox.id)).where(
        (Outbox.kind == kind) & Outbox.published_at.is_null(False)
    )
    if group is None:
        query = Outbox.select(Outbox.id, Outbox.topic, Outbox.payload).where(Outbox.id == newest)
        if among is not None:
            query = query.where(Outbox.order_id.in_(among))
        return list(tuple_rows(query))
    if among is not None:
        newest = newest.where(group.in_(among))
    return list(
        tuple_rows(
            Outbox.select(Outbox.id, Outbox.topic, Outbox.payload).where(
                Outbox.id.in_(newest.group_by(group))
            )
        )
    )


def finished_clears(
    retain_terminal_seconds: int, limit: int
) -> tuple[list[str], list[tuple[str, bytes, bool]]]:
    """Orders finished longer ago than the retention window whose retained state is not
    cleared yet (none with an unpublished row), at most ``limit``, and the messages that clear
    it: an empty retained message on each one's status topic, and on ``orders/new`` when it
    retains one of them (the newest created order)."""
    cutoff = utcnow() - timedelta(seconds=retain_terminal_seconds)
    pending = Outbox.select(Outbox.order_id).where(
        Outbox.published_at.is_null() & Outbox.order_id.is_null(False)
    )
    finished = [
        order.id
        for order in Order.select(Order.id)
        .where(
            Order.terminal_at.is_null(False)
            & (Order.terminal_at <= cutoff)
            & Order.retained_cleared_at.is_null()
            & Order.id.not_in(pending)
        )
        .limit(limit)
    ]
    clears = [(contract.order_status(order_id), b"", True) for order_id in finished]
    newest = Outbox.select(Outbox.order_id).where(Outbox.kind == "new").order_by(Outbox.id.desc()).first()
    if finished and newest is not None and newest.order_id in finished:
        clears.append((contract.ORDERS_NEW, b"", True))
    return finished, clears


def statement(name: str, batch: int) -> Prepared:
    """The relay's hot-path outbox statements, their SQL built once (peewee's SQL building took
    longer than running them). ``pending``: parameters the last acknowledged id and ``batch``;
    ``mark``: the time, then the ids after which and up to which rows are published."""
    if name == "pending":
        return Prepared(lambda: pending(0, batch))
    return Prepared(
        lambda: Outbox.update(published_at=utcnow()).where(
            (Outbox.id > 0) & (Outbox.id <= 0) & Outbox.published_at.is_null()
        )
    )


def pending(after: int, limit: int) -> peewee.ModelSelect[Outbox]:
    """The oldest rows after ``after``, each with ``newest``: no later row of its topic exists
    (published retained only then; an older one would overwrite a newer state). One query."""
    later = Outbox.alias()
    superseded = peewee.fn.EXISTS(
        later.select(peewee.SQL("1")).where((later.topic == Outbox.topic) & (later.id > Outbox.id))
    )
    return (
        Outbox.select(Outbox.id, Outbox.topic, Outbox.payload, (~superseded).alias("newest"))
        .where(Outbox.id > after)
        .order_by(Outbox.id)
        .limit(limit)
    )
