"""Who may see what: the ownership half of the permission rules.

Admins see every order; a customer only the orders it placed; an agent only
the orders currently assigned to it, and those offered to it while the offer waits
for its answer. An order a user may not see is reported
as not found, so ids of other people's orders are not confirmed to exist.
"""

from __future__ import annotations

import peewee

from order_service.errors import NotFound
from order_service.store.models import Agent, Order, User


def agent_id_of(user: User) -> str | None:
    agent = Agent.get_or_none(Agent.user == user)
    return agent.id if agent else None


def can_see(user: User, order: Order) -> bool:
    if user.role == "admin":
        return True
    if user.role == "customer":
        return order.owner_id == user.id
    if user.role == "agent":
        mine = agent_id_of(user)
        if mine is None:
            return False
        return order.agent_id == mine or mine in (order.offer_agents or [])
    return False


def require_visible(user: User, order: Order) -> None:
    if not can_see(user, order):
        raise NotFound("order", order.id)


def visible_orders(user: User) -> peewee.ModelSelect[Order]:
    query = Order.select()
    if user.role == "customer":
        return query.where(Order.owner == user)
    if user.role == "agent":
        mine = agent_id_of(user)
        if mine is None:  # (peewee reads "== None" as IS NULL: every unassigned order)
            return query.where(Order.id.is_null())
        return query.where((Order.agent == mine) | Order.id.in_(Order.offered_to(mine).select(Order.id)))
    return query
