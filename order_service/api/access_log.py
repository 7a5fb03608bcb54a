"""The API's access log (ORDERBUS_API_ACCESS_LOG): one line per request on the process's
output, in the shape the API always had::

    127.0.0.1 "GET /api/v1/metrics HTTP/1.1" 200 1136 23ms

(client address, request line, status, body bytes, time to the answer). The client is the
one the API believes: behind a trusted proxy, its ``X-Forwarded-For`` (app.TrustedProxies),
which the HTTP server's own log cannot know. Off by default; when off, nothing of this
module runs on a request.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

logger = logging.getLogger("orderbus.api.access")

#: What a path keeps unquoted in the log: a decoded control character or space is quoted,
#: so one request is always one line.
_SAFE = "/:@!$&'()*+,;=-._~"


def enable() -> None:
    """Send the access log's lines to standard output (once per process)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class AccessLog:
    """WSGI middleware: logs each request once the app has answered it."""

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        answer: list[Any] = ["500", ()]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            answer[:] = status, headers
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            status, headers = answer
            size = next((value for name, value in headers if name.lower() == "content-length"), "-")
            query = environ.get("QUERY_STRING")
            target = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe=_SAFE)
            logger.info(
                '%s "%s %s%s %s" %s %s %dms',
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD", "-"),
                target,
                f"?{query}" if query else "",
                environ.get("SERVER_PROTOCOL", "-"),
                status.split(" ", 1)[0],
                size,
                round((time.perf_counter() - started) * 1000),
            )
