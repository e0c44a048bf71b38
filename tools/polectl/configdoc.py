"""Render the config reference (docs/config.md) from the pydantic models themselves,
so the document can never drift from what the controller accepts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from edge_controller.config import Config

ROOT = Path(__file__).resolve().parents[2]
HEADER = """# Configuration reference

One TOML file per pole, validated at start-up by the controller and by
`polectl config check FILE` (same code). Unknown keys are errors; every key
has a default, so an empty file is a valid (if not useful) config. Errors name
the file, the key path and the reason, and the controller exits with code 2.

This page is generated from `edge_controller/config.py`
(`polectl config doc > docs/config.md`); a test fails when it is stale.
An annotated example: [examples/pole.toml](examples/pole.toml).
"""


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return "(section)"
    d = field.default
    if isinstance(d, Path) and d.is_absolute():
        # Defaults that point into the repository are shown relative to it, so the
        # reference reads the same on every machine.
        with contextlib.suppress(ValueError):
            d = d.relative_to(ROOT)
        return f'"{d}"'
    if d is None:
        return "unset"
    if isinstance(d, bool):
        return "true" if d else "false"
    if isinstance(d, str):
        return f'"{d}"'
    return str(d)


def _type(field: Any) -> str:
    t = field.annotation
    name = getattr(t, "__name__", None) or str(t)
    return str(name).replace("typing.", "").replace("pathlib.", "").replace("|", "or")


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_list) for a field typed Model, Model | None or list[Model]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = get_args(annotation)
    if get_origin(annotation) is list and args and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        return args[0], True
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a, False
    return None, False


def _section(out: list[str], title: str, description: str, model: type[BaseModel]) -> None:
    out.append(f"\n## {title}\n\n{description}\n")
    out.append("| key | type | default | meaning |")
    out.append("| --- | --- | --- | --- |")
    nested: list[tuple[str, str, type[BaseModel]]] = []
    for key, f in model.model_fields.items():
        sub, is_list = _model_of(f.annotation)
        if sub is not None:
            inner = title.strip("[]")
            name = f"[[{inner}.{key}]]" if is_list else f"[{inner}.{key}]"
            nested.append((name, f.description or "", sub))
            continue
        limits = []
        for m in f.metadata:
            for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                v = getattr(m, attr, None)
                if v is not None:
                    limits.append(f"{sym} {v}")
        desc = (f.description or "").replace("|", "\\|")
        if limits:
            desc += f" ({', '.join(limits)})"
        default = "required" if f.is_required() else _default(f)
        typ = _type(f).replace("|", "\\|")
        out.append(f"| `{key}` | {typ} | `{default}` | {desc} |")
    for name, desc, sub in nested:
        _section(out, name, desc, sub)


def render() -> str:
    out = [HEADER]
    for sec_name, sec_field in Config.model_fields.items():
        model, is_list = _model_of(sec_field.annotation)
        assert model is not None, sec_name
        title = f"[[{sec_name}]]" if is_list else f"[{sec_name}]"
        _section(out, title, sec_field.description or "", model)
    return "\n".join(out) + "\n"
