"""The sign-up limit: so many accounts per client address and window, then 429 problem+json
with Retry-After and nothing written; other addresses are not held back; memory is bounded."""

from __future__ import annotations

import pytest

from order_service.accounts.signups import SignupLimiter
from order_service.errors import TooManyAttempts
from tests.helpers import API, assert_problem, nothing_written


@pytest.fixture
def settings_overrides(settings_overrides: dict) -> dict:
    return {**settings_overrides, "signup_per_address": 3, "signup_window_seconds": 600}


def _signup(client, name: str, address: str):
    return client.post(
        f"{API}/auth/signup",
        json={"username": name, "password": "password-1"},
        environ_base={"REMOTE_ADDR": address},
    )


def test_an_address_past_its_limit_gets_429_and_others_go_on(client):
    for n in range(3):
        assert _signup(client, f"bulk{n}", "203.0.113.7").status_code == 201
    with nothing_written():
        refused = _signup(client, "bulk3", "203.0.113.7")
        problem = assert_problem(refused, 429)
    assert problem["type"].endswith("/signup-throttled")
    assert 1 <= int(refused.headers["Retry-After"]) <= 600
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert _signup(client, "neighbour", "203.0.113.8").status_code == 201  # another address
    login = client.post(f"{API}/auth/token", json={"username": "bulk0", "password": "password-1"})
    assert login.status_code == 200  # the accounts made stay usable


def test_a_spoofed_forwarded_for_does_not_reset_the_count(client):
    """X-Forwarded-For from a client that is not a trusted proxy is ignored."""
    for n in range(3):
        assert _signup(client, f"spoof{n}", "198.51.100.1").status_code == 201
    spoofed = client.post(
        f"{API}/auth/signup",
        json={"username": "spoof3", "password": "password-1"},
        headers={"X-Forwarded-For": "192.0.2.99"},
        environ_base={"REMOTE_ADDR": "198.51.100.1"},
    )
    assert_problem(spoofed, 429)


def test_signup_can_be_switched_off(app, client):
    app.config["ORDERBUS"].allow_signup = False
    with nothing_written():
        assert_problem(_signup(client, "nobody", "192.0.2.1"), 403)


def test_the_window_frees_an_address_again():
    now = [1000.0]
    limiter = SignupLimiter(2, 60, clock=lambda: now[0])
    limiter.take("a")
    now[0] += 30
    limiter.take("a")
    with pytest.raises(TooManyAttempts) as refused:
        limiter.take("a")
    assert refused.value.retry_after == 30  # when the first ages out
    now[0] += 30.5
    limiter.take("a")  # the first has aged out


def test_memory_is_bounded_whatever_the_addresses():
    """A flood of distinct addresses keeps at most max_addresses of them, each with at most
    ``limit`` times."""
    limiter = SignupLimiter(3, 3600, max_addresses=100)
    for n in range(5000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    for _ in range(3):
        limiter.take("192.0.2.1")  # a new address: kept, and counted
    with pytest.raises(TooManyAttempts):
        limiter.take("192.0.2.1")
    assert all(len(times) <= 3 for times in limiter._seen.values())
