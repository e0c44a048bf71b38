"""The commissioning report: JSON for machines, an HTML page for people (with the
anonymised snapshot and the zones), written side by side."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_controller.clock import utc_iso
from edge_controller.version import __version__
from polectl.commission.checks import Check, Commissioning, Status


def overall(checks: list[Check]) -> Status:
    if any(c.status == "fail" for c in checks):
        return "fail"
    if any(c.status == "warn" for c in checks):
        return "warn"
    return "pass"


def report_dict(com: Commissioning, started: str, finished: str) -> dict[str, Any]:
    return {
        "pole_id": com.cfg.pole.id, "result": overall(com.checks), "started_at": started,
        "finished_at": finished, "polectl_version": __version__,
        "config": str(com.config_path), "broker": "{}:{}".format(*com._broker()[:2]),
        "location": {"latitude": com.cfg.pole.latitude, "longitude": com.cfg.pole.longitude},
        "birth": com.birth.payload() if com.birth else None,
        "checks": [asdict(c) for c in com.checks],
        "snapshot": None if com.snapshot is None else {
            "width": com.snapshot.width, "height": com.snapshot.height,
            "people_blurred": com.snapshot.people, "anonymised": True},
        "zones": [{"name": z.name, "kind": z.kind, "polygon": [list(p) for p in z.polygon]}
                  for z in com.cfg.zones],
    }


STATUS_COLOURS = {"pass": "#1b7f3b", "warn": "#b26a00", "fail": "#b3261e", "skip": "#666"}


def render_html(rep: dict[str, Any], snapshot_jpeg: bytes | None) -> str:
    e = html.escape
    rows = []
    for c in rep["checks"]:
        colour = STATUS_COLOURS[c["status"]]
        fix = f"<div class=fix>Fix: {e(c['fix'])}</div>" if c["fix"] else ""
        rows.append(
            f"<tr class='check-{e(c['name'])}'><td><b>{e(c['title'] or c['name'])}</b></td>"
            f"<td class='st' style='background:{colour}'>{e(c['status'].upper())}</td>"
            f"<td>{e(c['summary'])}{fix}</td><td class=num>{c['seconds']}</td></tr>")
    img = ""
    if snapshot_jpeg:
        b64 = base64.b64encode(snapshot_jpeg).decode()
        s = rep["snapshot"]
        img = (f"<h2>Camera view with zones</h2><p>Anonymised on this laptop before saving: "
               f"the whole frame is coarsened and {s['people_blurred']} detected person "
               f"box(es) are blurred.</p><img id=snapshot alt='anonymised snapshot with zones' "
               f"width={s['width']} height={s['height']} src='data:image/jpeg;base64,{b64}'>")
    zones = "".join(f"<li>{e(z['name'])} ({e(z['kind'])}, {len(z['polygon'])} points)</li>"
                    for z in rep["zones"]) or "<li>none</li>"
    b = rep.get("birth") or {}
    fw = b.get("firmware") or {}
    res = rep["result"]
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<title>Commissioning {e(rep['pole_id'])}: {e(res.upper())}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}
table{{border-collapse:collapse;width:100%}} td,th{{border:1px solid #ccc;padding:.4em .6em;
vertical-align:top;text-align:left}} .st{{color:#fff;font-weight:bold;text-align:center}}
.num{{text-align:right}} .fix{{color:#555;margin-top:.3em}} img{{max-width:100%;height:auto;
border:1px solid #999}} .result{{display:inline-block;padding:.2em .8em;color:#fff;
background:{STATUS_COLOURS[res]};border-radius:4px}}
</style></head><body>
<h1>Pole {e(rep['pole_id'])} <span class=result id=result>{e(res.upper())}</span></h1>
<p>Commissioned {e(rep['started_at'])} to {e(rep['finished_at'])} with polectl
{e(rep['polectl_version'])} via broker {e(rep['broker'])}.<br>
Controller {e(str(b.get('controller_version', '?')))}, firmware
{e(str(fw.get('version', '?')))} (board {e(str(fw.get('board_id', '?')))}, link
{e(str(fw.get('protocol', '?')))}), config {e(str(b.get('config_version', '?')))}.</p>
<h2>Checklist</h2>
<table id=checks><tr><th>check</th><th>result</th><th>what we saw</th><th>s</th></tr>
{''.join(rows)}</table>
{img}
<h2>Zones</h2><ul>{zones}</ul>
</body></html>
"""


def write_reports(com: Commissioning, out_dir: Path, started: str) -> dict[str, Path]:
    finished = utc_iso()
    rep = report_dict(com, started, finished)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = out_dir / f"commission-{com.cfg.pole.id}-{stamp}"
    paths = {"json": stem.with_suffix(".json"), "html": stem.with_suffix(".html")}
    if com.snapshot is not None:
        paths["snapshot"] = stem.with_suffix(".jpg")
        paths["snapshot"].write_bytes(com.snapshot.jpeg)
        rep["snapshot"]["file"] = paths["snapshot"].name
    paths["json"].write_text(json.dumps(rep, indent=1) + "\n")
    paths["html"].write_text(render_html(rep, com.snapshot.jpeg if com.snapshot else None))
    return paths
