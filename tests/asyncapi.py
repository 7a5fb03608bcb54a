"""The MQTT contract (docs/asyncapi.yaml) as something tests can check payloads against.

The document is loaded once. Internal references (``#/...``) are resolved by
inlining, so every schema handed out is self-contained. A concrete topic is
matched against the channel addresses (``orders/{orderId}/status``), its
parameters against their ``x-schema``, and a payload against the JSON message
of that channel with a draft 2020-12 validator and a format checker. A channel
whose messages include one with an empty payload (``OrderCleared``) accepts a
zero-byte payload, for which ``validate_message`` returns None.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml
from jsonschema import Draft202012Validator, FormatChecker, ValidationError

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO_ROOT / "docs" / "asyncapi.yaml"

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _format_checker() -> FormatChecker:
    """The draft 2020-12 checker, plus a date-time check that needs no optional package.

    jsonschema checks ``date-time`` only when rfc3339-validator is installed; this
    one always does (shape by regex, calendar by ``datetime.fromisoformat``).
    """
    checker = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.match(value):
            return False
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        return True

    return checker


FORMAT_CHECKER = _format_checker()


# --- loading and resolving ----------------------------------------------------


def _pointer(document: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only internal references are supported, not {ref!r}")
    node = document
    fragment = unquote(ref[1:])
    if not fragment:
        return node
    if not fragment.startswith("/"):
        raise ValueError(f"not a JSON pointer: {ref!r}")
    for token in fragment[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise ValueError(f"unresolvable reference {ref!r}")
    return node


def _inline(document: Any, node: Any, seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` replaced by (a resolved copy of) its target."""
    if isinstance(node, list):
        return [_inline(document, item, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            raise ValueError(f"circular reference {' -> '.join((*seen, ref))}")
        target = _inline(document, copy.deepcopy(_pointer(document, ref)), (*seen, ref))
        siblings = {k: _inline(document, v, seen) for k, v in node.items() if k != "$ref"}
        if not siblings:
            return target
        # Keep the sibling keywords' meaning (draft 2020-12): both must hold.
        earlier = siblings.pop("allOf", [])
        return {**siblings, "allOf": [*earlier, target]}
    return {key: _inline(document, value, seen) for key, value in node.items()}


@cache
def spec() -> dict:
    """The AsyncAPI document as written (with its ``$ref``s)."""
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@cache
def resolved() -> dict:
    """The AsyncAPI document with every internal ``$ref`` inlined."""
    document = spec()
    return _inline(document, document)


# --- topics -------------------------------------------------------------------

_PARAM = re.compile(r"^\{([A-Za-z0-9_]+)\}$")


def _address_regex(address: str) -> re.Pattern[str]:
    parts = []
    for level in address.split("/"):
        match = _PARAM.match(level)
        parts.append(f"(?P<{match.group(1)}>[^/+#]+)" if match else re.escape(level))
    return re.compile("^" + "/".join(parts) + "$")


def _match_channel(topic: str) -> tuple[str, dict, dict[str, str]]:
    """(channel key, resolved channel, parameter values) for a concrete topic."""
    if not isinstance(topic, str) or not topic or any(c in topic for c in "+#\0"):
        raise ValueError(f"not a concrete MQTT topic: {topic!r}")
    matches = []
    for key, channel in resolved().get("channels", {}).items():
        found = _address_regex(channel["address"]).match(topic)
        if found:
            matches.append((key, channel, found.groupdict()))
    if not matches:
        raise ValueError(f"topic {topic!r} is not in the contract")
    if len(matches) > 1:
        raise ValueError(f"topic {topic!r} matches several channels: {[m[0] for m in matches]}")
    key, channel, params = matches[0]
    for name, value in params.items():
        parameter = channel.get("parameters", {}).get(name, {})
        schema = parameter.get("x-schema")
        if schema is not None and not Draft202012Validator(schema, format_checker=FORMAT_CHECKER).is_valid(
            value
        ):
            raise ValueError(f"topic {topic!r}: {name} {value!r} is not a valid {name}")
        if "enum" in parameter and value not in parameter["enum"]:
            raise ValueError(f"topic {topic!r}: {name} {value!r} is not one of {parameter['enum']}")
    return key, channel, params


def _content_type(message: dict) -> str:
    return message.get("contentType") or resolved().get("defaultContentType", "application/json")


def _json_messages(channel: dict) -> list[dict]:
    return [m for m in channel.get("messages", {}).values() if _content_type(m) == "application/json"]


def _accepts_empty(channel: dict) -> bool:
    """Whether a message of this channel is the empty payload (its schema accepts "")."""
    return any(
        _content_type(m) != "application/json" and Draft202012Validator(m.get("payload", {})).is_valid("")
        for m in channel.get("messages", {}).values()
    )


def schema_for_topic(topic: str) -> dict:
    """The (self-contained) JSON payload schema for a concrete topic.

    Raises ValueError for a topic that no channel of the contract matches.
    The empty "cleared" message of ``orders/<id>/status`` is not JSON and is not
    part of this schema; ``validate_message`` handles it.
    """
    _key, channel, _params = _match_channel(topic)
    schemas = [copy.deepcopy(m["payload"]) for m in _json_messages(channel)]
    if not schemas:
        raise ValueError(f"topic {topic!r} carries no JSON message in the contract")
    return schemas[0] if len(schemas) == 1 else {"oneOf": schemas}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def validate_message(topic: str, payload: bytes) -> dict | None:
    """Check one MQTT message against the contract; return the decoded JSON.

    Returns None for an empty payload where the contract allows one (the
    "cleared" message on ``orders/<id>/status``). Raises ValueError for a topic
    not in the contract, an empty payload elsewhere, or a payload that is not
    UTF-8 JSON; ``jsonschema.ValidationError`` for JSON that does not conform,
    including a payload whose id differs from the one in its topic.
    """
    _key, channel, params = _match_channel(topic)
    if isinstance(payload, str):
        raise TypeError("payload must be bytes, as received from MQTT")
    if len(payload) == 0:
        if _accepts_empty(channel):
            return None
        raise ValueError(f"an empty payload is not allowed on {topic!r}")
    text = payload.decode("utf-8")  # UnicodeDecodeError is a ValueError
    data = json.loads(text, parse_constant=_reject_constant)
    validator = Draft202012Validator(schema_for_topic(topic), format_checker=FORMAT_CHECKER)
    validator.validate(data)
    for name, value in params.items():
        location = channel.get("parameters", {}).get(name, {}).get("location", "")
        prefix = "$message.payload#"
        if location.startswith(prefix):
            found = _pointer(data, "#" + location[len(prefix) :])
            if found != value:
                raise ValidationError(
                    f"{name} in topic {topic!r} is {value!r} but the payload says {found!r}"
                )
    return data
