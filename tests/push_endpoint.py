"""A push service of our own, for tests: a threaded HTTP server on an ephemeral port that
takes Web Push requests as a browser vendor's push service does and checks our side of the
protocol. Each request must carry a VAPID ``Authorization: vapid t=<JWT>, k=<key>`` (RFC
8292) whose key is the service's public key and whose JWT is signed ES256 by it, with
``aud`` = this server's origin, ``exp`` in the future (at most 24 h away) and a ``sub``;
a ``TTL`` header; and a body encrypted per RFC 8291 (``Content-Encoding: aes128gcm``),
which the server decrypts with the subscription's private key as the browser would.

Subscriptions are made with :meth:`PushService.subscribe` (a fresh P-256 key pair and auth
secret, as a browser makes them); what a path answers is set per path (default 201).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One subscription's browser side: the keys the push is encrypted to."""

    path: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)


@dataclass
class Push:
    path: str
    claims: dict[str, Any]
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class PushService:
    def __init__(self, vapid_public_key: str) -> None:
        self.vapid_public_key = vapid_public_key
        self.browsers: dict[str, Browser] = {}
        self.answers: dict[str, int | list[int]] = {}
        self.received: queue.Queue[Push] = queue.Queue()
        self.errors: list[str] = []
        self.requests = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                service.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    push = service._check(self.path, dict(self.headers.items()), raw)
                except AssertionError as exc:
                    service.errors.append(f"{self.path}: {exc}")
                    self.send_response(400)
                    self.end_headers()
                    return
                service.received.put(push)
                planned = service.answers.get(self.path, 201)
                if isinstance(planned, list):  # one answer per request, the last one for the rest
                    planned = planned.pop(0) if len(planned) > 1 else planned[0]
                self.send_response(planned)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PushService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def subscribe(self, name: str) -> tuple[Browser, dict]:
        """A new browser subscription at /push/<name>: (its keys, its toJSON())."""
        browser = Browser(f"/push/{name}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
        self.browsers[browser.path] = browser
        info = {
            "endpoint": self.origin + browser.path,
            "expirationTime": None,
            "keys": {"p256dh": browser.p256dh, "auth": b64url(browser.auth)},
        }
        return browser, info

    def wait(self, timeout: float = 20.0) -> Push:
        return self.received.get(timeout=timeout)

    # --- the checks ---------------------------------------------------------------------

    def _check(self, path: str, headers: dict[str, str], raw: bytes) -> Push:
        lower = {k.lower(): v for k, v in headers.items()}
        claims = self._check_vapid(lower.get("authorization", ""))
        assert lower.get("content-encoding") == "aes128gcm", (
            f"Content-Encoding {lower.get('content-encoding')}"
        )
        assert lower.get("ttl", "").isdigit(), "no TTL header"
        browser = self.browsers.get(path)
        assert browser is not None, "no such subscription"
        plain = http_ece.decrypt(
            raw, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
        )
        return Push(path, claims, lower, json.loads(plain))

    def _check_vapid(self, authorization: str) -> dict[str, Any]:
        scheme, _, rest = authorization.partition(" ")
        assert scheme.lower() == "vapid", f"Authorization scheme {scheme!r}"
        params = dict(part.strip().split("=", 1) for part in rest.split(","))
        assert params.get("k") == self.vapid_public_key, "k is not the service's public key"
        token = params["t"]
        head, payload, signature = token.split(".")
        header = json.loads(unb64url(head))
        assert header.get("alg") == "ES256", f"alg {header.get('alg')}"
        raw_signature = unb64url(signature)
        assert len(raw_signature) == 64, "ES256 signature is r||s, 64 bytes"
        der = encode_dss_signature(
            int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big")
        )
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(self.vapid_public_key))
        try:
            key.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise AssertionError("the JWT's signature does not verify") from None
        claims = json.loads(unb64url(payload))
        assert claims.get("aud") == self.origin, f"aud {claims.get('aud')} is not {self.origin}"
        assert time.time() < claims["exp"] <= time.time() + 24 * 3600, f"exp {claims.get('exp')}"
        assert claims.get("sub"), "no sub"
        return claims
