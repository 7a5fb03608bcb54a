"""Each test on both brokers, the embedded one and Mosquitto: a test module assigns these two
fixtures to names of its own (``broker_kind = both_brokers.broker_kind``, and the same for
``settings_overrides``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings_overrides(settings_overrides: dict, broker_kind: str, data_dir: Path) -> dict:
    if broker_kind == "mosquitto":  # the service signals Mosquitto to re-read the files
        return {**settings_overrides, "mosquitto_pid_file": data_dir / "mosquitto" / "mosquitto.pid"}
    return settings_overrides
