"""GET /api/v1/metrics is not public: the scraper's token (ORDERBUS_METRICS_TOKEN) or an admin's."""

from __future__ import annotations

import pytest

from order_service.api.app import create_app

SCRAPER_TOKEN = "scraper-token-0123456789abcdef"


@pytest.fixture
def scraped(app, settings_overrides: dict):
    """The API with a metrics token set, on the same (migrated) database."""
    return create_app({**settings_overrides, "metrics_token": SCRAPER_TOKEN}).test_client()


def _get(client, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/api/v1/metrics", headers=headers)


def test_metrics_refuse_anyone_without_a_token(client, scraped):
    for api in (client, scraped):
        response = _get(api)
        assert response.status_code == 401 and response.mimetype == "application/problem+json"
        assert b"orderbus_" not in response.data


def test_metrics_answer_the_scrapers_token_and_no_other(scraped):
    response = _get(scraped, SCRAPER_TOKEN)
    assert response.status_code == 200, response.data
    assert "orderbus_outbox_pending" in response.get_data(as_text=True)
    assert _get(scraped, SCRAPER_TOKEN[:-1] + "X").status_code == 401
    assert _get(scraped, SCRAPER_TOKEN + "X").status_code == 401


def test_metrics_token_unset_accepts_no_empty_token(client):
    """With no ORDERBUS_METRICS_TOKEN, no token (not even an empty one) stands for it."""
    response = client.get("/api/v1/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_metrics_answer_an_admin_and_refuse_a_customer(client, admin, make_customer):
    assert client.get("/api/v1/metrics", headers=admin.headers).status_code == 200
    customer = make_customer()
    response = client.get("/api/v1/metrics", headers=customer.headers)
    assert response.status_code == 403 and b"orderbus_" not in response.data


def test_a_short_metrics_token_is_refused_at_start(settings_overrides: dict):
    with pytest.raises(ValueError, match="ORDERBUS_METRICS_TOKEN is too short"):
        create_app({**settings_overrides, "metrics_token": "short"})
