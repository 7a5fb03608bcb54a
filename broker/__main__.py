"""``python -m broker``: run the embedded MQTT broker until SIGTERM or SIGINT.

Configured only by environment variables (the dependency rule keeps ``order_service``
and its settings out of this package):

- ``ORDERBUS_BROKER_HOST``    bind address (default 127.0.0.1)
- ``ORDERBUS_BROKER_PORT``    MQTT over TCP (default 1883)
- ``ORDERBUS_BROKER_WS_PORT`` MQTT over WebSocket, path /mqtt (default 9001)
- ``ORDERBUS_LOG_LEVEL``      DEBUG, INFO, WARNING or ERROR (default INFO)

Exit status: 0 after a clean shutdown, 2 on bad configuration or a port in use.
Operators get a one-line ``error: ...`` on stderr for those, not a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from broker.server import PORT_ENV, WS_PORT_ENV, BrokerStartError, EmbeddedBroker

logger = logging.getLogger(__name__)

HOST_ENV = "ORDERBUS_BROKER_HOST"
LOG_LEVEL_ENV = "ORDERBUS_LOG_LEVEL"


class ConfigError(Exception):
    """A bad environment value; the message is a one-line explanation."""


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip() or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {raw!r}") from None
    # 0 is allowed: the broker then picks a free port and logs it.
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535, got {port}")
    return port


def _log_level(env: Mapping[str, str]) -> int:
    name = (env.get(LOG_LEVEL_ENV, "").strip() or "INFO").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ConfigError(f"{LOG_LEVEL_ENV} must be DEBUG, INFO, WARNING or ERROR, got {name!r}")
    return level


def main(env: Mapping[str, str] = os.environ) -> int:
    try:
        level = _log_level(env)
        host = env.get(HOST_ENV, "").strip() or "127.0.0.1"
        port = _port(env, PORT_ENV, 1883)
        ws_port = _port(env, WS_PORT_ENV, 9001)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        EmbeddedBroker(host, port, ws_port).run_forever()
    except (ConfigError, BrokerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
