"""MQTT topic names: built here and nowhere else (ARCHITECTURE.md, "Topics")."""

from __future__ import annotations

ORDERS_NEW = "orders/new"
AGENT_PRESENCE_FILTER = "agents/+/presence"


def order_status(order_id: str) -> str:
    return f"orders/{order_id}/status"


def agent_assigned(agent_id: str) -> str:
    return f"agents/{agent_id}/assigned"


def agent_presence(agent_id: str) -> str:
    return f"agents/{agent_id}/presence"


def agent_from_presence_topic(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "agents" and parts[2] == "presence" and parts[1]:
        return parts[1]
    return None
