"""Password guessing on POST /auth/token is slowed per client address and username, without
locking the owner out.

The throttle used to count failures per username only: ten bad guesses from anyone made the
right password answer 429 for 15 minutes, the admin's included. Now an address that keeps
failing for a username waits longer and longer between attempts (1 s, 2 s, 4 s... capped),
while the owner, from another address, logs in at once. Past a much higher count of
failures for the username from every address (distributed guessing), each address gets one
free attempt instead of several before the delays: slower, never blocked. The address is
the connection's (REMOTE_ADDR): a client's X-Forwarded-For changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from order_service.store.db import db
from order_service.store.models import LoginFailure
from tests.helpers import assert_problem

pytestmark = pytest.mark.security

URL = "/api/v1/auth/token"
FREE = 3  # failures an address may make for a username before it must wait
OWNER, ATTACKER = "198.51.100.7", "203.0.113.66"


@pytest.fixture
def settings_overrides(settings_overrides: dict) -> dict:
    return {
        **settings_overrides,
        "login_max_failures": FREE,
        "login_window_seconds": 900,
        "login_max_delay_seconds": 60,
        "login_username_failures": 10,
    }


def login(client, username: str, password: str, address: str, **headers: str):
    return client.post(
        URL,
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )


def waited(seconds: int) -> None:
    """As if ``seconds`` had passed: every recorded failure is that much older."""
    with db.connection_context():
        for failure in LoginFailure.select():
            LoginFailure.update(at=failure.at - timedelta(seconds=seconds)).where(
                LoginFailure.id == failure.id
            ).execute()


def test_the_owner_logs_in_from_another_address_during_an_attack(client, admin):
    """An attacker's guesses for the admin (twenty, ten times the old limit) never keep the
    admin out: the right password from the admin's address works at once, every time."""
    answers = [login(client, "admin", f"guess-{n}", ATTACKER).status_code for n in range(20)]
    assert answers[:FREE] == [401] * FREE
    assert set(answers[FREE:]) == {429}  # the attacker waits
    assert login(client, "admin", "admin-password-1", OWNER).status_code == 200
    waited(2)  # the attacker's next guess is allowed, and fails
    assert login(client, "admin", "guess-x", ATTACKER).status_code == 401
    assert login(client, "admin", "admin-password-1", OWNER).status_code == 200


def test_the_attackers_delay_doubles_and_is_capped(client, admin):
    """After FREE failures from one address: 429 with a Retry-After of 1, 2, 4, ... seconds
    for each further failure, up to ORDERBUS_LOGIN_MAX_DELAY_SECONDS; the right password
    from that address is held to the same delay (no oracle), then works and clears it."""
    for n in range(FREE):
        assert_problem(login(client, "admin", f"guess-{n}", ATTACKER), 401)
    delays = []
    for n in range(8):
        throttled = login(client, "admin", f"guess-{FREE + n}", ATTACKER)
        assert_problem(throttled, 429)
        delays.append(int(throttled.headers["Retry-After"]))
        waited(delays[-1])
        assert_problem(login(client, "admin", f"guess-{FREE + n}", ATTACKER), 401)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert_problem(login(client, "admin", "admin-password-1", ATTACKER), 429)
    waited(60)
    assert login(client, "admin", "admin-password-1", ATTACKER).status_code == 200
    assert login(client, "admin", "guess-after", ATTACKER).status_code == 401  # the count starts over


def test_a_forged_x_forwarded_for_does_not_change_the_address(client, admin):
    """Without a trusted proxy the address is the connection's: an attacker who sends a new
    X-Forwarded-For with every guess is still one address."""
    answers = [
        login(client, "admin", f"guess-{n}", ATTACKER, **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code
        for n in range(FREE + 2)
    ]
    assert answers == [401] * FREE + [429, 429]


def test_distributed_guessing_is_slowed_and_the_owner_still_gets_in(client, admin):
    """Past ORDERBUS_LOGIN_USERNAME_FAILURES failures for one username from every address, a
    new address gets one free guess before the delays instead of FREE; an address that has
    not failed, the owner's, is never held back."""
    for n in range(10):  # ten addresses, one failure each: the username's ceiling
        assert_problem(login(client, "admin", "guess", f"192.0.2.{n}"), 401)
    assert_problem(login(client, "admin", "guess", "192.0.2.100"), 401)
    assert_problem(login(client, "admin", "guess", "192.0.2.100"), 429)
    assert login(client, "admin", "admin-password-1", OWNER).status_code == 200
    # Control: below the ceiling an address gets its FREE failures.
    waited(900)  # the window has passed: every failure forgotten
    for _ in range(FREE):
        assert_problem(login(client, "admin", "guess", "192.0.2.100"), 401)
    assert_problem(login(client, "admin", "guess", "192.0.2.100"), 429)


def test_unknown_usernames_are_throttled_alike(client):
    """The same answers for a name that does not exist: the throttle reveals nothing."""
    answers = [login(client, "nobody-here", "x", ATTACKER).status_code for _ in range(FREE + 1)]
    assert answers == [401] * FREE + [429]


class TestBehindATrustedProxy:
    """Behind a reverse proxy listed in ORDERBUS_TRUSTED_PROXIES every connection comes from
    the proxy: the address counted is the one the proxy saw (its X-Forwarded-For)."""

    PROXY = "10.9.8.7"

    @pytest.fixture
    def settings_overrides(self, settings_overrides: dict) -> dict:
        return {**settings_overrides, "trusted_proxies": self.PROXY}

    def test_the_owner_behind_the_same_proxy_logs_in_during_an_attack(self, client, admin):
        via = {"X-Forwarded-For": ATTACKER}
        answers = [
            login(client, "admin", f"guess-{n}", self.PROXY, **via).status_code for n in range(FREE + 1)
        ]
        assert answers == [401] * FREE + [429]
        owner = login(client, "admin", "admin-password-1", self.PROXY, **{"X-Forwarded-For": OWNER})
        assert owner.status_code == 200
