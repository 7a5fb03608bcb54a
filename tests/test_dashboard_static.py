"""The dashboard's files at /admin/: served with strict security headers, nothing else leaks."""

from __future__ import annotations

import pytest

from order_service.api import dashboard


def test_index_and_modules_carry_a_csp_without_inline(client) -> None:
    """The page and its modules come with a CSP that forbids inline script and style."""
    for path in ("/admin/", "/admin/js/main.js", "/admin/js/contract.js", "/admin/app.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    for module in ("main.js", "contract.js"):
        assert client.get(f"/admin/js/{module}").mimetype == "text/javascript"
    assert client.get("/admin").status_code == 308


@pytest.mark.parametrize(
    "path",
    [
        "/admin/package.json",
        "/admin/package-lock.json",
        "/admin/node_modules/mqtt/package.json",
        "/admin/node_modules/mqtt/dist/mqtt.esm.js",
        "/admin/vendor/ws.js",
        "/admin/../pyproject.toml",
        "/admin/.gitignore",
    ],
)
def test_only_the_pages_own_files_are_served(client, path: str) -> None:
    """node_modules, package files and hidden files stay private; vendor serves only mqtt.js."""
    assert client.get(path).status_code == 404


def test_missing_mqtt_js_says_how_to_install_it(client, monkeypatch, tmp_path) -> None:
    """Without `make admin-deps` the vendor file answers 503 naming the command, not a bare 404."""
    monkeypatch.setattr(dashboard, "ADMIN_DIR", tmp_path)
    response = client.get("/admin/vendor/mqtt.esm.js")
    assert response.status_code == 503
    assert "make admin-deps" in response.get_data(as_text=True)


def test_the_shop_is_served_like_the_dashboard(client) -> None:
    """/shop/ and its modules carry the same CSP; it imports the dashboard's mqtt.js (no npm
    package of its own); node_modules, hidden files and other folders stay private."""
    for path in ("/shop/", "/shop/js/main.js", "/shop/js/live.js", "/shop/app.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
    assert client.get("/shop/js/main.js").mimetype == "text/javascript"
    assert client.get("/shop").status_code == 308
    for path in ("/shop/node_modules/mqtt/package.json", "/shop/../pyproject.toml", "/shop/vendor/ws.js"):
        assert client.get(path).status_code == 404, path
    assert 'from "/admin/vendor/mqtt.esm.js"' in client.get("/shop/js/live.js").get_data(as_text=True)
