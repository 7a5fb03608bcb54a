"""The push subscriptions' table (migration 0012)."""

from __future__ import annotations

import peewee as pw

from order_service.store.models import Agent, BaseModel, utcnow


class PushSubscription(BaseModel):
    """One device's subscription: where its push service takes pushes for it (``endpoint``)
    and the browser's keys to encrypt them with (RFC 8291: ``p256dh``, ``auth``)."""

    id = pw.CharField(primary_key=True, max_length=32)
    agent = pw.ForeignKeyField(Agent, on_delete="CASCADE")
    agent_id: str
    device_id = pw.CharField(max_length=64)
    endpoint = pw.CharField(max_length=1024)
    p256dh = pw.CharField(max_length=128)
    auth = pw.CharField(max_length=64)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    last_sent_at = pw.DateTimeField(null=True)
    last_status = pw.IntegerField(null=True)

    class Meta:
        table_name = "push_subscriptions"

    def info(self) -> dict:
        """What pywebpush takes: the browser's PushSubscription.toJSON() without expiry."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}
