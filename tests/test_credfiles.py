"""The Mosquitto password and ACL formats that both brokers read (broker/credfiles.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from broker import credfiles
from broker.credfiles import Acl, AclSyntaxError

ACL = """
# anonymous clients
topic read public/#

user orderbus-service
topic write orders/#
topic write agents/+/assigned
topic read agents/+/presence

user dash_1
topic read orders/#
topic read agents/#

pattern read agents/%u/#
pattern write agents/%u/presence
pattern deny agents/%u/secret
"""


def test_hash_round_trip_and_wrong_secret() -> None:
    encoded = credfiles.hash_password("s3cret")
    assert encoded.startswith("$7$101$")
    assert credfiles.verify_password("s3cret", encoded)
    assert not credfiles.verify_password("s3cret ", encoded)
    assert not credfiles.verify_password("s3cret", "$7$101$notbase64!$x")
    assert not credfiles.verify_password("s3cret", "plain")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_reads_what_mosquitto_passwd_writes(tmp_path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "pw-1"], check=True)
    entries = credfiles.parse_password_file(path.read_text())
    assert credfiles.verify_password("pw-1", entries["alice"])
    assert not credfiles.verify_password("pw-2", entries["alice"])


def test_password_file_round_trip_rejects_bad_usernames() -> None:
    text = credfiles.render_password_file({"b": "$7$x", "a": "$7$y"})
    assert text == "a:$7$y\nb:$7$x\n"
    assert credfiles.parse_password_file("# c\n\n" + text + "junk\n") == {"a": "$7$y", "b": "$7$x"}
    with pytest.raises(ValueError):
        credfiles.render_password_file({"a:b": "$7$x"})


@pytest.mark.parametrize(
    ("filter_", "topic", "expected"),
    [
        ("orders/#", "orders/new", True),
        ("orders/#", "orders", True),
        ("orders/+/status", "orders/o1/status", True),
        ("orders/+/status", "orders/o1/status/x", False),
        ("#", "$SYS/broker/uptime", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("agents/a1/#", "agents/a2/assigned", False),
    ],
)
def test_topic_matching(filter_: str, topic: str, expected: bool) -> None:
    assert credfiles.topic_matches(filter_, topic) is expected


def test_acl_users_patterns_and_deny() -> None:
    acl = Acl.parse(ACL)
    assert acl.allowed("orderbus-service", "relay", "write", "orders/o1/status")
    assert acl.allowed("orderbus-service", "relay", "write", "agents/agt_1/assigned")
    assert not acl.allowed("orderbus-service", "relay", "write", "agents/agt_1/presence")
    assert acl.allowed("agt_1", "agt_1", "read", "agents/agt_1/assigned")
    assert not acl.allowed("agt_1", "agt_1", "read", "agents/agt_2/assigned")
    assert not acl.allowed("agt_1", "agt_1", "read", "orders/new")
    assert acl.allowed("agt_1", "x", "write", "agents/agt_1/presence")
    assert not acl.allowed("agt_1", "x", "write", "agents/agt_2/presence")
    assert not acl.allowed("agt_1", "x", "read", "agents/agt_1/secret")  # deny wins
    assert not acl.allowed("dash_1", "tab", "write", "orders/new")
    assert acl.allowed(None, "anon", "read", "public/x")
    assert not acl.allowed(None, "anon", "read", "agents/agt_1/assigned")  # %u needs a username
    assert not acl.allowed("a+b", "x", "read", "agents/a+b/assigned")  # no patterns for such names


def test_acl_subscribe_needs_a_covering_read_rule() -> None:
    acl = Acl.parse(ACL)
    assert acl.may_subscribe("agt_1", "c", "agents/agt_1/#")
    assert acl.may_subscribe("agt_1", "c", "agents/agt_1/assigned")
    assert not acl.may_subscribe("agt_1", "c", "agents/+/assigned")
    assert not acl.may_subscribe("agt_1", "c", "#")
    assert not acl.may_subscribe("agt_1", "c", "orders/#")
    assert acl.may_subscribe("dash_1", "c", "orders/#")
    assert acl.may_subscribe("dash_1", "c", "agents/+/presence")
    assert not acl.may_subscribe("dash_1", "c", "#")


def test_acl_syntax_errors_name_the_line() -> None:
    with pytest.raises(AclSyntaxError, match="line 2"):
        Acl.parse("user a\nfrobnicate x\n")


def test_write_atomically(tmp_path) -> None:
    path = tmp_path / "sub" / "acl"
    assert credfiles.write_atomically(path, "one\n")
    assert not credfiles.write_atomically(path, "one\n")
    assert credfiles.write_atomically(path, "two\n")
    assert path.read_text() == "two\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in path.parent.iterdir()] == ["acl"]


def test_acl_deny_inside_a_granted_filter_is_filtered_at_delivery() -> None:
    acl = Acl.parse(ACL)
    assert acl.may_subscribe("agt_1", "c", "agents/agt_1/#")
    assert not acl.may_subscribe("agt_1", "c", "agents/agt_1/secret")
    assert not acl.allowed("agt_1", "c", "read", "agents/agt_1/secret")
