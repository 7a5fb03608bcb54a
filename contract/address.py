"""The broker's address: ``ORDERBUS_MQTT_URL`` and the like, parsed once.

- :class:`BrokerAddress`: ``mqtt://user:secret@host:port`` parsed once; ``mqtts://``
  (MQTT over TLS), ``ws://`` and ``wss://`` (MQTT over WebSocket, plain or TLS) too.
  TLS checks the broker's certificate and host name against the system's CAs, or
  against the CA file given (``ORDERBUS_MQTT_CA_FILE``). :meth:`BrokerAddress.client`
  makes a paho client set up for it: every orderbus process and client connects so.
  :func:`url_host` turns a bind address into a host to connect to. A cluster's nodes are
  one address: URLs separated by commas (``mqtt://a:1883,mqtt://b:1883``); a connection
  goes to :meth:`BrokerAddress.endpoint`, and after a failed one the caller moves on to
  the next node (:meth:`BrokerAddress.next_endpoint`).
- :func:`masked_url`: a URL as it may be logged or printed, its password replaced.

``contract.link`` offers them too, beside the connections.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import paho.mqtt.client as mqtt

# What stands for a password in a URL that is logged or printed.
MASK = "***"
# Query parameters that carry a secret (libpq accepts ``?password=``).
SECRET_PARAMS = {"password", "pass", "secret", "token", "sslpassword"}


def masked_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***``: the form every log line and every
    message uses for a database or broker URL (``postgresql://orderbus:***@db:5432/orderbus``)."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:  # not a URL we can take apart: show none of it
        return MASK
    netloc = parts.netloc
    if not has_password and not any(k.lower() in SECRET_PARAMS for k, _ in parse_qsl(parts.query)):
        return url
    if has_password:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in SECRET_PARAMS for key, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


# URL scheme -> (paho transport, TLS, default port). wss:// defaults to 443: it is usually
# served by the reverse proxy in front of the broker's WebSocket listener.
SCHEMES: dict[str, tuple[Literal["tcp", "websockets"], bool, int]] = {
    "mqtt": ("tcp", False, 1883),
    "tcp": ("tcp", False, 1883),
    "mqtts": ("tcp", True, 8883),
    "ssl": ("tcp", True, 8883),
    "ws": ("websockets", False, 9001),
    "wss": ("websockets", True, 443),
}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    transport: Literal["tcp", "websockets"]
    path: str
    username: str | None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None  # TLS: trust this CA file instead of the system's
    # A cluster: the other nodes' (host, port), the same scheme and login; tried in turn.
    others: tuple[tuple[str, int], ...] = ()
    _turn: list[int] = field(default_factory=lambda: [0], repr=False, compare=False)

    @classmethod
    def parse(cls, url: str, ca_file: str | os.PathLike[str] | None = None) -> BrokerAddress:
        """``mqtt://``, ``mqtts://``, ``ws://`` or ``wss://`` URL; ValueError for anything else.
        Several URLs separated by commas are a cluster's nodes, all of one scheme."""
        first, *rest = [part.strip() for part in url.split(",")] or [""]
        address = cls._parse_one(first, ca_file)
        others = [cls._parse_one(other, ca_file) for other in rest]
        if any(
            (o.transport, o.tls, o.path) != (address.transport, address.tls, address.path) for o in others
        ):
            raise ValueError(f"the nodes in {masked_url(url)!r} differ in scheme or path")
        return replace(address, others=tuple((o.host, o.port) for o in others))

    @classmethod
    def _parse_one(cls, url: str, ca_file: str | os.PathLike[str] | None) -> BrokerAddress:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(
                f"unsupported scheme {scheme!r} in {masked_url(url)!r}"
                " (use mqtt://, mqtts://, ws:// or wss://)"
            )
        transport, tls, default_port = SCHEMES[scheme]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or default_port,
            transport=transport,
            path=parts.path or "/mqtt",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=str(ca_file) if ca_file and tls else None,
        )

    def endpoint(self) -> tuple[str, int]:
        """The (host, port) to connect to now: the first node until a connection fails."""
        nodes = ((self.host, self.port), *self.others)
        return nodes[self._turn[0] % len(nodes)]

    def next_endpoint(self) -> None:
        """After a failed connection or a lost one: the next node (a single broker: itself)."""
        self._turn[0] += 1

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS only: a context that verifies the broker's certificate chain and host name."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)  # the system's CAs without a file

    def client(self, client_id: str, *, clean_session: bool = True, **options: Any) -> mqtt.Client:
        """A paho client for this address: transport, WebSocket path, TLS and login set."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            transport=self.transport,
            **options,
        )
        if self.transport == "websockets":
            client.ws_set_options(path=self.path)
        if self.tls:
            client.tls_set_context(self.ssl_context())
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        return client

    def __str__(self) -> str:
        """The address without its login, for logs and messages."""
        scheme = {("tcp", False): "mqtt", ("tcp", True): "mqtts"}.get((self.transport, self.tls))
        if scheme is None:
            scheme = "wss" if self.tls else "ws"
        suffix = self.path if self.transport == "websockets" else ""
        host, port = self.endpoint()
        more = (
            f" (node {self._turn[0] % (len(self.others) + 1) + 1} of {len(self.others) + 1})"
            if self.others
            else ""
        )
        return f"{scheme}://{host}:{port}{suffix}{more}"


def url_host(host: str) -> str:
    """A bind address as a host to connect to, in a URL: a wildcard as loopback, an IPv6
    literal in brackets. How every process derives its default URLs from ``ORDERBUS_*_HOST``."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
