"""Render the config reference (docs/config.md) from the pydantic models themselves,
so the document can never drift from what the controller accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edge_controller.config import Config

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


def render() -> str:
    out = [HEADER]
    for sec_name, sec_field in Config.model_fields.items():
        model = sec_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out.append(f"\n## [{sec_name}]\n\n{sec_field.description}\n")
        out.append("| key | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for key, f in model.model_fields.items():
            limits = []
            for m in f.metadata:
                for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    v = getattr(m, attr, None)
                    if v is not None:
                        limits.append(f"{sym} {v}")
            desc = (f.description or "").replace("|", "\\|")
            if limits:
                desc += f" ({', '.join(limits)})"
            typ = _type(f).replace("|", "\\|")
            out.append(f"| `{key}` | {typ} | `{_default(f)}` | {desc} |")
    return "\n".join(out) + "\n"
