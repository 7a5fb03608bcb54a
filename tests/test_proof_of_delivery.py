"""Proof of delivery over REST (issue 19, item 5): the customer's delivery code and the
courier's photo. Every rule, bad input, and who may do what; a refusal writes nothing."""

from __future__ import annotations

import re
import struct
import zlib

import pytest

from order_service.orders.proof import CODE_ATTEMPTS, PHOTO_MAX_BYTES
from order_service.store.db import db
from order_service.store.models import PodCodeRefusal
from tests.dispatch_helpers import history, patch_settings
from tests.helpers import API, assert_problem, get_order, nothing_written, outbox, set_status, walk_to


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG (RGB, a gradient: a "photo" a browser decodes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32


@pytest.fixture
def out_for_delivery(client, admin, make_agent, make_customer, place_order):
    """A customer's order, picked up by its agent: (customer, agent, order as its customer sees it)."""
    customer, agent = make_customer(), make_agent()
    order = place_order(customer)
    walk_to(client, admin, order["id"], "picked_up", agent=agent)
    return customer, agent, get_order(client, customer, order["id"])


def upload(client, actor, order_id: str, data: bytes, content_type: str = "image/png"):
    headers = {**(actor.headers if actor else {}), "Content-Type": content_type}
    return client.post(f"{API}/orders/{order_id}/photo", data=data, headers=headers)


def photo_file(data_dir, order_id: str):
    return data_dir / "photos" / order_id


def refused_count(client, admin) -> float:
    text = client.get(f"{API}/metrics", headers=admin.headers).get_data(as_text=True)
    match = re.search(r"^orderbus_pod_code_refused_total (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def test_the_code_is_shown_to_its_customer_only(client, admin, make_customer, place_order, out_for_delivery):
    """Its customer reads the code (REST, its feed); admins, agents, orders/# and worklists never do."""
    customer, agent, order = out_for_delivery
    code = order["delivery_code"]
    assert re.fullmatch(r"[0-9]{4}", code)
    assert "delivery_code" not in get_order(client, admin, order["id"])
    assert "delivery_code" not in get_order(client, agent, order["id"])
    listed = client.get(f"{API}/orders", headers=customer.headers).json["orders"]
    assert [o["delivery_code"] for o in listed] == [code]
    assert_problem(client.get(f"{API}/orders/{order['id']}", headers=make_customer().headers), 404)
    feed = outbox(kind="customer")[-1]["payload"]
    assert feed["orders"][0]["delivery_code"] == code
    for row in outbox():
        if row["kind"] != "customer":
            assert "delivery_code" not in str(row["payload"]), row["topic"]
    # An order placed by the business (a phone order) has no customer login: no code.
    phone_order = place_order()
    assert get_order(client, admin, phone_order["id"]).get("delivery_code") is None
    with db.connection_context():
        from order_service.store.models import Order

        assert Order.get_by_id(phone_order["id"]).delivery_code is None
    # Once delivered, the feed no longer carries it.
    assert set_status(client, agent, order["id"], "delivered").status_code == 200
    assert outbox(kind="customer")[-1]["payload"]["orders"][0]["delivery_code"] is None


def test_a_required_code(client, admin, out_for_delivery):
    """Without the code or with a wrong one: 422 naming code, counted, the order stays picked up."""
    customer, agent, order = out_for_delivery
    patch_settings(client, admin, pod_code="required")
    code = order["delivery_code"]
    wrong = f"{(int(code) + 1) % 10000:04d}"
    before = refused_count(client, admin)
    with nothing_written():
        problem = assert_problem(set_status(client, agent, order["id"], "delivered"), 422, "code")
        assert "required" in problem["detail"]
        problem = assert_problem(set_status(client, agent, order["id"], "delivered", code=wrong), 422, "code")
        assert "not the customer's delivery code" in problem["detail"]
        for bad in ("12a4", "12345", "123", "", 1234, None and 0):
            if bad is None:
                continue
            assert_problem(set_status(client, agent, order["id"], "delivered", code=bad), 422, "code")
        assert_problem(
            set_status(client, agent, order["id"], "failed", code=code, failure={"reason": "refused"}),
            422,
            "code",
        )
    assert get_order(client, admin, order["id"])["status"] == "picked_up"
    assert refused_count(client, admin) == before + 1  # the wrong code only, not the malformed ones
    delivered = set_status(client, agent, order["id"], "delivered", code=code)
    assert delivered.status_code == 200, delivered.json
    proof = delivered.json["proof"]
    assert proof["code_checked"] is True and proof["photo"] is False and proof["at"]
    assert history(client, admin, order["id"])[-1]["to_status"] == "delivered"


def test_guessing_stops_after_a_few_wrong_codes(client, admin, out_for_delivery):
    """After CODE_ATTEMPTS wrong codes even the right one is refused (403): the dispatcher
    (an admin, not held to the setting) delivers it."""
    _customer, agent, order = out_for_delivery
    patch_settings(client, admin, pod_code="required")
    code = order["delivery_code"]
    wrongs = [f"{(int(code) + i) % 10000:04d}" for i in range(1, CODE_ATTEMPTS + 1)]
    for wrong in wrongs:
        assert_problem(set_status(client, agent, order["id"], "delivered", code=wrong), 422, "code")
    problem = assert_problem(set_status(client, agent, order["id"], "delivered", code=code), 403)
    assert problem["type"].endswith("code-attempts-exhausted")
    with db.connection_context():
        assert PodCodeRefusal.select().where(PodCodeRefusal.order == order["id"]).count() == CODE_ATTEMPTS
    forced = set_status(client, admin, order["id"], "delivered", force=True)
    assert forced.status_code == 200, forced.json
    assert forced.json["proof"]["code_checked"] is False


def test_an_optional_code_and_no_code(client, admin, make_agent, make_customer, place_order):
    """optional: no code is fine, a wrong one is refused; off: a code is not asked nor checked."""
    patch_settings(client, admin, pod_code="optional")
    agent, customer = make_agent(), make_customer()
    first = place_order(customer)
    walk_to(client, admin, first["id"], "picked_up", agent=agent)
    assert_problem(
        set_status(
            client,
            agent,
            first["id"],
            "delivered",
            code="0000" if first["delivery_code"] != "0000" else "0001",
        ),
        422,
        "code",
    )
    plain = set_status(client, agent, first["id"], "delivered")
    assert plain.status_code == 200 and plain.json["proof"]["code_checked"] is False
    patch_settings(client, admin, pod_code="off")
    second = place_order(customer)
    walk_to(client, admin, second["id"], "picked_up", agent=agent)
    other = "0000" if second["delivery_code"] != "0000" else "0001"
    done = set_status(client, agent, second["id"], "delivered", code=other)
    assert done.status_code == 200 and done.json["proof"]["code_checked"] is False


def test_settings_are_checked_and_readable(client, admin, make_agent, make_customer):
    assert_problem(
        client.patch(f"{API}/settings/dispatch", json={"pod_code": "sometimes"}, headers=admin.headers),
        422,
        "pod_code",
    )
    assert_problem(
        client.patch(f"{API}/settings/dispatch", json={"pod_photo": True}, headers=admin.headers),
        422,
        "pod_photo",
    )
    assert_problem(
        client.patch(f"{API}/settings/dispatch", json={"pod_code": "required"}, headers=make_agent().headers),
        403,
    )
    patch_settings(client, admin, pod_code="required", pod_photo="off")
    for actor in (make_agent(), make_customer(), admin):
        body = client.get(f"{API}/settings/proof", headers=actor.headers).json
        assert body == {"pod_code": "required", "pod_photo": "off", "photo_max_bytes": PHOTO_MAX_BYTES}
    assert_problem(client.get(f"{API}/settings/proof"), 401)


def test_the_photo(client, admin, data_dir, make_customer, make_agent, out_for_delivery):
    """The courier uploads; it is stored in the data dir under the order's id; admins and the
    order's customer read it back; the order's proof, history and events say so."""
    customer, agent, order = out_for_delivery
    image = png()
    response = upload(client, agent, order["id"], image, "application/octet-stream")
    assert response.status_code == 200, response.json
    assert response.json["proof"]["photo"] is True and response.json["proof"]["at"]
    assert response.json["status"] == "picked_up"
    assert photo_file(data_dir, order["id"]).read_bytes() == image
    assert history(client, admin, order["id"])[-1]["reason"] == "delivery photo added"
    event = outbox(topic=f"orders/{order['id']}/status")[-1]["payload"]
    assert event["order"]["proof"]["photo"] is True
    for reader in (admin, customer):
        got = client.get(f"{API}/orders/{order['id']}/photo", headers=reader.headers)
        assert got.status_code == 200 and got.data == image and got.mimetype == "image/png"
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert "no-store" in got.headers["Cache-Control"]
    assert_problem(client.get(f"{API}/orders/{order['id']}/photo", headers=make_customer().headers), 404)
    assert_problem(client.get(f"{API}/orders/{order['id']}/photo", headers=agent.headers), 403)
    assert_problem(client.get(f"{API}/orders/{order['id']}/photo", headers=make_agent().headers), 403)
    assert_problem(client.get(f"{API}/orders/{order['id']}/photo"), 401)
    # A new photo replaces the old; the type comes from its bytes, not its Content-Type.
    assert upload(client, agent, order["id"], JPEG, "image/png").status_code == 200
    got = client.get(f"{API}/orders/{order['id']}/photo", headers=admin.headers)
    assert got.data == JPEG and got.mimetype == "image/jpeg"
    assert upload(client, agent, order["id"], WEBP).status_code == 200
    assert client.get(f"{API}/orders/{order['id']}/photo", headers=admin.headers).mimetype == "image/webp"
    delivered = set_status(client, agent, order["id"], "delivered")
    assert delivered.json["proof"]["photo"] is True
    # Delivered: no more photos.
    assert_problem(upload(client, agent, order["id"], image), 409)


def test_photo_refusals_write_nothing(
    client, admin, data_dir, make_customer, make_agent, place_order, out_for_delivery
):
    """Another agent, another customer, its own customer, an admin, anonymous; not an image,
    empty, over 5 MiB, not picked up: refused, no row and no file written."""
    customer, agent, order = out_for_delivery
    image = png()
    other_agent, other_customer = make_agent(), make_customer()
    ready = place_order(customer)
    walk_to(client, admin, ready["id"], "ready", agent=agent)
    too_big = image + b"\x00" * (PHOTO_MAX_BYTES + 1 - len(image))
    with nothing_written():
        assert_problem(upload(client, other_agent, order["id"], image), 404)
        assert_problem(upload(client, other_customer, order["id"], image), 403)
        assert_problem(upload(client, customer, order["id"], image), 403)
        assert_problem(upload(client, admin, order["id"], image), 403)
        assert_problem(upload(client, None, order["id"], image), 401)
        assert_problem(upload(client, agent, "ord_nope", image), 404)
        assert_problem(
            upload(client, agent, order["id"], b"GIF89a" + b"\x00" * 40, "image/gif"), 422, "photo"
        )
        svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
        assert_problem(upload(client, agent, order["id"], svg, "image/png"), 422, "photo")
        assert_problem(upload(client, agent, order["id"], b""), 422, "photo")
        assert_problem(upload(client, agent, order["id"], too_big), 413)
        assert_problem(upload(client, agent, ready["id"], image), 409)  # not yet picked up
    assert not (data_dir / "photos").exists() or not any((data_dir / "photos").iterdir())
    assert get_order(client, admin, order["id"])["proof"]["photo"] is False
    # Positive control: 5 MiB exactly is taken.
    exactly = image + b"\x00" * (PHOTO_MAX_BYTES - len(image))
    assert upload(client, agent, order["id"], exactly).status_code == 200
    assert photo_file(data_dir, order["id"]).stat().st_size == PHOTO_MAX_BYTES


def test_a_required_photo(client, admin, out_for_delivery):
    _customer, agent, order = out_for_delivery
    patch_settings(client, admin, pod_photo="required")
    with nothing_written():
        assert_problem(set_status(client, agent, order["id"], "delivered"), 422, "photo")
    assert upload(client, agent, order["id"], png()).status_code == 200
    done = set_status(client, agent, order["id"], "delivered")
    assert done.status_code == 200, done.json
    assert done.json["proof"]["photo"] is True
