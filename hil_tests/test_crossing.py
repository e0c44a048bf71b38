"""Red-light crossing end to end on the simulated pole: the bundled clip through the camera
task, a zone and a fixed-time plan, violations on MQTT and warnings through ALSA's null
device, respecting the cooldown."""

from __future__ import annotations

import itertools
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from polesim.pole import SAMPLE_VIDEO, SimPole

from hil_tests.capture import Capture
from tests.api.schemas import validate_message

pytestmark = pytest.mark.hil

# The middle of the road in the PETS09 view; people walk into it from both sides.
ZONE = [[300, 190], [560, 175], [640, 300], [600, 420], [420, 330], [300, 290]]
COOLDOWN_S = 2.0


def _red_since(seconds_ago: float) -> dict[str, Any]:
    """A plan that turned red `seconds_ago` (UTC) and stays red for the whole test."""
    now = datetime.now(UTC)
    into_day = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
    return {"red_s": 86000.0, "green_s": 400.0, "offset_s": (into_day - seconds_ago) % 86400}


def _overrides() -> dict[str, Any]:
    return {
        "camera": {"enabled": True, "source": f"file:{SAMPLE_VIDEO}", "on_end": "loop"},
        "zones": [{"name": "mid-road", "kind": "carriageway", "polygon": ZONE}],
        "signal": {"source": "plan", "plan": _red_since(30.0)},
        "crossing": {"enabled": True, "grace_s": 2.0},
        "audio": {"device": "null", "cooldown_s": COOLDOWN_S,
                  "volume_schedule": [["00:00", 80]]},
    }


@pytest.mark.skipif(shutil.which("aplay") is None, reason="needs aplay (alsa-utils)")
def test_violations_reach_mqtt_and_warnings_play_with_cooldown(
    target: Any, broker: Any, firmware_build: Any, tmp_path: Any
) -> None:
    from hil_tests.conftest import make_pole

    p: SimPole = make_pole(target, broker, firmware_build, tmp_path, _overrides())
    cap = Capture("127.0.0.1", broker.port, f"smartpole/v1/{p.pole_id}/#")
    try:
        # One pass of the 12 s clip has four entries into the zone (from ground truth).
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            warn = [m for m in cap.of_kind("events") if m.json()["event"] == "warning_played"]
            if len(warn) >= 2:
                break
            time.sleep(0.5)
        events = [m for m in cap.of_kind("events")]
        viol = [m.json() for m in events if m.json()["event"] == "violation"]
        warn = [m.json() for m in events if m.json()["event"] == "warning_played"]
        assert viol, p.controller_log_tail()
        for v in viol:
            d = v["detail"]
            assert d["zone"] == "mid-road" and d["signal"] == "red"
            assert d["signal_source"] == "plan" and d["red_for_s"] >= 2.0
            assert isinstance(d["track_id"], int) and 0 < d["confidence"] <= 1
        assert warn and all(w["detail"]["ok"] for w in warn)
        # The player ran after the violation it answers, and never inside the cooldown.
        first_v = min(datetime.fromisoformat(v["ts"].replace("Z", "+00:00")) for v in viol)
        ts = sorted(datetime.fromisoformat(w["ts"].replace("Z", "+00:00")) for w in warn)
        assert ts[0] >= first_v
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ts)]
        assert all(g >= COOLDOWN_S - 0.2 for g in gaps), gaps
        assert len(warn) <= len(viol)
        assert all(w["detail"]["clips"] == ["warning_en.wav", "warning_cmn.wav"] for w in warn)
        # Telemetry carries the signal, its source and age, and the zone counters.
        tel = cap.wait_for(lambda m: m.kind == "telemetry"
                           and (m.json()["crossing"] or {}).get("zones", {})
                           .get("mid-road", {}).get("violations", 0) >= 1, 10)
        cx = tel.json()["crossing"]
        assert cx["signal"]["state"] == "red" and cx["signal"]["source"] == "plan"
        assert cx["signal"]["age_s"] is not None and cx["audio"]["played"] >= 1
        for m in list(cap.msgs):
            validate_message(m.topic, m.payload)
    finally:
        cap.close()
        p.stop()
