"""Each agent's worklist kept ready to publish, one order at a time.

Every change of an order republishes the complete worklist of each agent it touches
(contract rule 4: a worklist is complete, never a delta). Rebuilding it from the orders
cost a row, a dict and a JSON encoding per order in it, so a change for an agent holding
K orders cost O(K), and a backlog of K assignments O(K²): 44 s for 1,000 in the
benchmarks (B5). Here each agent's row in ``agent_worklists`` keeps its two lists
(``orders``, ``offers``) as text: a fixed-width index of sort keys and, in the same order,
one line per order, ``"\\n" + key + the order's JSON``. A change of one order finds its
place by a binary search on the index, then replaces, inserts or removes that one line;
the payload's list is the text with the keys cut out by one regular expression. The rows
read and the Python work per change no longer depend on K; only the bytes copied do (the
message itself is the whole worklist).

The text is kept for the agent's current ``worklist_version``: a row written for another
version (none yet, or the worklist changed without this module) is rebuilt from the
orders, once, as every worklist was before.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import overload

import peewee as pw

import contract
from order_service.lifecycle import TERMINAL
from order_service.store.models import Agent, BaseModel, Order, OrderOffer, tuple_rows

ID_WIDTH = 32  # orders.id is at most 32 characters
KEY_WIDTH = 20 + ID_WIDTH  # created_at to the microsecond, then the id: the SQL order
_KEYS = re.compile(f"\n.{{{KEY_WIDTH}}}")  # a line's start and its key (JSON has no raw newline)


class AgentWorklist(BaseModel):
    """The agent's worklist as of ``version``: per list an index of keys and the orders' JSON."""

    agent = pw.ForeignKeyField(Agent, primary_key=True, on_delete="CASCADE")
    agent_id: str
    version = pw.IntegerField()
    orders_index = pw.TextField(default="")
    orders = pw.TextField(default="")
    offers_index = pw.TextField(default="")
    offers = pw.TextField(default="")

    class Meta:
        table_name = "agent_worklists"


def sort_key(created_at: datetime, order_id: str) -> str:
    """The order's place in a worklist, as a fixed-width string: oldest first, then by id."""
    return f"{created_at:%Y%m%d%H%M%S%f}{order_id:<{ID_WIDTH}}"


class _Keys(Sequence[str]):
    """The keys of a fixed-width index, as a sequence ``bisect`` can search."""

    def __init__(self, index: str) -> None:
        self.text = index

    def __len__(self) -> int:
        return len(self.text) // KEY_WIDTH

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            raise TypeError("no slices")
        return self.text[i * KEY_WIDTH : (i + 1) * KEY_WIDTH]


@dataclass
class OrderList:
    """One list of a worklist: the index of keys and the lines of JSON, in the same order."""

    index: str = ""
    text: str = ""

    @classmethod
    def of(cls, entries: Iterable[tuple[str, str]]) -> OrderList:
        """From (key, JSON) pairs already in order."""
        pairs = list(entries)
        return cls("".join(k for k, _ in pairs), "".join(f"\n{k}{j}" for k, j in pairs))

    def __len__(self) -> int:
        return len(self.index) // KEY_WIDTH

    def __contains__(self, key: object) -> bool:
        keys = _Keys(self.index)
        i = bisect.bisect_left(keys, str(key))
        return i < len(keys) and keys[i] == key

    def put(self, key: str, fragment: str | None) -> bool:
        """Set the order of ``key`` to ``fragment`` (its JSON), or take it out (None); True
        when that adds it (it was not in the list)."""
        keys = _Keys(self.index)
        i = bisect.bisect_left(keys, key)
        present = i < len(keys) and keys[i] == key
        if present:
            start = self.text.find("\n" + key)
            end = self.text.find("\n", start + 1)
            end = len(self.text) if end < 0 else end
            if fragment is None:
                self.text = self.text[:start] + self.text[end:]
                self.index = self.index[: i * KEY_WIDTH] + self.index[(i + 1) * KEY_WIDTH :]
            else:
                self.text = f"{self.text[:start]}\n{key}{fragment}{self.text[end:]}"
        elif fragment is not None:
            start = len(self.text) if i == len(keys) else self.text.find("\n" + keys[i])
            self.text = f"{self.text[:start]}\n{key}{fragment}{self.text[start:]}"
            self.index = self.index[: i * KEY_WIDTH] + key + self.index[i * KEY_WIDTH :]
            return True
        return False

    def json(self) -> str:
        """The list as JSON: ``[order, order, ...]``."""
        return "[" + _KEYS.sub(",", self.text)[1:] + "]"


@dataclass
class Worklist:
    """An agent's two lists, loaded for a change (``row`` is None when there was none)."""

    orders: OrderList
    offers: OrderList
    row: AgentWorklist | None = None

    def save(self, agent_id: str, version: int) -> None:
        fields = {
            "version": version,
            "orders_index": self.orders.index,
            "orders": self.orders.text,
            "offers_index": self.offers.index,
            "offers": self.offers.text,
        }
        if self.row is None:
            AgentWorklist.insert(agent=agent_id, **fields).execute()
        else:
            AgentWorklist.update(**fields).where(AgentWorklist.agent == agent_id).execute()


def load(agent_id: str, version: int) -> Worklist | None:
    """The agent's lists as of worklist ``version``; None when the stored text is not that
    version's (the caller rebuilds)."""
    row = AgentWorklist.get_or_none(AgentWorklist.agent == agent_id)
    if row is None or row.version != version:
        return None
    orders, offers = OrderList(row.orders_index, row.orders), OrderList(row.offers_index, row.offers)
    return Worklist(orders, offers, row)


def rebuild(agent_id: str, dicts: Callable[[pw.ModelSelect[Order]], list[dict]]) -> Worklist:
    """The agent's lists from the orders themselves (``dicts`` builds their payloads)."""
    row = AgentWorklist.get_or_none(AgentWorklist.agent == agent_id)
    lists = []
    for query in (Order.active_for_agent(agent_id), Order.offered_to(agent_id)):
        places = tuple_rows(query.select(Order.created_at, Order.id))
        keys = [sort_key(created, oid) for created, oid in places]
        lists.append(OrderList.of(zip(keys, map(contract.dumps, dicts(query)), strict=True)))
    return Worklist(lists[0], lists[1], row)


def place(worklist: Worklist, agent_id: str, order: Order, offered_to: set[str], fragment: str) -> bool:
    """Put ``order`` (its JSON ``fragment``) where it now belongs in this agent's lists; True
    when that adds it to one of them."""
    key = sort_key(order.created_at, order.id)
    mine = order.agent_id == agent_id and order.status not in TERMINAL
    added = worklist.orders.put(key, fragment if mine else None)
    return worklist.offers.put(key, fragment if agent_id in offered_to else None) or added


def holds(worklist: Worklist, order: Order) -> bool:
    """Whether the order is in either list of this worklist."""
    key = sort_key(order.created_at, order.id)
    return key in worklist.orders or key in worklist.offers


def pending_offers(order_id: str) -> set[str]:
    """The agents this order waits on an answer from (its pending offer rows)."""
    return {row.agent_id for row in OrderOffer.pending_for(order_id)}
