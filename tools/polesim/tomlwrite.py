"""Writing TOML values and simple tables: the one writer behind generated pole configs
(the simulated pole's, the HIL tests') and `polectl calibrate`'s in-place edits."""

from __future__ import annotations

import json
from typing import Any


def toml_value(v: Any) -> str:
    """A TOML value: booleans, numbers (floats exactly), strings, nested arrays."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    # A JSON string is a TOML basic string; non-ASCII stays literal (TOML has no
    # surrogate-pair escapes).
    return json.dumps(str(v), ensure_ascii=False)


def _table(out: list[str], header: str, kv: dict[str, Any]) -> None:
    out.append(header)
    subs = []
    for k, v in kv.items():
        if isinstance(v, dict):
            subs.append((k, v))
        else:
            out.append(f"{k} = {toml_value(v)}")
    out.append("")
    name = header.strip("[]")
    for k, v in subs:
        _table(out, f"[{name}.{k}]", v)


def render_toml(sections: dict[str, Any]) -> str:
    """Just enough TOML for generated pole configs: tables, sub-tables, arrays of tables."""
    out: list[str] = []
    for name, body in sections.items():
        if isinstance(body, list):
            for item in body:
                _table(out, f"[[{name}]]", item)
        elif isinstance(body, dict):
            _table(out, f"[{name}]", body)
    return "\n".join(out)
