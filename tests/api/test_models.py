"""The API models in code (edge_controller.api) match the published JSON Schemas.

Every property of every schema is a field of its model (and back), for the
parts the model types; every valid sample of the schema tests and every
example of the AsyncAPI document round-trips through the model unchanged; the
command types, reasons and capabilities in code are the ones the documents list.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from edge_controller import api
from edge_controller.api.commands import BODIES, command_type
from edge_controller.api.messages import MODELS

from .schemas import API_DIR, load_schema
from .test_schemas import BASE, VALID

MQTT_MD = (API_DIR.parent / "mqtt.md").read_text(encoding="utf-8")
ASYNCAPI = yaml.safe_load((API_DIR / "asyncapi.yaml").read_text(encoding="utf-8"))
_APPENDED = {"seq"}  # the store-and-forward queue adds it; the model has it optional


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model of a field typed `M` or `M | None` (not a map of models)."""
    if get_origin(annotation) is dict:
        return None
    for t in (annotation, *get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _resolve(schema: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    for alt in sub.get("anyOf", ()):
        if "$ref" in alt:
            return _resolve(schema, schema["$defs"][alt["$ref"].rsplit("/", 1)[-1]])
    return sub


def _compare(model: type[BaseModel], schema: dict[str, Any], sub: dict[str, Any],
             where: str) -> None:
    fields = set(model.model_fields)
    assert fields == set(sub["properties"]), where
    for name, f in model.model_fields.items():
        inner = _submodel(f.annotation)
        if inner is not None:
            _compare(inner, schema, _resolve(schema, sub["properties"][name]), f"{where}.{name}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_fields_are_the_schema_properties(name: str) -> None:
    schema = load_schema(name)
    _compare(MODELS[name], schema, schema, name)
    required = set(schema["required"])
    model_required = {n for n, f in MODELS[name].model_fields.items() if f.is_required()}
    assert model_required <= required, name


def _samples() -> list[tuple[str, dict[str, Any]]]:
    out = [(n, s) for n, s in [*BASE.items(), *VALID] if n in MODELS]
    for message in ASYNCAPI["components"]["messages"].values():
        name = message["payload"]["$ref"].split("/")[-1].removesuffix(".schema.json")
        if name in MODELS:
            out += [(name, e["payload"]) for e in message["examples"]]
    return out


@pytest.mark.parametrize(("name", "sample"), _samples())
def test_valid_samples_round_trip_through_the_model(name: str, sample: dict[str, Any]) -> None:
    msg = MODELS[name].model_validate(sample)
    assert json.loads(json.dumps(msg.model_dump(mode="json", exclude_unset=True))) == sample


def test_command_bodies_are_the_schema_bodies() -> None:
    schema = load_schema("command")
    types = {d["properties"]["type"]["const"] for d in schema["$defs"].values()
             if "type" in d.get("properties", {})}
    assert set(api.COMMAND_TYPES) == types
    assert [command_type(b) for b in BODIES] == list(api.COMMAND_TYPES)
    birth = load_schema("birth")["properties"]
    assert birth["commands"]["items"]["enum"] == list(api.COMMAND_TYPES)
    assert birth["capabilities"]["items"]["enum"] == list(api.CAPABILITIES)
    assert load_schema("event")["properties"]["event"]["enum"] == list(api.EVENTS)


def test_api_version_is_the_asyncapi_version() -> None:
    assert ASYNCAPI["info"]["version"] == api.API_VERSION
    assert re.search(rf"^\| {re.escape(api.API_VERSION)} \|",
                     (API_DIR / "CHANGELOG.md").read_text(), re.M)


@pytest.mark.parametrize("code", [*api.COMMAND_TYPES, *api.REASONS])
def test_every_command_type_and_reason_is_documented(code: str) -> None:
    assert f"`{code}`" in MQTT_MD, f"docs/mqtt.md does not mention `{code}`"
    assert re.search(rf"\b{re.escape(code)}\b", yaml.safe_dump(ASYNCAPI)), \
        f"docs/api/asyncapi.yaml does not mention {code}"


def test_the_api_package_imports_nothing_else_of_the_controller() -> None:
    code = ("import sys, edge_controller.api; "
            "print(sorted(m for m in sys.modules if m.startswith('edge_controller')))")
    mods = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True).stdout.replace("'", '"'))
    assert all(m == "edge_controller" or m.startswith("edge_controller.api") for m in mods)
