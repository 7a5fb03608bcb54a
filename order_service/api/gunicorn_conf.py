"""gunicorn settings for the API, derived from the same ORDERBUS_* variables.

gunicorn --config python:order_service.gunicorn_conf "order_service.api.app:create_app()"
"""

import os

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
# No MQTT client lives in the workers: they only write the database and wake the relay.
# gunicorn's control socket defaults to one path per user; keep it per deployment.
control_socket = str((_settings.data_dir / "gunicorn.ctl").resolve())
# gunicorn touches a heartbeat file on every loop of a worker; on a disk-backed /tmp that can
# block the worker (gunicorn's own advice): keep it in memory.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
