"""Webhook URLs: what an admin may register, and where the worker may connect.

A URL with a control character was accepted (201); any address was, the service's own
machine and its private network included (server-side request forgery). Now a URL must
be http(s) with a host, with no control character or white space anywhere; an address
that is private, loopback, link-local, multicast or reserved is refused, as a literal
IP at registration and, for a host name, at delivery: the worker checks the address the
name resolves to when it connects, and connects to that address only (a name that
resolves elsewhere the next time, DNS rebinding, gains nothing). ORDERBUS_WEBHOOKS_ALLOW_PRIVATE
lets an admin allow them (the other webhook tests deliver to 127.0.0.1 with it on). The
check at delivery is tests/test_webhooks.py's test_a_name_resolving_to_a_private_address_*.
"""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem
from tests.test_webhooks import register

pytestmark = pytest.mark.security

PRIVATE = [
    "http://127.0.0.1:8080/hook",  # loopback
    "http://[::1]/hook",
    "http://10.1.2.3/hook",  # private
    "http://192.168.0.10/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data/",  # link-local: the cloud's metadata service
    "http://[fe80::1]/hook",
    "http://224.0.0.1/hook",  # multicast
    "http://240.0.0.1/hook",  # reserved
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",  # shared address space (carrier NAT)
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://localhost:5000/hook",
    "http://api.localhost/hook",
]
MALFORMED = [
    "http://example.test/a\x01b",  # a control character (was 201)
    "http://example.test/a\x7fb",
    "http://example.test/a b",  # white space
    "http://example.test/a\tb",
    "http://example.test/\u2028",  # a line separator
    "http://exam\u200bple.test/",  # a zero-width space (a format character)
    " http://example.test/",
    "http://example.test/\n",
    "http:///hook",  # no host
    "http://:80/hook",
    "http://example.test:99999/hook",  # no such port
    "ftp://example.test/x",
    "javascript:alert(1)",
]


def refused(client, admin, url: str) -> dict:
    response = client.post("/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=admin.headers)
    return assert_problem(response, 422, "url")


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused_naming_url(client, admin, url):
    refused(client, admin, url)


@pytest.mark.parametrize("url", PRIVATE)
def test_private_addresses_are_refused_by_default(client, admin, url):
    problem = refused(client, admin, url)
    assert "ORDERBUS_WEBHOOKS_ALLOW_PRIVATE" in problem["detail"], problem


def test_public_urls_are_accepted(client, admin):
    """Control: a public address or a host name registers (a name is checked at delivery)."""
    for url in ("https://example.test/hook?x=1", "http://93.184.216.34:8080/hook", "https://[2606:4700::1]/"):
        register(client, admin, url)


class TestAllowed:
    """With ORDERBUS_WEBHOOKS_ALLOW_PRIVATE on, a private address registers; malformed still not."""

    @pytest.fixture
    def settings_overrides(self, settings_overrides: dict) -> dict:
        return {**settings_overrides, "webhooks_allow_private": True}

    def test_private_addresses_register(self, client, admin):
        for url in PRIVATE:
            register(client, admin, url)
        refused(client, admin, MALFORMED[0])
