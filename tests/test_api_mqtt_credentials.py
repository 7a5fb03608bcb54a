"""Broker logins over REST, and the two files the service writes for the brokers."""

from __future__ import annotations

from datetime import timedelta

from broker import credfiles
from broker.credfiles import Acl
from order_service.accounts import broker_logins
from order_service.config import load_settings
from order_service.store.db import db
from order_service.store.models import MqttCredential, Token, utcnow
from tests.helpers import assert_problem

API = "/api/v1"


def files(settings_overrides: dict) -> tuple[dict[str, str], Acl]:
    settings = load_settings(settings_overrides)
    passwd = credfiles.parse_password_file(settings.mqtt_password_path.read_text())
    return passwd, Acl.parse(settings.mqtt_acl_path.read_text())


def test_creating_an_agent_issues_its_device_login_once(client, admin, make_agent, settings_overrides):
    agent = make_agent()
    issued = agent.mqtt
    assert issued["username"] == issued["client_id"] == agent.agent_id
    assert issued["url"].startswith("mqtt://") and issued["issued_at"]
    assert issued["ws_url"].startswith("ws://")  # the courier app connects over WebSocket
    passwd, acl = files(settings_overrides)
    assert credfiles.verify_password(issued["password"], passwd[agent.agent_id])
    assert acl.allowed(agent.agent_id, agent.agent_id, "read", f"agents/{agent.agent_id}/assigned")
    assert acl.allowed(agent.agent_id, agent.agent_id, "write", f"agents/{agent.agent_id}/presence")
    assert not acl.allowed(agent.agent_id, agent.agent_id, "read", "orders/new")
    shown = client.get(f"{API}/agents/{agent.agent_id}", headers=admin.headers).json["mqtt"]
    assert "password" not in shown or shown["password"] is None
    assert shown["issued_at"] == issued["issued_at"]
    listed = client.get(f"{API}/agents", headers=admin.headers).json["agents"]
    assert [a["mqtt"]["username"] for a in listed] == [agent.agent_id]
    with db.connection_context():  # only a hash is stored
        assert issued["password"] not in MqttCredential.get_by_id(agent.agent_id).secret_hash


def test_rotation_by_admin_or_the_agent_itself_only(client, admin, make_agent, settings_overrides):
    one, two = make_agent(), make_agent()
    url = f"{API}/agents/{one.agent_id}/mqtt-credentials"
    by_admin = client.post(url, headers=admin.headers)
    assert by_admin.status_code == 201
    by_self = client.post(url, headers=one.headers)
    assert by_self.status_code == 201
    passwd, _ = files(settings_overrides)
    assert credfiles.verify_password(by_self.json["mqtt"]["password"], passwd[one.agent_id])
    assert not credfiles.verify_password(by_admin.json["mqtt"]["password"], passwd[one.agent_id])
    assert not credfiles.verify_password(one.mqtt["password"], passwd[one.agent_id])
    assert_problem(client.post(url, headers=two.headers), 403)
    assert_problem(client.post(f"{API}/agents/agt_nobody/mqtt-credentials", headers=admin.headers), 404)


def test_deactivation_removes_the_login_and_reactivation_needs_a_new_one(
    client, admin, make_agent, settings_overrides
):
    agent = make_agent()
    url = f"{API}/agents/{agent.agent_id}"
    assert client.patch(url, json={"active": False}, headers=admin.headers).status_code == 200
    passwd, acl = files(settings_overrides)
    assert agent.agent_id not in passwd
    assert not acl.allowed(agent.agent_id, agent.agent_id, "read", f"agents/{agent.agent_id}/assigned")
    assert_problem(client.post(f"{url}/mqtt-credentials", headers=admin.headers), 409)
    assert client.patch(url, json={"active": True}, headers=admin.headers).json["mqtt"]["issued_at"] is None
    assert agent.agent_id not in files(settings_overrides)[0]  # the old secret stays dead
    fresh = client.post(f"{url}/mqtt-credentials", headers=admin.headers).json["mqtt"]["password"]
    assert credfiles.verify_password(fresh, files(settings_overrides)[0][agent.agent_id])


def test_admin_login_brings_a_read_only_dashboard_login(client, admin, make_customer, settings_overrides):
    dash = admin.mqtt
    assert dash["url"].startswith("ws://") and dash["url"].endswith("/mqtt")
    passwd, acl = files(settings_overrides)
    assert credfiles.verify_password(dash["password"], passwd[dash["username"]])
    for topic in ("orders/new", "orders/o1/status", "agents/a1/assigned", "agents/a1/presence"):
        assert acl.allowed(dash["username"], "tab", "read", topic)
        assert not acl.allowed(dash["username"], "tab", "write", topic)
    assert not acl.allowed(dash["username"], "tab", "read", "customers/u1/orders")
    customer = make_customer()
    again = client.post(f"{API}/auth/token", json={"username": customer.username, "password": "password-1"})
    assert again.json["mqtt"]["username"].startswith("cust_")  # a customer's, not a dashboard's
    assert client.delete(f"{API}/auth/token", headers=admin.headers).status_code == 204
    assert dash["username"] not in files(settings_overrides)[0]


def test_expired_dashboard_logins_leave_the_files(client, admin, settings_overrides):
    settings = load_settings(settings_overrides)
    with db.connection_context():
        past = utcnow() - timedelta(seconds=1)  # both carry the token's expiry time
        Token.update(expires_at=past).execute()
        MqttCredential.update(expires_at=past).where(MqttCredential.kind == "dashboard").execute()
        assert broker_logins.sync_files(settings)  # what the relay does every few seconds
    assert admin.mqtt["username"] not in files(settings_overrides)[0]


def test_service_login_is_issued_once_and_kept(app, settings_overrides):
    settings = load_settings(settings_overrides)
    with db.connection_context():
        assert broker_logins.ensure_service(settings)
        username, secret = broker_logins.service_login(settings)
        assert not broker_logins.ensure_service(settings)  # present and matching: unchanged
        assert broker_logins.service_login(settings) == (username, secret)
        broker_logins.sync_files(settings)
    passwd, acl = files(settings_overrides)
    assert credfiles.verify_password(secret, passwd[username])
    assert acl.allowed(username, "relay", "write", "orders/o1/status")
    assert acl.allowed(username, "relay", "write", "agents/a1/assigned")
    assert acl.allowed(username, "relay", "read", "agents/a1/presence")
    assert not acl.allowed(username, "relay", "write", "agents/a1/presence")
    assert oct(settings.mqtt_password_path.stat().st_mode & 0o777) == "0o640"
    assert oct(broker_logins.service_secret_path(settings).stat().st_mode & 0o777) == "0o600"


def test_each_bridge_has_its_own_login_issued_once_and_reading_only(app, settings_overrides):
    """The Socket.IO bridge and the webhook worker (bootstrap) read orders/# and agents/# and
    write nothing; one login each, since the client id is the username on both brokers."""
    settings = load_settings(settings_overrides)
    with db.connection_context():
        assert broker_logins.ensure_bridges(settings) == ["orderbus-socketio", "orderbus-webhooks"]
        logins = {p: broker_logins.bridge_login(settings, p) for p in broker_logins.BRIDGES}
        assert broker_logins.ensure_bridges(settings) == []  # present and matching: unchanged
        assert {p: broker_logins.bridge_login(settings, p) for p in broker_logins.BRIDGES} == logins
        broker_logins.sync_files(settings)
    passwd, acl = files(settings_overrides)
    assert [u for u, _ in logins.values()] == ["orderbus-socketio", "orderbus-webhooks"]
    for process, (username, secret) in logins.items():
        assert credfiles.verify_password(secret, passwd[username])
        assert acl.allowed(username, username, "read", "orders/o1/status")
        assert acl.allowed(username, username, "read", "agents/a1/assigned")
        for topic in ("orders/o1/status", "orders/new", "agents/a1/presence", "agents/a1/assigned"):
            assert not acl.allowed(username, username, "write", topic)
        assert oct(broker_logins.bridge_secret_path(settings, process).stat().st_mode & 0o777) == "0o600"


def test_every_dashboard_page_gets_its_own_login(client, admin, make_agent, settings_overrides):
    """POST /auth/mqtt-credentials: another read-only login for the same token (the broker uses a
    login's username as its client id, so two pages sharing one would take each other's place)."""
    url = f"{API}/auth/mqtt-credentials"
    page = client.post(url, headers=admin.headers)
    assert page.status_code == 201, page.json
    login = page.json
    assert login["username"] == login["client_id"] != admin.mqtt["username"]
    assert login["url"] == admin.mqtt["url"] and login["expires_at"] == admin.mqtt["expires_at"]
    passwd, acl = files(settings_overrides)
    assert credfiles.verify_password(login["password"], passwd[login["username"]])
    assert admin.mqtt["username"] in passwd  # the login page's own still works
    assert acl.allowed(login["username"], login["username"], "read", "orders/o1/status")
    assert not acl.allowed(login["username"], login["username"], "write", "orders/o1/status")
    # A token keeps its 16 newest: reloading a page cannot grow the broker's files.
    made = [client.post(url, headers=admin.headers).json["username"] for _ in range(20)]
    passwd, _ = files(settings_overrides)
    pages = {u for u in passwd if u.startswith("dash_")}
    assert pages == set(made[-broker_logins.DASHBOARD_LOGINS_PER_TOKEN :])
    # Only admins (and customers: their own kind); and logging out ends them all.
    assert_problem(client.post(url, headers=make_agent().headers), 403)
    assert_problem(client.post(url), 401)
    assert client.delete(f"{API}/auth/token", headers=admin.headers).status_code == 204
    assert not {u for u in files(settings_overrides)[0] if u.startswith("dash_")}


def test_a_customer_login_reads_its_own_feed_and_the_catalog_only(client, make_customer, settings_overrides):
    """POST /auth/token and POST /auth/mqtt-credentials give a customer a read-only login for
    customers/<its id>/orders and catalog: nothing else to read, nothing to write."""
    one, two = make_customer(), make_customer()
    assert one.mqtt is not None and one.mqtt["username"].startswith("cust_")
    url = f"{API}/auth/mqtt-credentials"
    page = client.post(url, headers=one.headers)
    assert page.status_code == 201, page.json
    login = page.json
    assert login["username"] == login["client_id"] != one.mqtt["username"]
    assert login["url"].startswith("ws://") and login["tcp_url"].startswith("mqtt://")
    assert login["expires_at"] == one.mqtt["expires_at"]
    assert login["topics"] == {"orders": f"customers/{one.user_id}/orders", "catalog": "catalog"}
    passwd, acl = files(settings_overrides)
    assert credfiles.verify_password(login["password"], passwd[login["username"]])
    me = login["username"]
    assert acl.allowed(me, me, "read", f"customers/{one.user_id}/orders")
    assert acl.allowed(me, me, "read", "catalog")
    for topic in (
        f"customers/{two.user_id}/orders",
        "orders/new",
        "orders/o1/status",
        "agents/a1/assigned",
        "agents/a1/presence",
        "orderbus/relay/epoch",
    ):
        assert not acl.allowed(me, me, "read", topic), topic
    for topic in (f"customers/{one.user_id}/orders", "catalog", "orders/new", "agents/a1/presence"):
        assert not acl.allowed(me, me, "write", topic), topic
    # A token keeps its 16 newest customer logins too.
    made = [client.post(url, headers=one.headers).json["username"] for _ in range(20)]
    mine = {u for u in files(settings_overrides)[0] if u in {*made, login["username"], one.mqtt["username"]}}
    assert mine == set(made[-broker_logins.DASHBOARD_LOGINS_PER_TOKEN :])
    # Logging out ends them; the other customer's stays.
    assert client.delete(f"{API}/auth/token", headers=one.headers).status_code == 204
    passwd, _ = files(settings_overrides)
    assert not set(made) & set(passwd)
    assert two.mqtt["username"] in passwd
