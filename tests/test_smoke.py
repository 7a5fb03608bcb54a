def test_order_round_trip(client, admin, place_order):
    """A placed order can be read back with its version as ETag."""
    order = place_order()
    response = client.get(f"/api/v1/orders/{order['id']}", headers=admin.headers)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'
    assert response.json["total_cents"] == 2598
