"""The NATS cluster's auth callout: ``python -m order_service cluster-callout --node i``.

nats-server has no ``use_username_as_clientid``, so on the cluster a login could send
another device's client id and take over its session. With ``ORDERBUS_CLUSTER_AUTH_CALLOUT``
(the default) every node hands each CONNECT to this service (docs/scaling.md):

- the node sends ``$SYS.REQ.USER.AUTH`` an authorization request, a JWT signed by the node,
  whose ``nats.connect_opts`` hold the username and password and whose
  ``nats.client_info.mqtt_id`` the MQTT client id;
- one callout runs per node, connected to that node as ``orderbus-callout`` (account AUTH)
  and subscribed in one queue group: a request goes to one of them, on any node, so losing
  a node leaves the others answering;
- it checks the password against ``nats/logins.json`` (the users file's entries, the same
  bcrypt hashes: accounts/nats_logins.py, re-read when the file changes), refuses a client
  id other than the username, and answers with an authorization-response JWT carrying a
  user JWT in the account ORDERBUS with the login's permissions (those the users file gives
  it), both signed with the account key of ``nats/callout-issuer.nk``;
- a refusal is an answer with ``error``: the node sends CONNACK 5 (not authorized).

No maintained Python library writes NATS's authorization claims (nats-jwt on PyPI, not the
NATS project's, has user and account claims only), so :func:`encode` writes them as the Go
library ``nats-io/jwt/v2`` does: a JWT with ``alg: ed25519-nkey`` signed with nkeys.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import bcrypt

from order_service.accounts import nats_logins
from order_service.config import Settings
from order_service.ops import cluster

logger = logging.getLogger(__name__)

SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE = "orderbus-callout"
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode(claims: dict[str, Any], signer: Any) -> str:
    """A NATS JWT of ``claims``, issued and signed by ``signer`` (an nkeys key pair)."""
    body = {**claims, "iat": int(time.time()), "iss": signer.public_key.decode()}
    body.pop("jti", None)
    digest = hashlib.new("sha512_256", _json(body)).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    unsigned = f"{_b64(_json(_HEADER))}.{_b64(_json(body))}"
    return f"{unsigned}.{_b64(signer.sign(unsigned.encode()))}"


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims (not verified: only the nodes may publish the callout's subject)."""
    return json.loads(_unb64(token.split(".")[1]))


class Logins:
    """``nats/logins.json``, read again whenever the file is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, dict[str, Any]] = {}

    def get(self, username: str) -> dict[str, Any] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        if (stat.st_ino, stat.st_mtime_ns) != self._stamp:
            users = json.loads(self.path.read_text())["users"]
            self._users = {user["user"]: user for user in users}
            self._stamp = (stat.st_ino, stat.st_mtime_ns)
        return self._users.get(username)


def decide(request: dict[str, Any], logins: Logins) -> tuple[dict[str, Any] | None, str]:
    """(the login's entry, "") when the request may connect, else (None, why)."""
    options, client = request.get("connect_opts") or {}, request.get("client_info") or {}
    username, password = options.get("user") or "", options.get("pass") or ""
    entry = logins.get(username)
    if entry is None or not password or not bcrypt.checkpw(password.encode(), entry["password"].encode()):
        return None, "bad username or password"
    client_id = client.get("mqtt_id") or ""
    if client_id != username:
        return None, "the MQTT client id must be the username"
    return entry, ""


def answer(token: str, logins: Logins, signer: Any) -> tuple[str, str]:
    """(the authorization response to a request JWT, why it refuses or "")."""
    request = claims_of(token)["nats"]
    entry, refused = decide(request, logins)
    response: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if entry is None:
        response["error"] = refused
    else:
        permissions = entry["permissions"]
        user = {
            "sub": request["user_nkey"],
            "name": entry["user"],
            "aud": nats_logins.APP_ACCOUNT,  # the account the login is placed in (config mode)
            "nats": {
                "pub": permissions["publish"],
                "sub": permissions["subscribe"],
                "subs": -1,
                "data": -1,
                "payload": -1,
                "allowed_connection_types": entry["allowed_connection_types"],
                "type": "user",
                "version": 2,
            },
        }
        response["jwt"] = encode(user, signer)
    claims = {"sub": request["user_nkey"], "aud": request["server_id"]["id"], "nats": response}
    return encode(claims, signer), refused


async def serve(settings: Settings, index: int, stop: asyncio.Event) -> None:
    """Answer the auth requests, connected to node ``index`` (again after each loss), until ``stop``."""
    import nats  # the cluster extra's
    import nkeys

    node = cluster.nodes(settings)[index - 1]
    signer = nkeys.from_seed(bytearray(nats_logins.issuer_seed(settings)))
    secret = nats_logins.ensure_secret(settings, "callout")
    logins = Logins(nats_logins.logins_path(settings))

    async def handle(msg: Any) -> None:
        try:
            token, refused = answer(msg.data.decode(), logins, signer)
        except Exception:  # the node then refuses the CONNECT at its auth timeout
            logger.exception("callout: an authorization request could not be answered")
            return
        if refused:
            info = claims_of(msg.data.decode())["nats"]
            user = (info.get("connect_opts") or {}).get("user")
            client_id = (info.get("client_info") or {}).get("mqtt_id")
            logger.info("callout %d: refused %r (client id %r): %s", index, user, client_id, refused)
        await msg.respond(token.encode())

    async def noted(exc: Exception) -> None:
        logger.info("callout %d: %s", index, exc)

    url = f"nats://{node.host}:{node.client_port}"
    while not stop.is_set():
        try:
            nc = await nats.connect(
                url,
                name=f"{nats_logins.CALLOUT_USER}-{index}",
                user=nats_logins.CALLOUT_USER,
                password=secret,
                connect_timeout=2,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,
                error_cb=noted,
            )
            break
        except Exception as exc:  # the node is not up yet: try again
            logger.debug("callout %d: %s not reachable (%s)", index, url, exc)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    else:
        return
    await nc.subscribe(SUBJECT, queue=QUEUE, cb=handle)
    await nc.flush()
    logger.info("callout %d: answering %s on %s", index, SUBJECT, url)
    await stop.wait()
    await nc.close()


def run(settings: Settings, index: int) -> None:
    """The callout of node ``index`` until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if settings.cluster_auth_callout:
            await serve(settings, index, stop)
        else:
            logger.info("the auth callout is off (ORDERBUS_CLUSTER_AUTH_CALLOUT=false): nothing to answer")
            await stop.wait()

    asyncio.run(main())
