"""The API's HTTP server: granian's WSGI interface in front of ``create_app()``, configured
from the same ORDERBUS_* variables as the rest of the service.

    python -m order_service.api_server

``ORDERBUS_API_WORKERS`` worker processes, each with ``ORDERBUS_API_THREADS`` threads running the
Flask app; the HTTP protocol itself (parsing, keep-alive, writing answers) is granian's
Rust code, outside the GIL. A worker that dies (``kill -9``, a crash) is replaced at once;
``SIGHUP`` replaces the workers one by one, each new one serving before the old one stops
(a graceful reload); ``SIGTERM`` or ``SIGINT`` stops accepting, lets the requests under way
finish (at most :data:`GRACE_SECONDS`) and exits.

The main process imports the app's code before it starts the workers (each builds its own
app with ``create_app()``): a worker is ready within a fraction of a second of its start,
so a replaced worker serves before the old one stops even on a busy machine. A reload
therefore runs the code the main process loaded: new code needs a restart.
"""

from __future__ import annotations

import gc

from flask import Flask
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer as Server

from order_service.api.app import create_app
from order_service.config import Settings, load_settings

#: How long a stopping or replaced worker may finish the requests it has before it is killed.
GRACE_SECONDS = 10
#: The app, built once in each worker process.
TARGET = "order_service.api_server:worker_app"

#: Our log lines: the same shape as the other processes' (time, process, level, message).
LOG_CONFIG = {
    "formatters": {
        "generic": {
            "()": "logging.Formatter",
            "fmt": "%(asctime)s api[%(process)d] %(levelname)s %(message)s",
        },
        "access": {"()": "logging.Formatter", "fmt": "%(message)s"},
    },
}


def worker_app() -> Flask:
    """A worker's app: ``create_app()``, then every object made so far (the app, its routes
    and schemas, the modules) moved out of the garbage collector's reach (``gc.freeze``).

    They live as long as the worker, and a collection that walks them only finds them alive:
    in one process placing 1,500 orders on a quiet machine, the collector paused 19 times
    for more than 0.1 ms (18 of up to 1.2 ms, one of 16 ms) before and twice (up to 1.1 ms)
    after (docs/benchmarks/findings.md), pauses that fall on whichever request is running."""
    app = create_app()
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    return app


def build(settings: Settings) -> Server:
    """The granian server for ``settings`` (not started: :meth:`Server.serve`): worker
    processes, as ``granian --interface wsgi`` runs them on a CPython with the GIL."""
    return Server(
        TARGET,
        factory=True,
        interface=Interfaces.WSGI,
        address=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        blocking_threads=settings.api_threads,
        # HTTP/1.1 only: clients and the reverse proxy speak it; no h2c upgrade to parse.
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            # hyper's header read timeout is also how long a kept-alive connection may stay
            # idle: a client (or nginx's upstream pool) must reuse or close it sooner.
            header_read_timeout=settings.api_keepalive_seconds * 1000,
            keep_alive=True,
        ),
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=LOG_CONFIG,
        # granian's own access log sees the proxy's address, not the client's: ours is
        # api/access_log.py, installed by create_app() when ORDERBUS_API_ACCESS_LOG is on.
        log_access=False,
        respawn_failed_workers=True,
        # After SIGHUP, how long a new worker runs beside the old one before that one stops
        # (granian's default): time for it to build its app and listen.
        respawn_interval=3.5,
        workers_kill_timeout=GRACE_SECONDS,
        process_name=None,
    )


def main() -> None:
    build(load_settings()).serve()  # the app's code is loaded (imported above) before any worker starts


if __name__ == "__main__":
    main()
