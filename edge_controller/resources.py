"""Files the wheel ships inside `edge_controller`: the detector models (NanoDet, SSDLite), the
warning clips and the MQTT API schemas.

They are looked up through importlib.resources, never relative to the working
directory or a source checkout, so a pole running the installed wheel finds the same
files as a developer's editable install (where `models/` and `api/schemas/` are
symlinks to the repository's `models/` and `docs/api/schemas/`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

DETECTOR_MODEL = "models/ssdlite_mobilenet_v2_coco_int8.onnx"
NANODET_MODEL = "models/nanodet_m_416_int8.onnx"  # looks at every frame by default
WARNING_CLIPS = ("assets/audio/warning_en.wav", "assets/audio/warning_cmn.wav")

# Keeps files extracted from a zipped install alive for the life of the process.
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def path(name: str) -> Path:
    """A file-system path to the packaged file `name` ('models/x.onnx').

    onnxruntime, aplay and the config take paths, so a resource inside a zip is
    extracted once; an ordinary install returns the file where it lies.
    """
    res = files("edge_controller").joinpath(*name.split("/"))
    if isinstance(res, Path):
        return res
    return _extracted.enter_context(as_file(res))


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one MQTT message kind ('birth', 'telemetry', ...)."""
    res = files("edge_controller").joinpath("api", "schemas", f"{kind}.schema.json")
    doc: dict[str, Any] = json.loads(res.read_text(encoding="utf-8"))
    return doc


def schema_kinds() -> list[str]:
    """Every message kind the package has a schema for."""
    d = files("edge_controller").joinpath("api", "schemas")
    return sorted(p.name.removesuffix(".schema.json") for p in d.iterdir()
                  if p.name.endswith(".schema.json"))
