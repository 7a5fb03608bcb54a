"""The courier app's files at /courier/: the dashboard's strict headers, installable, nothing else leaks."""

from __future__ import annotations

import pytest

from order_service.api import courier


def test_index_manifest_and_service_worker_with_their_types_and_a_strict_csp(client) -> None:
    """The page, its manifest and its service worker come with a CSP that forbids inline script."""
    types = {
        "/courier/": "text/html",
        "/courier/manifest.webmanifest": "application/manifest+json",
        "/courier/sw.js": "text/javascript",
        "/courier/js/main.js": "text/javascript",
        "/courier/app.css": "text/css",
        "/courier/icon.svg": "image/svg+xml",
    }
    for path, mimetype in types.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == mimetype, path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/courier").status_code == 308


@pytest.mark.parametrize(
    "path",
    ["/courier/package.json", "/courier/package-lock.json", "/courier/node_modules/mqtt/package.json"],
)
def test_package_files_and_node_modules_are_not_served(client, path) -> None:
    assert client.get(path).status_code == 404


def test_missing_mqtt_js_says_how_to_install_it(client, monkeypatch, tmp_path) -> None:
    """Without `make courier-deps` the vendor file answers 503 naming the command."""
    monkeypatch.setattr(courier, "COURIER_DIR", tmp_path)
    response = client.get("/courier/vendor/mqtt.esm.js")
    assert response.status_code == 503
    assert "make courier-deps" in response.get_data(as_text=True)
