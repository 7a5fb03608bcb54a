"""The password and ACL files of one embedded broker, as last read, re-read when they change.

Shared by the auth and topic plugins of :mod:`broker.plugins` (one instance per amqtt
Broker). ``refresh()`` stats both files (cheap enough for every CONNECT and a timer) and
re-reads one only when its inode, size or mtime changed. A missing or unreadable file
denies everyone, logged once; a malformed ACL keeps the last good one, logged with its line.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amqtt.contexts import BaseContext

from broker.credfiles import Acl, AclSyntaxError, parse_password_file, verify_password

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5  # seconds between two stat() checks of the files
INLINE_ITERATIONS = 1000  # PBKDF2 above this many iterations runs in a thread, not on the loop


class WatchedFile:
    """A file re-read when its inode, size or mtime changes; ``None`` text while it is missing."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path, self.what = Path(path), what
        self._signature: tuple[int, ...] | None | bool = False  # False: never looked

    def poll(self) -> tuple[bool, str | None]:
        """(changed since the last poll, the current text or None when missing or unreadable)."""
        try:
            signature: tuple[int, ...] | None = _signature(os.stat(self.path))
        except OSError:
            signature = None
        if signature == self._signature:
            return False, None
        text = None
        if signature is not None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    # The signature of what was read: a rename in between is seen at the next poll.
                    signature = _signature(os.fstat(handle.fileno()))
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as exc:  # retried once the file changes
                logger.error("cannot read the MQTT %s %s: %s; denying everyone", self.what, self.path, exc)
        elif self._signature is not None:
            logger.warning("MQTT %s %s is missing: denying everyone until it appears", self.what, self.path)
        self._signature = signature
        return True, text


def _signature(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _iterations(encoded: str) -> int:
    parts = encoded.split("$")
    return int(parts[2]) if len(parts) == 5 and parts[1] == "7" and parts[2].isdigit() else 0


class CredentialFiles:
    """The password and ACL files of one broker, as last read; shared by its two plugins."""

    _by_broker: weakref.WeakKeyDictionary[Any, CredentialFiles] = weakref.WeakKeyDictionary()

    def __init__(self, password_file: str | os.PathLike[str], acl_file: str | os.PathLike[str]) -> None:
        self._password_file = WatchedFile(password_file, "password file")
        self._acl_file = WatchedFile(acl_file, "ACL file")
        self.users: dict[str, str] = {}  # username -> encoded hash; empty denies everyone
        self.acl = Acl()  # no rule: denies everything
        self.on_users_changed: list[Callable[[], None]] = []
        # encoded hash -> HMAC of the secret that matched it, under a key that dies with the process.
        self._verified: dict[str, bytes] = {}
        self._cache_key = secrets.token_bytes(32)
        self._watcher: asyncio.Task[None] | None = None
        self.refresh()

    @classmethod
    def for_broker(cls, context: BaseContext, password_file: str, acl_file: str) -> CredentialFiles:
        broker = broker_of(context)
        files = cls._by_broker.get(broker)
        if files is None:
            files = cls._by_broker[broker] = cls(password_file, acl_file)
        elif (files._password_file.path, files._acl_file.path) != (Path(password_file), Path(acl_file)):
            raise ValueError("the auth and topic plugins of one broker must name the same two files")
        return files

    def refresh(self) -> None:
        """Re-read whichever file changed; tell ``on_users_changed`` when the entries did."""
        changed, text = self._password_file.poll()
        if changed:
            users = {} if text is None else parse_password_file(text)
            if text is not None:
                logger.info("%d MQTT user(s) loaded from %s", len(users), self._password_file.path)
            hashes = set(users.values())
            self._verified = {h: d for h, d in self._verified.items() if h in hashes}
            if users != self.users:
                self.users = users
                for callback in self.on_users_changed:
                    callback()
        changed, text = self._acl_file.poll()
        if changed:
            if text is None:
                self.acl = Acl()
            else:
                try:
                    self.acl = Acl.parse(text)
                except AclSyntaxError as exc:
                    logger.error("MQTT ACL file %s, %s; keeping the last good ACL", self._acl_file.path, exc)
                else:
                    logger.info("MQTT ACL loaded from %s", self._acl_file.path)

    async def check(self, username: str, password: str) -> str | None:
        """The user's encoded hash when ``password`` matches it, else None."""
        encoded = self.users.get(username)
        if encoded is None:
            return None
        digest = hmac.new(self._cache_key, f"{encoded}\0{password}".encode(), hashlib.sha256).digest()
        if hmac.compare_digest(self._verified.get(encoded, b""), digest):
            return encoded
        if _iterations(encoded) > INLINE_ITERATIONS:
            loop = asyncio.get_running_loop()
            matched = await loop.run_in_executor(None, verify_password, password, encoded)
        else:  # ~0.1 ms for the service's 101 iterations: cheaper than a thread hop
            matched = verify_password(password, encoded)
        if not matched or self.users.get(username) != encoded:  # rotated while we verified
            return None
        self._verified[encoded] = digest
        return encoded

    def start_watching(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="mqtt-cred-files")

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                self.refresh()
            except Exception:  # a bug here must not end the checks for good
                logger.exception("checking the MQTT credential files failed")


def broker_of(context: BaseContext) -> Any:
    """The amqtt Broker behind a plugin context (amqtt 0.12.1 offers no public accessor)."""
    broker = getattr(context, "_broker_instance", None)
    if broker is None:
        raise RuntimeError("these plugins need amqtt's BrokerContext (amqtt 0.12.1)")
    return broker
