"""Reading what poles publish through the API's models, as a tolerant reader.

docs/mqtt.md ("Be a tolerant reader", "Versioning"): a backend ignores keys it does
not know, so poles of a later minor version can be upgraded before their backends.
The models in `edge_controller.api` are the pole's strict conformance form (unknown
keys forbidden); `read` drops the keys a model does not define, at every level,
and validates the rest. A message whose known keys do not validate (not v1, a
missing field, a wrong type) is not a message of this major version: None.
"""

from __future__ import annotations

import json
import types
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge_controller.api import Birth, Event, PeriphStatus, Result, State, Telemetry

M = TypeVar("M", bound=BaseModel)

# Topic kind (what follows <root>/<pole>/) -> the model of its payload.
KINDS: dict[str, type[BaseModel]] = {
    "state": State, "birth": Birth, "telemetry": Telemetry, "events": Event,
    "cmd/result": Result,
}


def model_for(kind: str) -> type[BaseModel] | None:
    """The model of a topic kind; periph/<device_id>/status included."""
    if kind.startswith("periph/") and kind.endswith("/status"):
        return PeriphStatus
    return KINDS.get(kind)


def _known(annotation: Any, value: Any) -> Any:
    """`value` without the keys the models in `annotation` do not define."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and isinstance(value, dict):
                return _strip(arg, value)
        return value
    if origin is dict and isinstance(value, dict):
        _, vt = get_args(annotation) or (Any, Any)
        return {k: _known(vt, v) for k, v in value.items()}
    if origin is list and isinstance(value, list):
        (it,) = get_args(annotation) or (Any,)
        return [_known(it, v) for v in value]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
            and isinstance(value, dict):
        return _strip(annotation, value)
    return value


def _strip(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    fields = model.model_fields
    return {k: _known(fields[k].annotation, v) for k, v in data.items() if k in fields}


def read(model: type[M], data: object) -> M | None:
    """`data` (a decoded JSON value) as `model`, unknown keys ignored; None if it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        return model.model_validate(_strip(model, data))
    except ValidationError:
        return None


def loads(model: type[M], payload: bytes) -> M | None:
    """One MQTT payload as `model` (None: not JSON, or not that message)."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return read(model, data)
