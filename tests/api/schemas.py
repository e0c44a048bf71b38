"""Validate smartpole v1 MQTT payloads against docs/api/schemas/*.schema.json.

Shared by the API tests and by suites that capture real broker traffic (HIL):

    from tests.api.schemas import validate, validate_message   # or `api.schemas`

    validate("telemetry", payload_dict)                    # raises ValidationError
    validate_message("smartpole/v1/pole-0042/telemetry", raw_bytes)

The schema files are the contract; nothing here adds rules beyond them except
`validate_message`'s check that a pole-published payload names the pole of its
topic.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "API_DIR",
    "SCHEMA_DIR",
    "SCHEMA_NAMES",
    "TOPIC_SCHEMAS",
    "ValidationError",
    "errors",
    "load_schema",
    "registry",
    "schema_for_topic",
    "validate",
    "validate_message",
    "validator",
]

API_DIR = Path(__file__).resolve().parents[2] / "docs" / "api"
SCHEMA_DIR = API_DIR / "schemas"
SCHEMA_ID_BASE = "https://smartpole.example/schemas/v1/"

SCHEMA_NAMES = ("state", "birth", "telemetry", "event", "command", "result", "periph_status")

# Topic below smartpole/v1/<pole_id>/ -> schema name.
TOPIC_SCHEMAS = {
    "state": "state",
    "birth": "birth",
    "telemetry": "telemetry",
    "events": "event",
    "cmd": "command",
    "cmd/result": "result",
}

_PERIPH_RE = re.compile(r"periph/[a-z0-9][a-z0-9_-]{0,31}/status")
_TOPIC_RE = re.compile(r"smartpole/v1/(?P<pole_id>[a-z0-9][a-z0-9-]{0,62})/(?P<rest>.+)")


def _stem(name: str) -> str:
    stem = name.removesuffix(".json").removesuffix(".schema")
    if stem not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return stem


@cache
def _load(stem: str) -> dict[str, Any]:
    with (SCHEMA_DIR / f"{stem}.schema.json").open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema `name` ("telemetry", "telemetry.schema.json", ...).

    Cached: treat the result as read-only.
    """
    return _load(_stem(name))


@cache
def registry() -> Registry:
    """All v1 schemas, keyed by their `$id`, so cross-file `$ref`s resolve offline."""
    resources = [
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012))
        for s in (_load(n) for n in SCHEMA_NAMES)
    ]
    return Registry().with_resources(resources)


@cache
def _validator(stem: str) -> Draft202012Validator:
    return Draft202012Validator(_load(stem), registry=registry())


def validator(name: str) -> Draft202012Validator:
    """A (cached) draft 2020-12 validator for schema `name`."""
    return _validator(_stem(name))


def errors(name: str, obj: Any) -> list[ValidationError]:
    """Every validation error of `obj` against schema `name` (empty when valid)."""
    return list(validator(name).iter_errors(obj))


def validate(name: str, obj: Any) -> None:
    """Raise the most relevant `jsonschema.ValidationError` if `obj` is not a valid `name`."""
    error = best_match(validator(name).iter_errors(obj))
    if error is not None:
        raise error


def schema_for_topic(topic: str) -> tuple[str, str]:
    """(pole_id, schema name) for a v1 topic; KeyError for a topic without a schema."""
    m = _TOPIC_RE.fullmatch(topic)
    if m is not None and _PERIPH_RE.fullmatch(m["rest"]):
        return m["pole_id"], "periph_status"
    if m is None or m["rest"] not in TOPIC_SCHEMAS:
        raise KeyError(f"no v1 schema for topic {topic!r}")
    return m["pole_id"], TOPIC_SCHEMAS[m["rest"]]


def validate_message(topic: str, payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Validate one captured MQTT message; return the decoded payload.

    `payload` may be the raw bytes (UTF-8 JSON), a str or an already decoded
    object. The payload's `pole_id` (always in pole-published messages, in signed
    commands) must equal the topic's.
    """
    pole_id, name = schema_for_topic(topic)
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8")
    obj = json.loads(payload) if isinstance(payload, str) else payload
    validate(name, obj)
    # A command names its pole only when signed (since 1.8.0); when it does, it must match.
    if obj.get("pole_id", pole_id) != pole_id:
        raise ValidationError(f"payload pole_id {obj['pole_id']!r} does not match topic {topic!r}")
    return obj
