"""The crossing function's 'cannot see' report: the sans-I/O pieces (detect.conditions,
detect.sight.SightWatch) and the crossing service that publishes them (telemetry
`crossing.sight`, events crossing_degraded / crossing_restored), on the sample clip."""

from __future__ import annotations

import asyncio
from typing import Any

import cv2
import numpy as np
import pytest

from edge_controller.camera.source import Frame
from edge_controller.config import parse
from edge_controller.crossing import service as svc
from edge_controller.crossing.service import CrossingService
from edge_controller.detect.conditions import detector_conditions
from edge_controller.detect.sight import SightState, SightWatch
from tests.api.schemas import validate
from tests.detect.conftest import SAMPLE

ZONE = [[300, 190], [560, 175], [640, 300], [600, 420], [420, 330], [300, 290]]


def test_conditions_from_the_dimming_and_visibility_side() -> None:
    assert detector_conditions("night", 120.0, 0.8) == (c := detector_conditions(
        "night", 120.0, 0.8)) and (c.regime, c.mor_m) == ("night", 120.0)
    assert detector_conditions("dark_day", None, 0.9).regime == "twilight"
    assert detector_conditions("day", 80.0, 0.2).mor_m is None  # unsure: not fed
    assert detector_conditions("unknown", 80.0, None) == detector_conditions(None, None, None)
    assert detector_conditions(None, None, None).regime is None  # the frame decides
    assert detector_conditions("day", float("inf"), 1.0).mor_m is None


def test_watch_raises_changes_and_restores() -> None:
    w = SightWatch(started=0.0, stale_s=10.0)
    ok = SightState(learning=False)
    assert w.check(ok, 1.0, 1.0) == []
    blocked = SightState(ok=False, causes=["blocked"], learning=False, texture_lost=0.9)
    (name, d), = w.check(blocked, 2.0, 2.0)
    assert name == "crossing_degraded" and d["causes"] == ["blocked"] and d["previous"] == []
    assert d["texture_lost"] == 0.9
    assert w.check(blocked, 3.0, 3.0) == []  # no repeat while nothing changes
    both = SightState(ok=False, causes=["blocked", "too_dark"], learning=False)
    (name, d), = w.check(both, 4.0, 4.0)
    assert name == "crossing_degraded" and d["previous"] == ["blocked"]
    (name, d), = w.check(ok, 9.5, 9.5)
    assert name == "crossing_restored" and d == {"previous": ["blocked", "too_dark"],
                                                 "degraded_s": 7.5}
    assert w.report(ok, 10.0).ok


def test_no_frames_is_degraded_and_learning_is_not() -> None:
    w = SightWatch(started=0.0, stale_s=10.0)
    learning = SightState()  # the monitor's state before its reference
    assert w.check(learning, 9.0, None) == []
    (name, d), = w.check(learning, 10.5, None)  # the camera never delivered
    assert name == "crossing_degraded" and d["causes"] == ["no_frames"] and d["learning"]
    (name, _), = w.check(learning, 11.0, 11.0)
    assert name == "crossing_restored"
    r = w.report(learning, 12.0)
    assert r.ok and r.learning and r.age_s is None


def _clip(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SAMPLE))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        assert ok
        out.append(np.asarray(img, np.uint8))
    cap.release()
    return out


class _Model:
    """No inference: these tests are about sight, not people."""

    inference_s = 0.0

    def detect(self, image: np.ndarray) -> np.ndarray:
        return np.zeros((0, 5), np.float32)


def _service(light: Any = None, distances: Any = None) -> tuple[CrossingService, list]:
    cfg = parse({"pole": {"id": "p1"}, "mqtt": {"url": "mqtt://127.0.0.1:1883"},
                 "zones": [{"name": "mid-road", "kind": "carriageway", "polygon": ZONE}],
                 "crossing": {"enabled": True},
                 "detector": {"sight": {"every_frames": 1, "reference_frames": 4,
                                        "reference_spread": 2}}})
    events: list[tuple[str, dict[str, Any]]] = []
    cx = CrossingService(cfg, lambda n, d: events.append((n, d)), None, light=light,
                         distances=distances)
    cx.pipeline.model = _Model()
    return cx, events


def test_service_feeds_conditions_and_reports_a_blocked_camera() -> None:
    fed: list[tuple[str | None, float | None]] = []
    cx, events = _service(light=lambda: ("night", 90.0, 0.9),
                          distances=lambda w, h: [20.0] * 36)
    real = cx.pipeline.set_conditions

    def spy(regime: str | None = None, mor_m: float | None = None) -> None:
        fed.append((regime, mor_m))
        real(regime, mor_m)

    cx.pipeline.set_conditions = spy  # type: ignore[method-assign]
    clip = _clip(40)

    async def run() -> None:
        tasks = [asyncio.create_task(cx.run_detector()),
                 asyncio.create_task(cx.run_violations())]
        try:
            for i, img in enumerate(clip):
                cover = i >= 16  # a bag over the lens from frame 16
                im = np.asarray(cv2.GaussianBlur(img, (0, 0), 35) // 4 + 20, np.uint8) \
                    if cover else img
                cx.submit(Frame(i, i / 10, im))
                for _ in range(200):
                    await asyncio.sleep(0.005)
                    if cx.pipeline.stats.frames_seen > i:
                        break
        finally:
            for t in tasks:
                t.cancel()

    asyncio.run(run())
    assert fed and fed[-1] == ("night", 90.0)
    assert cx.pipeline.enhancer.distances is not None  # from the calibration, on the first frame
    names = [n for n, _ in events]
    assert "crossing_degraded" in names, cx.sight_report()
    deg = dict(events)["crossing_degraded"]
    assert deg["causes"] == ["blocked"], deg
    tel = cx.telemetry()
    s = tel["sight"]
    assert s["ok"] is False and s["causes"] == deg["causes"] and s["regime"] == "night"
    assert s["mor_m"] == 90.0 and s["analyses"] == 40
    validate("telemetry", _telemetry_with(tel))


def test_service_without_frames_reports_no_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svc, "SIGHT_STALE_S", 0.2)
    cx, events = _service()
    cx.sight.stale_s = 0.2

    async def run() -> None:
        task = asyncio.create_task(cx.run_detector())
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(run())
    assert [n for n, _ in events] == ["crossing_degraded"]
    assert events[0][1]["causes"] == ["no_frames"]
    assert cx.telemetry()["sight"]["causes"] == ["no_frames"]


def _telemetry_with(crossing: dict[str, Any]) -> dict[str, Any]:
    from tests.api.test_schemas import TELEMETRY

    return {**TELEMETRY, "crossing": crossing}


def test_a_covered_lens_is_not_learnt_as_the_night_view() -> None:
    """Without a regime from the controller a covered lens (dim, smooth, grainy after
    encoding) looks like night to the frame-judged regime; the night reference must not
    be learnt from it, or the blind pole looks fine (found by hil_tests/test_sight.py)."""
    from edge_controller.detect import DetectionPipeline, DetectorConfig

    cfg = DetectorConfig.model_validate({"sight": {"every_frames": 1, "reference_frames": 4,
                                                   "reference_spread": 1}})
    p = DetectionPipeline(cfg, model=_Model())
    rng = np.random.default_rng(3)
    clip = _clip(30)
    for i, img in enumerate(clip):
        if i >= 10:
            img = np.asarray(np.clip(cv2.GaussianBlur(img, (0, 0), 35) // 4 + 20
                                     + rng.normal(0, 4, img.shape), 0, 255), np.uint8)
        p.process(i, i / 10, img)
    assert p.enhancer.mode == "night"  # what the frame-judged regime makes of it
    assert p.sight.state.causes == ["blocked"], p.sight.state.as_dict()
