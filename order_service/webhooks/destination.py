"""Where webhooks may go: http(s) URLs whose address is public, checked where it matters.

A webhook is a request the service makes on an admin's behalf, from inside its network:
pointed at ``127.0.0.1``, a private network or the cloud's metadata service
(``169.254.169.254``), it would reach what no outsider should (server-side request
forgery). So an address that is private, loopback, link-local, multicast, reserved,
unspecified or shared (carrier NAT) is refused, unless ``ORDERBUS_WEBHOOKS_ALLOW_PRIVATE``
allows it:

- at registration (:func:`check_url`), a literal IP and the ``localhost`` names;
- at delivery (:func:`connect`), whatever a host name resolves to. The worker connects
  to the very address it checked, so a name that resolves elsewhere the next time (DNS
  rebinding) gains nothing. TLS still verifies the certificate against the host name.

Deliveries go straight to the endpoint, never through ``HTTP(S)_PROXY``: the check must
see the real destination.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from typing import Any

from order_service.errors import InvalidField

ALLOW_SETTING = "ORDERBUS_WEBHOOKS_ALLOW_PRIVATE"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(OSError):
    """The endpoint's host is, or resolves to, an address webhooks may not reach."""


def refusal(address: Address) -> str | None:
    """Why webhooks may not reach ``address`` (None: they may)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return refusal(mapped)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a private address"
    return None


def check_url(host: str, allow_private: bool) -> None:
    """InvalidField("url") for a host that is a refused literal address or a localhost name."""
    if allow_private:
        return
    name = host.rstrip(".").lower()
    why: str | None
    if name == "localhost" or name.endswith(".localhost"):
        why = "a loopback name"
    else:
        try:
            why = refusal(ipaddress.ip_address(host))
        except ValueError:
            return  # a host name: checked when the worker connects
    if why:
        raise InvalidField(
            "url", f"{host} is {why}; webhooks may not reach it unless {ALLOW_SETTING} is true"
        )


def connect(
    address: tuple[str, int], timeout: float | None, source_address: object = None, *, allow_private: bool
) -> socket.socket:
    """A connected socket to the first allowed address ``address``'s host resolves to;
    RefusedAddress when every one is refused."""
    host, port = address
    refused: RefusedAddress | None = None
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = None if allow_private else refusal(ip)
        if why:
            refused = RefusedAddress(f"{host} resolves to {ip}, {why}; not connected ({ALLOW_SETTING})")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or refused or OSError(f"{host}: no address")


def opener(allow_private: bool) -> urllib.request.OpenerDirector:
    """A urllib opener that connects through :func:`connect`, follows no redirect (a
    redirect is a failed attempt) and uses no proxy."""

    def vetted(connection: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        class Vetted(connection):  # type: ignore[valid-type, misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._create_connection = lambda a, t, s=None: connect(a, t, s, allow_private=allow_private)

        return Vetted

    class Http(urllib.request.HTTPHandler):
        def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
            return super().do_open(vetted(http_class), req, **kwargs)

    class Https(urllib.request.HTTPSHandler):
        def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
            return super().do_open(vetted(http_class), req, **kwargs)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), Http, Https, NoRedirect)
