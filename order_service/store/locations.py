"""The tables of live location (migration m0010): kept apart from ``models.py``."""

from __future__ import annotations

import peewee as pw

from order_service.store.models import Agent, BaseModel, Order


class AgentLocation(BaseModel):
    """An agent's latest accepted position; deleted when the agent goes offline."""

    agent = pw.ForeignKeyField(Agent, primary_key=True, on_delete="CASCADE")
    agent_id: str
    lat = pw.DoubleField()
    lon = pw.DoubleField()
    acc = pw.DoubleField(null=True)
    tst = pw.BigIntegerField()
    batt = pw.IntegerField(null=True)
    speed = pw.DoubleField(null=True)
    heading = pw.DoubleField(null=True)
    received_at = pw.DateTimeField()
    stale = pw.BooleanField(default=False)

    class Meta:
        table_name = "agent_locations"


class OrderTrailPoint(BaseModel):
    """One position of the courier carrying an order, while the order is picked up."""

    id = pw.BigAutoField()
    order = pw.ForeignKeyField(Order, on_delete="CASCADE")
    order_id: str
    lat = pw.DoubleField()
    lon = pw.DoubleField()
    tst = pw.BigIntegerField()

    class Meta:
        table_name = "order_trail"


class OrderLocationSeq(BaseModel):
    """Feed messages of an order's customer caused by the courier's position alone."""

    order = pw.ForeignKeyField(Order, primary_key=True, on_delete="CASCADE")
    order_id: str
    seq = pw.BigIntegerField()

    class Meta:
        table_name = "order_location_seq"


class LocationDrop(BaseModel):
    """How many position reports were dropped for one reason, ever (a Prometheus counter)."""

    reason = pw.CharField(max_length=32, primary_key=True)
    count = pw.BigIntegerField()

    class Meta:
        table_name = "location_drops"
