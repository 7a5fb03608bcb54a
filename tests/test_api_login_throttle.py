"""Password guessing on POST /auth/token is throttled per username."""

from __future__ import annotations

from datetime import timedelta

import pytest

from order_service.store.db import db
from order_service.store.models import LoginFailure, utcnow
from tests.helpers import assert_problem

URL = "/api/v1/auth/token"


@pytest.fixture
def settings_overrides(settings_overrides: dict) -> dict:
    return {**settings_overrides, "login_max_failures": 3, "login_window_seconds": 60}


def login(client, username: str, password: str):
    return client.post(URL, json={"username": username, "password": password})


def test_too_many_failures_get_429_even_with_the_right_password(client, make_customer):
    customer = make_customer()
    for _ in range(3):
        assert_problem(login(client, customer.username, "wrong-guess"), 401)
    throttled = login(client, customer.username, "password-1")
    problem = assert_problem(throttled, 429)
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert customer.username in problem["detail"]
    # Other accounts are unaffected.
    other = make_customer()
    assert login(client, other.username, "password-1").status_code == 200


def test_the_window_passing_lets_the_owner_back_and_success_clears_the_count(client, make_customer):
    customer = make_customer()
    for _ in range(3):
        login(client, customer.username, "wrong-guess")
    with db.connection_context():
        LoginFailure.update(at=utcnow() - timedelta(seconds=61)).execute()
    assert login(client, customer.username, "password-1").status_code == 200
    for _ in range(2):
        login(client, customer.username, "wrong-guess")
    assert login(client, customer.username, "password-1").status_code == 200  # clears the two
    for _ in range(2):
        login(client, customer.username, "wrong-guess")
    assert login(client, customer.username, "password-1").status_code == 200


def test_unknown_usernames_are_throttled_alike(client):
    for _ in range(3):
        assert_problem(login(client, "nobody-here", "x"), 401)
    assert_problem(login(client, "nobody-here", "x"), 429)
