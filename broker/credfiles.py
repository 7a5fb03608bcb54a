"""Mosquitto's password file and ACL file: read, check and write them, standard library only.

The order service is the single source of truth for MQTT users; it writes these two
files and both brokers enforce them — Mosquitto natively (``password_file``,
``acl_file``), the embedded broker through :mod:`broker.plugins`, which uses this
module. Keeping the format code here (not in ``order_service``) respects the
dependency rule: ``broker/`` knows only the files.

Password file: one ``username:$7$<iterations>$<salt b64>$<hash b64>`` line per user,
PBKDF2-HMAC-SHA512 with a 12-byte salt and a 64-byte key, exactly what
``mosquitto_passwd`` writes. The service issues random 256-bit secrets, so a low
iteration count loses nothing (there is nothing to brute-force) and verification
stays far below a millisecond: a reconnect storm never stalls a broker's loop.

ACL file (Mosquitto 2.0 ``acl_file`` semantics):

- ``user <name>`` starts that user's section; ``topic [read|write|readwrite|deny] <filter>``
  lines before any ``user`` line apply to anonymous clients, later ones to that user;
- ``pattern [read|write|readwrite|deny] <filter>`` applies to every client, with ``%u``
  replaced by the username and ``%c`` by the client id (a client whose username or
  id contains ``+``, ``#`` or ``/`` gets no pattern access, as in Mosquitto);
- the access defaults to ``readwrite``; ``deny`` rules are checked first and win;
- ``#`` comments and blank lines are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; see the module docstring
SALT_BYTES = 12
KEY_BYTES = 64

READ, WRITE = "read", "write"
_ACCESS = {"read": {READ}, "write": {WRITE}, "readwrite": {READ, WRITE}, "deny": set()}


# --- passwords ----------------------------------------------------------------------


def new_secret() -> str:
    """A random secret for a device or dashboard: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """``$7$`` PBKDF2-SHA512, the format of Mosquitto 2's password file."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, KEY_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a ``$7$`` (or Mosquitto 1.x ``$6$`` SHA-512) entry."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations = int(parts[2])
            salt, key = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
            if not 1 <= iterations <= 10_000_000:
                return False
            candidate = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(key))
        elif len(parts) == 4 and parts[1] == "6":
            salt, key = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
            candidate = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(candidate, key)


def parse_password_file(text: str) -> dict[str, str]:
    """username -> encoded hash; blank lines, comments and malformed lines are skipped."""
    users: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        username, encoded = line.split(":", 1)
        if username:
            users[username] = encoded
    return users


def render_password_file(entries: Mapping[str, str]) -> str:
    """Lines for ``username -> encoded hash`` (already hashed), sorted for stable diffs."""
    for username in entries:
        if not username or ":" in username or any(c in username for c in "\r\n"):
            raise ValueError(f"invalid MQTT username {username!r}")
    return "".join(f"{u}:{entries[u]}\n" for u in sorted(entries))


# --- topics ---------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def filter_matcher(filter_: str) -> Callable[[str], bool] | None:
    """A valid filter's matching as one compiled pattern (every delivery checks the ACL's
    filters, and splitting both strings each time was a fan-out's main ACL cost); None
    for an invalid filter. ``+`` is one level, a trailing ``#`` the parent level and
    everything below, and a filter starting with a wildcard never matches a $ topic."""
    levels = filter_.split("/")
    if not filter_ or "#" in levels[:-1] or any(len(lv) > 1 and ("+" in lv or "#" in lv) for lv in levels):
        return None
    multi = levels[-1] == "#"
    parts = ["[^/]*" if lv == "+" else re.escape(lv) for lv in (levels[:-1] if multi else levels)]
    pattern = "/".join(parts)
    if multi:
        pattern = pattern + "(?:/.*)?" if parts else ".*"
    match = re.compile(pattern, re.DOTALL).fullmatch
    if filter_[0] in "+#":
        return lambda topic: not topic.startswith("$") and match(topic) is not None
    return lambda topic: match(topic) is not None


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT 3.1.1 matching of a concrete topic against a filter (``+``, ``#``, ``$`` rule)."""
    if (matcher := filter_matcher(filter_)) is not None:
        return matcher(topic)
    if topic.startswith("$") and filter_[:1] in ("+", "#"):
        return False  # §4.7.2: wildcards at the first level never match $-topics
    f_levels, t_levels = filter_.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True  # also matches the parent level ("a/#" matches "a")
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def filter_covered(filter_: str, rule: str) -> bool:
    """Whether every topic that ``filter_`` matches is also matched by ``rule``."""
    if rule[:1] in ("+", "#") and filter_.startswith("$"):
        return False  # wildcards at the first level never match $-topics
    f_levels, r_levels = filter_.split("/"), rule.split("/")
    for i, level in enumerate(r_levels):
        if level == "#":
            return True
        if i >= len(f_levels):
            return False
        f = f_levels[i]
        if f == "#":
            return False  # the filter reaches deeper than the rule allows
        if level != "+" and (f == "+" or f != level):
            return False
    return len(f_levels) == len(r_levels)


# --- ACL --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    access: frozenset[str]  # {read}, {write}, both, or empty for deny
    filter: str

    @property
    def deny(self) -> bool:
        return not self.access


# What an Acl remembers is bounded in bytes, not only in entries: the strings it is asked
# about come from clients (a topic may be 65,535 bytes long). Each cache is emptied when full.
RULES_CACHE_SIZE = 50_000  # (user, client id) pairs whose rules an Acl keeps worked out
RULES_CACHE_BYTES = 4 * 1024 * 1024  # their usernames and client ids
ANSWERS_CACHE_SIZE = 100_000  # (rule set, access, topic) grants an Acl remembers
ANSWERS_CACHE_BYTES = 8 * 1024 * 1024  # their topics
ENTRY_BYTES = 200  # what one cache entry costs besides its strings (key tuple, dict slot)


class AclSyntaxError(ValueError):
    pass


@dataclass
class Acl:
    """A parsed ``acl_file``; ``allowed`` answers as Mosquitto 2.0 would."""

    anonymous: list[Rule] = field(default_factory=list)
    users: dict[str, list[Rule]] = field(default_factory=dict)
    patterns: list[Rule] = field(default_factory=list)
    _rules: dict[tuple[str | None, str], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _interned: dict[tuple[Rule, ...], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _rules_bytes: int = field(default=0, init=False, repr=False, compare=False)
    # Grants only: a denied topic is whatever a client chose to send, and must cost no memory.
    _granted: set[tuple[int, str, str]] = field(default_factory=set, init=False, repr=False, compare=False)
    _granted_bytes: int = field(default=0, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Acl:
        acl = cls()
        current: list[Rule] = acl.anonymous
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            rest = rest.strip()
            if keyword == "user":
                if not rest:
                    raise AclSyntaxError(f"line {number}: 'user' needs a name")
                current = acl.users.setdefault(rest, [])
            elif keyword in ("topic", "pattern"):
                rule = _parse_rule(rest, number)
                (current if keyword == "topic" else acl.patterns).append(rule)
            else:
                raise AclSyntaxError(f"line {number}: unknown keyword {keyword!r}")
        return acl

    def rules_for(self, username: str | None, client_id: str) -> tuple[Rule, ...]:
        """The user's own rules, then the patterns with %u and %c substituted.

        Memoised: every delivery asks (an Acl is never changed once parsed; a changed
        file gives a new one). Equal rule sets are one object, so that :meth:`allowed`
        can remember its answers per rule set: 1,000 dashboards of one user share one."""
        key = (username, client_id)
        found = self._rules.get(key)
        if found is None:
            cost = len(username or "") + len(client_id) + ENTRY_BYTES
            if len(self._rules) >= RULES_CACHE_SIZE or self._rules_bytes + cost > RULES_CACHE_BYTES:
                self._rules.clear()
                self._interned.clear()
                self._rules_bytes = 0
                self._granted.clear()  # keyed by the interned sets' ids
                self._granted_bytes = 0
            rules = tuple(self._rules_for(username, client_id))
            found = self._rules[key] = self._interned.setdefault(rules, rules)
            self._rules_bytes += cost
        return found

    @property
    def remembered_bytes(self) -> int:
        """What the two caches hold, by the estimate that bounds them."""
        return self._rules_bytes + self._granted_bytes

    def _rules_for(self, username: str | None, client_id: str) -> list[Rule]:
        own = self.anonymous if username is None else self.users.get(username, [])
        rules = list(own)
        unsafe = any(c in value for value in (username or "", client_id) for c in "+#/")
        if not unsafe:
            for rule in self.patterns:
                if "%u" in rule.filter and username is None:
                    continue
                text = rule.filter.replace("%u", username or "").replace("%c", client_id)
                rules.append(Rule(rule.access, text))
        return rules

    def allowed(self, username: str | None, client_id: str, access: str, topic: str) -> bool:
        """May this client publish (``write``) to or receive (``read``) this concrete topic?"""
        rules = self.rules_for(username, client_id)
        key = (id(rules), access, topic)  # the interned set lives as long as this entry
        if key in self._granted:
            return True
        if any(r.deny and topic_matches(r.filter, topic) for r in rules) or not any(
            access in r.access and topic_matches(r.filter, topic) for r in rules
        ):
            return False
        cost = len(topic) + ENTRY_BYTES
        if len(self._granted) >= ANSWERS_CACHE_SIZE or self._granted_bytes + cost > ANSWERS_CACHE_BYTES:
            self._granted.clear()
            self._granted_bytes = 0
        self._granted.add(key)
        self._granted_bytes += cost
        return True

    def may_subscribe(self, username: str | None, client_id: str, filter_: str) -> bool:
        """Stricter than Mosquitto (which accepts every SUBSCRIBE and filters delivery):
        a filter is granted only when a read rule covers all of it and no deny rule
        covers all of it, so a refused subscription is visible to the client (SUBACK
        0x80). Topics a deny rule takes out of a granted filter are filtered at delivery."""
        rules = self.rules_for(username, client_id)
        if any(r.deny and filter_covered(filter_, r.filter) for r in rules):
            return False
        return any(READ in r.access and filter_covered(filter_, r.filter) for r in rules)


def _parse_rule(rest: str, number: int) -> Rule:
    first, _, remainder = rest.partition(" ")
    if first in _ACCESS and remainder.strip():
        access, filter_ = first, remainder.strip()
    else:
        access, filter_ = "readwrite", rest
    if not filter_:
        raise AclSyntaxError(f"line {number}: a rule needs a topic filter")
    return Rule(frozenset(_ACCESS[access]), filter_)


# --- writing ------------------------------------------------------------------------------


def write_atomically(path: Path, text: str, mode: int = 0o640) -> bool:
    """Replace ``path`` with ``text`` (temp file, fsync, rename); False when unchanged.

    A broker re-reading the file sees the old or the new content, never a mix.
    """
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def render_acl(sections: Iterable[tuple[str | None, Iterable[str]]], patterns: Iterable[str] = ()) -> str:
    """An ``acl_file`` from ``(username or None for anonymous, [rule lines])`` and pattern lines."""
    lines: list[str] = []
    for username, rules in sections:
        if username is not None:
            lines.append(f"user {username}")
        lines.extend(f"topic {r}" for r in rules)
        lines.append("")
    lines.extend(f"pattern {p}" for p in patterns)
    return "\n".join(lines).strip() + "\n"
