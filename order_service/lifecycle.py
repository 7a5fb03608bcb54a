"""The order lifecycle and who may move it: the one place these rules live.

    placed -> confirmed -> preparing -> ready -> picked_up -> delivered
       \\          \\            \\          \\            \\
        +----------+------------+----------+--> cancelled  +--> failed (reason required)
    (placed -> rejected)

``failed`` is the agent's move from ``picked_up`` when the delivery could not be
made; it needs a reason from :data:`FAILURE_REASONS` (``other`` also a note).
Offers (an order offered to agents, waiting for an answer) are not a status: an
offered order stays in its status, unassigned, until an agent accepts.
"""

from __future__ import annotations

STATUSES = (
    "placed",
    "confirmed",
    "preparing",
    "ready",
    "picked_up",
    "delivered",
    "failed",
    "cancelled",
    "rejected",
)

TERMINAL = frozenset({"delivered", "failed", "cancelled", "rejected"})

# status -> the statuses it may move to next
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "placed": ("confirmed", "cancelled", "rejected"),
    "confirmed": ("preparing", "cancelled"),
    "preparing": ("ready", "cancelled"),
    "ready": ("picked_up", "cancelled"),
    "picked_up": ("delivered", "failed"),
    "delivered": (),
    "failed": (),
    "cancelled": (),
    "rejected": (),
}

# role -> the (from, to) moves it may make. Ownership (the customer's own order,
# the agent's assigned order) is checked by access.py; this table is about moves.
_AGENT_MOVES = frozenset({"picked_up", "delivered", "failed"})
ROLE_MOVES: dict[str, frozenset[tuple[str, str]]] = {
    "admin": frozenset((f, t) for f, ts in TRANSITIONS.items() for t in ts if t not in _AGENT_MOVES),
    "agent": frozenset((f, t) for f, ts in TRANSITIONS.items() for t in ts if t in _AGENT_MOVES),
    "customer": frozenset({("placed", "cancelled")}),
}
# An admin may make an agent's move on the agent's behalf only when forced.
FORCED_MOVES: dict[str, frozenset[tuple[str, str]]] = {
    "admin": frozenset((f, t) for f, ts in TRANSITIONS.items() for t in ts),
}

# Statuses that need an agent on the order.
NEEDS_AGENT = frozenset({"picked_up", "delivered", "failed"})
# Statuses in which an admin may assign, reassign or unassign an agent.
ASSIGNABLE = frozenset({"confirmed", "preparing", "ready"})
# Why a delivery failed (``failed`` requires one); ``other`` requires a note too.
FAILURE_REASONS = ("customer_absent", "wrong_address", "refused", "damaged", "other")


def next_statuses(status: str) -> list[str]:
    return list(TRANSITIONS.get(status, ()))


def is_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, ())


def role_may_move(role: str, current: str, target: str, *, force: bool = False) -> bool:
    moves = FORCED_MOVES.get(role, frozenset()) if force else frozenset()
    return (current, target) in ROLE_MOVES.get(role, frozenset()) | moves


def moves_for(role: str, current: str) -> list[str]:
    """The next statuses this role may choose from ``current`` (for UIs)."""
    return [t for t in next_statuses(current) if role_may_move(role, current, t)]
