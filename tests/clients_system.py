"""The ``live_system`` fixture: the real system (harness/system.py) for the client tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.system import make_system


@pytest.fixture
def live_system(tmp_path: Path, request: pytest.FixtureRequest):
    """Broker, relay and API as separate processes (heartbeat 2 s); stopped afterwards.

    The broker is the embedded one; a test parametrised with
    ``@pytest.mark.parametrize("live_system", ["amqtt", "mosquitto"], indirect=True)`` runs on both.
    """
    sys_ = make_system(
        tmp_path,
        getattr(request, "param", "amqtt"),
        ORDERBUS_PRESENCE_HEARTBEAT_SECONDS="2",
        ORDERBUS_PRESENCE_TIMEOUT_SECONDS="10",
    )
    try:
        yield sys_
    finally:
        sys_.close()
