"""Telemetry `crossing.sight` (since 1.9.0): the model the crossing service builds it through
(edge_controller.api.messages.CrossingSight) is the schema's object, field for field, and
the causes in code are the schema's enum."""

from __future__ import annotations

from typing import get_args

from edge_controller.api.messages import EVENTS, SIGHT_CAUSES, CrossingSight, SightCause
from edge_controller.detect.sight import REPORTED

from .schemas import load_schema


def _sight() -> dict:  # type: ignore[type-arg]
    return load_schema("telemetry")["properties"]["crossing"]["properties"]["sight"]


def test_model_is_the_schema_object() -> None:
    s = _sight()
    assert set(CrossingSight.model_fields) == set(s["properties"]) == set(s["required"])
    assert s["additionalProperties"] is False


def test_causes_are_the_schema_enum_and_the_monitors() -> None:
    enum = _sight()["properties"]["causes"]["items"]["enum"]
    assert list(SIGHT_CAUSES) == enum == list(get_args(SightCause)) == list(REPORTED)


def test_events_are_listed() -> None:
    assert {"crossing_degraded", "crossing_restored"} <= set(EVENTS)
