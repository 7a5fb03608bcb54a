"""gunicorn settings for the API, derived from the same ORDERBUS_* variables.

gunicorn --config python:order_service.gunicorn_conf "order_service.api.app:create_app()"
"""

import os
from typing import Any

from order_service.config import load_settings

_settings = load_settings()

_host = f"[{_settings.api_host}]" if ":" in _settings.api_host else _settings.api_host
bind = f"{_host}:{_settings.api_port}"
workers = _settings.api_workers
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
loglevel = _settings.log_level.lower()
# X-Forwarded-Proto (https) counts from the trusted reverse proxies only; none by default
# (gunicorn's own default trusts 127.0.0.1). The client address: TrustedProxies in app.py.
forwarded_allow_ips = _settings.trusted_proxies
# No MQTT client lives in the workers: they only write the database and wake the relay.
# gunicorn's control socket defaults to one path per user; keep it per deployment.
control_socket = str((_settings.data_dir / "gunicorn.ctl").resolve())


def pre_request(worker: Any, req: Any) -> None:
    """``Connection: close`` for a request whose body the API will not read to its end: one
    declared over ``Settings.drain_body_bytes`` (1 MiB; answered 413 unread) or of unknown
    length (chunked). Left on the connection, gunicorn would drain at most 64 KiB of it
    after an answer that said keep-alive, then close, and the client's next request on the
    connection would fail. A smaller body the app reads to its end (``api/app.py``)."""
    worker.log.debug("%s %s", req.method, req.path)
    declared = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), None)
    chunked = any(name == "TRANSFER-ENCODING" for name, _ in req.headers)
    if chunked or (declared is not None and int(declared) > _settings.drain_body_bytes):
        req.force_close()


# gunicorn touches a heartbeat file on every loop of a worker; on a disk-backed /tmp that can
# block the worker (gunicorn's own advice): keep it in memory.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
