"""DetectorConfig: defaults valid, strict, frozen, documented."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from edge_controller.detect import DetectorConfig


def test_defaults_are_valid_and_ship_a_model() -> None:
    cfg = DetectorConfig()
    assert cfg.model.is_file(), cfg.model
    assert cfg.kind == "ssd" and cfg.person_class_ids == [1]


def test_unknown_keys_and_bad_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate({"treshold": 0.3})
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate({"tiling": {"cols": 0}})
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate({"crops": {"zones": [[[0, 0], [1, 1]]]}})  # 2 points
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate(
            {"tiling": {"whole_frame": False, "cols": 1, "rows": 1}})  # nothing to run


def test_frozen() -> None:
    cfg = DetectorConfig()
    with pytest.raises(ValidationError):
        cfg.threads = 2  # type: ignore[misc]


def _fields(model: type[BaseModel]) -> list[tuple[str, str | None]]:
    out = []
    for name, f in model.model_fields.items():
        out.append((f"{model.__name__}.{name}", f.description))
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_fields(ann))
    return out


def test_every_field_has_a_description() -> None:
    missing = [n for n, d in _fields(DetectorConfig) if not d]
    assert not missing, missing
