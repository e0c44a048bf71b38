"""The installer's tools read what poles publish through the API's models as tolerant
readers (docs/mqtt.md): keys a later minor version adds are ignored at every level,
a message that is not v1 is not taken for one; the live view renders from the models."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from polectl.apiread import loads, model_for, read
from polectl.monitor import FleetView
from pydantic import BaseModel
from rich.console import Console

from edge_controller.api import MODELS, PeriphStatus, Telemetry
from tests.api.test_schemas import BASE


def _newer(name: str, msg: dict[str, Any]) -> dict[str, Any]:
    """`msg` as a pole of a later minor version might send it: extra keys at the top and
    in every section the model types (open sections such as `detail` keep theirs)."""
    out = copy.deepcopy(msg)
    out["added_in_1_99"] = {"x": 1}
    typed = MODELS[name].model_validate(msg)
    for k, v in out.items():
        if isinstance(v, dict) and isinstance(getattr(typed, k, None), BaseModel):
            v["added_too"] = [1, 2]
    return out


@pytest.mark.parametrize("name", sorted(n for n in BASE if n in MODELS))
def test_unknown_keys_are_ignored_at_every_level(name: str) -> None:
    model = MODELS[name]
    strict = model.model_validate(BASE[name])
    assert read(model, _newer(name, BASE[name])) == strict
    assert read(model, {**BASE[name], "v": 2}) is None  # another major version
    assert loads(model, b"not json") is None and read(model, [1]) is None


def test_topic_kinds() -> None:
    assert model_for("telemetry") is Telemetry
    assert model_for("periph/screen-1/status") is PeriphStatus
    assert model_for("something/new") is None


def test_live_view_renders_from_the_models() -> None:
    view = FleetView("smartpole/v1")
    for name, kind in (("state", "state"), ("birth", "birth"), ("telemetry", "telemetry"),
                       ("event", "events"), ("result", "cmd/result")):
        if name in BASE:
            msg = _newer(name, BASE[name])
            view.apply(f"smartpole/v1/{msg['pole_id']}/{kind}", json.dumps(msg).encode())
    view.apply("smartpole/v1/pole-x/telemetry", b'{"v": 1}')
    pole = next(iter(v for v in view.poles.values() if v.telemetry is not None))
    assert isinstance(pole.telemetry, Telemetry)
    assert any("not a v1 telemetry message" in line for line in view.log)
    con = Console(width=200, record=True)
    con.print(view.render())
    assert pole.pole_id in con.export_text()
