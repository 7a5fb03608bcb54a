"""``python -m broker [--conformance [--deny-topic TOPIC]...]``: run the embedded MQTT broker
until SIGTERM or SIGINT.

Configured by environment variables (the dependency rule keeps ``order_service`` and its
settings out of this package):

- ``ORDERBUS_BROKER_HOST``          bind address (default 127.0.0.1)
- ``ORDERBUS_BROKER_PORT``          MQTT over TCP (default 1883)
- ``ORDERBUS_BROKER_WS_PORT``       MQTT over WebSocket, path /mqtt (default 9001)
- ``ORDERBUS_BROKER_PASSWORD_FILE`` Mosquitto password file the service writes
                                    (default <ORDERBUS_DATA_DIR>/mqtt/passwd)
- ``ORDERBUS_BROKER_ACL_FILE``      Mosquitto ACL file the service writes
                                    (default <ORDERBUS_DATA_DIR>/mqtt/acl)
- ``ORDERBUS_DATA_DIR``             where those defaults live (default var)
- ``ORDERBUS_BROKER_CONFORMANCE``   1 for the dev/conformance mode, as ``--conformance``
- ``ORDERBUS_LOG_LEVEL``            DEBUG, INFO, WARNING or ERROR (default INFO)

Both files are re-read when they change, without a restart; while one is missing every
client is refused. The relay's publish channel (``broker/channel.py``) writes its port and
secret to ``publish`` beside the password file. ``--conformance`` instead lets anyone
connect without credentials, with every topic open except each ``--deny-topic`` (for
third-party conformance suites; never in production).

Exit status: 0 after a clean shutdown, 2 on bad configuration or a port in use.
Operators get a one-line ``error: ...`` on stderr for those, not a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from broker.channel import channel_file
from broker.server import PORT_ENV, WS_PORT_ENV, BrokerStartError, EmbeddedBroker

logger = logging.getLogger(__name__)

HOST_ENV = "ORDERBUS_BROKER_HOST"
LOG_LEVEL_ENV = "ORDERBUS_LOG_LEVEL"
PASSWORD_FILE_ENV = "ORDERBUS_BROKER_PASSWORD_FILE"
ACL_FILE_ENV = "ORDERBUS_BROKER_ACL_FILE"
DATA_DIR_ENV = "ORDERBUS_DATA_DIR"
CONFORMANCE_ENV = "ORDERBUS_BROKER_CONFORMANCE"


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


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


def _file(env: Mapping[str, str], name: str, default_name: str) -> Path:
    if raw := env.get(name, "").strip():
        return Path(raw)
    return Path(env.get(DATA_DIR_ENV, "").strip() or "var") / "mqtt" / default_name


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--conformance",
    is_flag=True,
    help=f"Dev/conformance mode: no credentials needed, every topic open (or {CONFORMANCE_ENV}=1).",
)
@click.option(
    "--deny-topic",
    "deny_topics",
    multiple=True,
    metavar="TOPIC",
    help="With --conformance: refuse publishing and subscribing to TOPIC (repeatable).",
)
def _options(conformance: bool, deny_topics: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """Run the embedded MQTT broker until SIGTERM or SIGINT.

    Clients log in with the password file and are authorised by the ACL file (Mosquitto's
    formats), both re-read when they change; while one is missing everyone is refused.

    \b
    Environment:
      ORDERBUS_BROKER_HOST, ORDERBUS_BROKER_PORT, ORDERBUS_BROKER_WS_PORT
      ORDERBUS_BROKER_PASSWORD_FILE  default <ORDERBUS_DATA_DIR or var>/mqtt/passwd
      ORDERBUS_BROKER_ACL_FILE       default <ORDERBUS_DATA_DIR or var>/mqtt/acl
      ORDERBUS_BROKER_CONFORMANCE    1: as --conformance
      ORDERBUS_LOG_LEVEL             DEBUG, INFO, WARNING or ERROR
    """
    return conformance, deny_topics


def _broker(env: Mapping[str, str], conformance: bool, deny_topics: tuple[str, ...]) -> EmbeddedBroker:
    host = env.get(HOST_ENV, "").strip() or "127.0.0.1"
    port = _port(env, PORT_ENV, 1883)
    ws_port = _port(env, WS_PORT_ENV, 9001)
    if conformance or _flag(env, CONFORMANCE_ENV):
        if any(not topic for topic in deny_topics):
            raise ConfigError("--deny-topic needs a topic")
        logger.warning("conformance mode: anyone may connect without credentials; not for production")
        return EmbeddedBroker(host, port, ws_port, anonymous=True, deny_topics=deny_topics)
    if deny_topics:
        raise ConfigError(f"--deny-topic applies only with --conformance (or {CONFORMANCE_ENV}=1)")
    # The plugins log what they load from each file (or that it is missing) once started.
    password_file = _file(env, PASSWORD_FILE_ENV, "passwd")
    acl_file = _file(env, ACL_FILE_ENV, "acl")
    # The relay's publish channel (broker/channel.py): its port and secret beside the password file.
    return EmbeddedBroker(
        host,
        port,
        ws_port,
        password_file=password_file,
        acl_file=acl_file,
        channel_file=channel_file(password_file),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            with _options.make_context("python -m broker", args) as ctx:
                conformance, deny_topics = _options.invoke(ctx)
        except click.exceptions.Exit as exc:  # --help
            return exc.exit_code
        except click.UsageError as exc:
            raise ConfigError(exc.format_message().replace("\n", " ")) from None
        level = _log_level(env)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _broker(env, conformance, deny_topics).run_forever()
    except (ConfigError, BrokerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
