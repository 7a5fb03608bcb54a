"""The agents' devices' push subscriptions: checked, stored one per device, bounded.

The endpoint is a URL the relay will POST to, so it is checked like any address the
service is told to call: ``https://`` with a host name (an IP literal or a ``localhost``
name is refused, as push services have names), at most :data:`MAX_ENDPOINT` characters,
no user info. ``ORDERBUS_PUSH_ALLOW_INSECURE_ENDPOINTS`` (tests only) also accepts
``http://`` on a loopback address. The keys must be what a browser sends: ``p256dh`` a
P-256 point (65 bytes, uncompressed), ``auth`` 16 bytes, both base64url.
"""

from __future__ import annotations

import binascii
import ipaddress
from urllib.parse import urlsplit

import peewee
from cryptography.hazmat.primitives.asymmetric import ec

from order_service.config import Settings
from order_service.errors import InvalidField
from order_service.push.keys import b64url_decode
from order_service.push.model import PushSubscription
from order_service.store.db import db
from order_service.store.models import new_id, rfc3339, utcnow

MAX_ENDPOINT = 1024
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str, settings: Settings) -> str:
    field = "subscription.endpoint"
    if len(endpoint) > MAX_ENDPOINT:
        raise InvalidField(field, f"at most {MAX_ENDPOINT} characters")
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        _ = parts.port  # a malformed port raises here
    except ValueError:
        raise InvalidField(field, "not a URL") from None
    if parts.username is not None or parts.password is not None:
        raise InvalidField(field, "no user name or password in the URL")
    if not host:
        raise InvalidField(field, "the URL has no host")
    if parts.scheme == "http" and settings.push_allow_insecure_endpoints and _loopback(host):
        return endpoint
    if parts.scheme != "https":
        raise InvalidField(field, "push services are reached over https://")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise InvalidField(field, "a push service's host is a name, not an IP address")
    if host.lower().rstrip(".") in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        raise InvalidField(field, "a push service is not on this machine")
    return endpoint


def _decoded(value: str, field: str, size: int) -> bytes:
    try:
        raw = b64url_decode(value)
    except (binascii.Error, ValueError):
        raise InvalidField(field, "not base64url") from None
    if len(raw) != size:
        raise InvalidField(field, f"{size} bytes once decoded, not {len(raw)}")
    return raw


def check_keys(p256dh: str, auth: str) -> None:
    point = _decoded(p256dh, "subscription.keys.p256dh", 65)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidField("subscription.keys.p256dh", "not a P-256 public key") from None
    _decoded(auth, "subscription.keys.auth", 16)


def subscription_dict(row: PushSubscription) -> dict:
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "device_id": row.device_id,
        "endpoint_origin": "{0.scheme}://{0.netloc}".format(urlsplit(row.endpoint)),
        "created_at": rfc3339(row.created_at),
        "last_sent_at": rfc3339(row.last_sent_at),
        "last_status": row.last_status,
    }


def save(agent_id: str, device_id: str, endpoint: str, p256dh: str, auth: str, settings: Settings) -> dict:
    """Store the device's subscription (replacing its previous one, and taking the endpoint
    from any other agent: one browser, one courier). An agent keeps its newest
    ``push_devices_per_agent`` subscriptions; older ones are deleted."""
    check_endpoint(endpoint, settings)
    check_keys(p256dh, auth)
    now = utcnow()
    for _attempt in range(3):  # two devices racing for one endpoint: the loser tries again
        try:
            with db.atomic():
                PushSubscription.delete().where(
                    (PushSubscription.endpoint == endpoint)
                    | ((PushSubscription.agent == agent_id) & (PushSubscription.device_id == device_id))
                ).execute()
                row = PushSubscription.create(
                    id=new_id("psh"),
                    agent=agent_id,
                    device_id=device_id,
                    endpoint=endpoint,
                    p256dh=p256dh,
                    auth=auth,
                    created_at=now,
                    updated_at=now,
                )
                keep = (
                    PushSubscription.select(PushSubscription.id)
                    .where(PushSubscription.agent == agent_id)
                    .order_by(PushSubscription.updated_at.desc(), PushSubscription.id.desc())
                    .limit(settings.push_devices_per_agent)
                )
                PushSubscription.delete().where(
                    (PushSubscription.agent == agent_id) & PushSubscription.id.not_in(keep)
                ).execute()
            return subscription_dict(row)
        except peewee.IntegrityError:
            continue
    raise InvalidField("subscription.endpoint", "being registered by another device; try again")


def remove(agent_id: str, device_id: str) -> int:
    """Delete the device's subscription; how many rows went (0 or 1)."""
    return (
        PushSubscription.delete()
        .where((PushSubscription.agent == agent_id) & (PushSubscription.device_id == device_id))
        .execute()
    )


def of_agent(agent_id: str) -> list[PushSubscription]:
    rows = PushSubscription.select().where(PushSubscription.agent == agent_id)
    return list(rows.order_by(PushSubscription.id))
