"""Editing a pole's TOML config text in place: every other table, key and comment stays as
it was. Used by `polectl calibrate` to save zones and the signal box back into the file."""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

from polesim.tomlwrite import toml_value as _exact_value

_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_\-.\s\"']+?)\s*\](\])?\s*(#.*)?$")


class EditError(Exception):
    """The edit cannot be made safely on this file's text."""


def _norm(name: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in name.split("."))


def _scan(line: str, depth: int, ml: str | None) -> tuple[int, str | None]:
    """Bracket depth and open multi-line string after `line` (strings, comments aware)."""
    i, n = 0, len(line)
    while i < n:
        if ml is not None:
            j = line.find(ml, i)
            if j < 0:
                return depth, ml
            i, ml = j + 3, None
            continue
        ch = line[i]
        if ch == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            ml = line[i:i + 3]
            i += 3
            continue
        if ch in "\"'":
            j = i + 1
            while j < n and line[j] != ch:
                j += 2 if ch == '"' and line[j] == "\\" else 1
            i = j + 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth, ml


Block = tuple[str | None, bool, list[str]]  # (table name, is array-of-tables, lines)


def blocks(text: str) -> list[Block]:
    """The file as its preamble plus one block per table header, lines kept verbatim."""
    out_b: list[Block] = [(None, False, [])]
    depth, ml = 0, None
    for line in text.splitlines(keepends=True):
        if depth == 0 and ml is None:
            m = _HEADER.match(line)
            if m and bool(m.group(1)) == bool(m.group(3)):
                out_b.append((_norm(m.group(2)), bool(m.group(1)), [line]))
                continue
        out_b[-1][2].append(line)
        depth, ml = _scan(line, depth, ml)
    return out_b


def _join(bs: list[Block]) -> str:
    return "".join("".join(b[2]) for b in bs)


def _key_span(lines: list[str], key: str) -> tuple[int, int] | None:
    """[start, end) of `key = value` (a value may span lines) among a block's lines."""
    pat = re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
    depth, ml = 0, None
    i = 0
    while i < len(lines):
        line = lines[i]
        if depth == 0 and ml is None and pat.match(line):
            d, m2 = _scan(line, 0, None)
            j = i + 1
            while (d > 0 or m2 is not None) and j < len(lines):
                d, m2 = _scan(lines[j], d, m2)
                j += 1
            return i, j
        depth, ml = _scan(line, depth, ml)
        i += 1
    return None



def toml_value(v: Any) -> str:
    """As a person would write it: integral floats as integers, others to 4 decimals."""
    return _exact_value(_tidy(v))


def _tidy(v: Any) -> Any:
    if isinstance(v, float):
        return int(v) if v.is_integer() and abs(v) < 1e15 else round(v, 4)
    if isinstance(v, (list, tuple)):
        return [_tidy(x) for x in v]
    return v


def set_key(text: str, table: str, key: str, value: Any | None) -> str:
    """Set (or with None remove) `key` in `[table]`, adding the table at the end if absent."""
    bs = blocks(text)
    for name, is_array, lines in bs:
        if name == table and not is_array:
            span = _key_span(lines[1:], key)
            if span is not None:
                a, b = span[0] + 1, span[1] + 1
                lines[a:b] = [] if value is None else [f"{key} = {toml_value(value)}\n"]
            elif value is not None:
                at = len(lines)
                while at > 1 and not lines[at - 1].strip():
                    at -= 1
                lines.insert(at, f"{key} = {toml_value(value)}\n")
            return _join(bs)
    if value is None:
        return text
    sep = "" if text.endswith("\n\n") or not text else ("\n" if text.endswith("\n") else "\n\n")
    return text + f"{sep}[{table}]\n{key} = {toml_value(value)}\n"


def set_zones(text: str, zones: list[dict[str, Any]]) -> str:
    """Replace every [[zones]] table with `zones`, where the first one was (or at the end)."""
    bs = blocks(text)
    rendered: list[str] = []
    for z in zones:
        rendered.append("[[zones]]\n")
        for k in ("name", "kind", "polygon", "clips"):
            if k in z:
                rendered.append(f"{k} = {toml_value(z[k])}\n")
        rendered.append("\n")
    first = next((i for i, (n, _a, _l) in enumerate(bs)
                  if n == "zones" or (n or "").startswith("zones.")), None)
    kept = [b for b in bs if not (b[0] == "zones" or (b[0] or "").startswith("zones."))]
    if first is None:
        body = _join(kept)
        if not rendered:
            return body
        sep = "" if body.endswith("\n\n") or not body else ("\n" if body.endswith("\n")
                                                             else "\n\n")
        return body + sep + "".join(rendered).rstrip("\n") + "\n"
    # Nothing before the first zones table is a zones table: kept[:first] == bs[:first].
    new: list[Block] = [*kept[:first], (None, False, rendered), *kept[first:]]
    return _join(new)


def _set_in(d: dict[str, Any], path: str, key: str, value: Any | None) -> None:
    node = d
    for p in path.split("."):
        node = node.setdefault(p, {})
    if value is None:
        node.pop(key, None)
    else:
        node[key] = value


def apply_edits(text: str, zones: list[dict[str, Any]] | None,
                keys: list[tuple[str, str, Any | None]]) -> tuple[str, dict[str, Any]]:
    """New text and its data; raises EditError unless the new text parses to exactly the
    old data with these edits."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EditError(f"the config is not valid TOML now ({e}); fix it by hand first"
                        ) from None
    expected = copy.deepcopy(data)
    new_text = text
    if zones is not None:
        new_text = set_zones(new_text, zones)
        if zones:
            expected["zones"] = [dict(z) for z in zones]
        else:
            expected.pop("zones", None)
    for table, key, value in keys:
        new_text = set_key(new_text, table, key, value)
        _set_in(expected, table, key, value)
    try:
        got = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as e:
        raise EditError(f"editing this file's text would break it ({e}); it writes these "
                        "tables in a form the editor does not handle (e.g. inline tables): "
                        "edit by hand") from None
    if got != expected:
        raise EditError("the edit would change more than the calibration (the file uses a "
                        "layout the editor does not handle, e.g. dotted keys or inline "
                        "tables for these sections): edit by hand")
    return new_text, got
