"""Tracker, zones, signal, rule, audio policy and player, privacy: unit tests."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_controller.crossing.audio import (
    DEFAULT_CLIPS,
    AlsaPlayer,
    Play,
    Skip,
    WarningPolicy,
    in_window,
    parse_hhmm,
)
from edge_controller.crossing.privacy import blur_people, snapshot_jpeg
from edge_controller.crossing.rules import CrossingRule, RuleParams
from edge_controller.crossing.signal import (
    CameraSignal,
    FixedTimePlan,
    PushedSignal,
    SignalState,
)
from edge_controller.crossing.tracker import Track, Tracker, TrackerParams, iou_matrix
from edge_controller.crossing.zones import Presence, Zone

SQUARE = Zone("road", "crosswalk", ((100, 100), (300, 100), (300, 300), (100, 300)))


def _track(tid: int, foot: tuple[float, float], hits: int = 5) -> Track:
    x, y = foot
    return Track(tid, np.array([x - 10, y - 40, x + 10, y]), 0.9, hits, True, 0.0, (30.0, 0.0))


def _red(since: float, now: float) -> SignalState:
    return SignalState("red", "plan", since, now)


# ---- tracker -------------------------------------------------------------------

def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 50 / 150, 0.0])


def test_tracker_keeps_identity_of_two_walkers_through_a_missed_frame() -> None:
    tr = Tracker()
    ids_a, ids_b = set(), set()
    for f in range(30):
        t = f / 10
        a = [50 + 3 * f, 100, 80 + 3 * f, 180, 0.9]
        b = [400 - 3 * f, 120, 430 - 3 * f, 200, 0.8]
        dets = [a, b] if f != 12 else [a]  # b missed once
        tracks = tr.update(t, np.array(dets))
        for trk in tracks:
            (ids_a if trk.box[0] < 240 and abs(trk.box[1] - 100) < 10 else ids_b).add(trk.id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    # Velocity of a (3 px per 0.1 s to the right) is learnt.
    va = next(t for t in tr.tracks() if t.id in ids_a).velocity
    assert 20 < va[0] < 40


def test_low_score_detections_keep_a_track_but_do_not_start_one() -> None:
    tr = Tracker()
    for f in range(5):
        tr.update(f / 10, np.array([[10 + f, 10, 40 + f, 90, 0.9]]))
    (tid,) = [t.id for t in tr.tracks()]
    for f in range(5, 10):  # occluded: only a weak detection
        tracks = tr.update(f / 10, np.array([[10 + f, 10, 40 + f, 90, 0.3]]))
        assert [t.id for t in tracks] == [tid]
    tr2 = Tracker()
    for f in range(5):
        assert tr2.update(f / 10, np.array([[10, 10, 40, 90, 0.3]])) == []


# ---- zones -----------------------------------------------------------------

def test_presence_hysteresis_on_the_edge() -> None:
    p = Presence(margin_px=6)
    assert p.update(1, SQUARE, (200, 90)) is False  # outside
    assert p.update(1, SQUARE, (200, 103)) is False  # just inside: not yet
    assert p.update(1, SQUARE, (200, 110)) is True  # clearly inside
    assert p.update(1, SQUARE, (200, 97)) is True  # just outside: still in
    assert p.update(1, SQUARE, (200, 90)) is False


def test_a_track_first_seen_on_the_edge_has_not_been_seen_outside() -> None:
    # Born 2 px outside the edge (a person walking into view where the zone meets the
    # frame border): its side is unknown until it is clearly on one, so walking on in is
    # a first sighting inside, not an entry; the detector's pixel of jitter decides nothing.
    p = Presence(margin_px=6)
    assert p.update(1, SQUARE, (200, 98)) is False
    assert (1, "road") not in p.inside
    assert p.update(1, SQUARE, (200, 102)) is True
    assert (1, "road") not in p.inside  # still within the band
    assert p.update(1, SQUARE, (200, 120)) is True
    assert p.inside[(1, "road")] is True
    # Born clearly outside: known to be outside, so walking in is an entry.
    assert p.update(2, SQUARE, (200, 90)) is False
    assert p.inside[(2, "road")] is False
    assert p.update(2, SQUARE, (200, 120)) is True


def test_an_edge_born_track_walking_in_on_red_is_no_violation() -> None:
    def walk(first_y: float) -> list[object]:
        rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
        red = SignalState("red", source="plan", since=0.0, updated=10.0)
        out: list[object] = []
        for k in range(8):
            y = first_y + 5 * k
            tr = Track(7, np.array([185, y - 60, 215, y], float), 0.9, 5, True,
                       10 + k * 0.1, (0.0, 50.0))
            out += rule.step(10 + k * 0.1, k, [tr], red)[0]
        return out

    assert walk(98) == []  # born on the edge
    assert len(walk(85)) == 1  # born clearly outside: the same walk is a violation


def test_two_people_seen_together_are_two_violators_even_when_one_is_lost() -> None:
    # A and B walk in side by side, B a step behind. A enters and is then lost (a dropped
    # detection ends its track); B enters where A was heading. They were in view in the
    # same frames, so B is not A under a new id: two violations.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    red = SignalState("red", source="plan", since=0.0, updated=10.0)
    out = []
    for k in range(14):
        t = 10 + k * 0.1
        ya, yb = 80 + 5 * k, 70 + 5 * k
        tracks = [Track(2, np.array([165, yb - 60, 195, yb], float), 0.9, 5, True, t,
                        (0.0, 50.0))]
        if k < 8:
            tracks.append(Track(1, np.array([135, ya - 60, 165, ya], float), 0.9, 5, True,
                                t, (0.0, 50.0)))
        out += rule.step(t, k, tracks, red)[0]
    assert sorted(v.track_id for v in out) == [1, 2]
    assert rule.duplicates_suppressed == 0


def test_zone_needs_three_points() -> None:
    with pytest.raises(ValueError):
        Zone("z", "crosswalk", ((0, 0), (1, 1)))


# ---- signal ------------------------------------------------------------------

def test_fixed_time_plan_follows_local_time_across_dst() -> None:
    plan = FixedTimePlan(red_s=40, green_s=20, offset_s=0, timezone="Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    # Local 12:00:10 on the day before and the day after the March change: same phase.
    for day in (29, 30):
        t = datetime(2026, 3, day, 12, 0, 10, tzinfo=tz).timestamp()
        s = plan.state(t)
        assert s.colour == "red" and s.since is not None and round(t - s.since) == 10
    t = datetime(2026, 3, 30, 12, 0, 45, tzinfo=tz).timestamp()
    assert plan.state(t).colour == "green"


def test_pushed_signal_keeps_onset_and_goes_stale() -> None:
    s = PushedSignal("mqtt")
    assert not s.state(0).usable(0, 2)
    s.push("red", 100)
    s.push("red", 101)
    st_ = s.state(101)
    assert st_.since == 100 and st_.usable(101.5, 2)
    assert not st_.usable(104, 2)  # stale


def test_camera_signal_classifies_with_hysteresis() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    cam = CameraSignal((40, 40, 20, 20), confirm=3)

    def lamp(bgr: tuple[int, int, int]) -> np.ndarray:
        im = img.copy()
        cv2.circle(im, (50, 50), 8, bgr, -1)
        return im

    red, green = lamp((0, 0, 255)), lamp((0, 255, 0))
    assert cam.classify(red) == "red" and cam.classify(green) == "green"
    assert cam.classify(img) == "unknown"
    for i in range(3):
        s = cam.observe(red, float(i))
    assert s.colour == "red" and s.since == 2.0
    s = cam.observe(green, 3.0)  # one green frame: not confirmed
    assert s.colour == "red"
    for i in range(4, 7):
        s = cam.observe(green, float(i))
    assert s.colour == "green"


# ---- rule --------------------------------------------------------------------

def _walk(rule: CrossingRule, tid: int, ys: list[float], t0: float, sig_since: float,
          colour: str = "red") -> list[str]:
    out = []
    for k, y in enumerate(ys):
        t = t0 + k * 0.1
        sig = SignalState(colour, "plan", sig_since, t)  # type: ignore[arg-type]
        v, _ = rule.step(t, k, [_track(tid, (200, y))], sig)
        out += [x.zone for x in v]
    return out


def test_entry_during_red_after_grace_is_one_violation() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=2.0))
    assert _walk(rule, 1, [60, 70, 80, 90, 110, 130, 150, 170], 10.0, 5.0) == ["road"]
    c = rule.counters_dict(11.0)["road"]
    assert c["violations"] == 1 and c["crossings"] == 1


def test_entry_within_grace_or_during_green_is_not_a_violation() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=2.0))
    assert _walk(rule, 1, [60, 80, 110, 130], 10.0, 9.0) == []  # red for 1 s only
    rule = CrossingRule([SQUARE], RuleParams(grace_s=2.0))
    assert _walk(rule, 2, [60, 80, 110, 130], 10.0, 0.0, "green") == []
    assert rule.counters_dict(11.0)["road"]["crossings"] == 1


def test_people_inside_at_red_onset_or_first_seen_inside_are_not_violators() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    assert _walk(rule, 1, [150, 160, 170, 180], 10.0, 5.0) == []


def test_stale_or_unknown_signal_never_violates() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, max_signal_age_s=2.0))
    out = []
    for k, y in enumerate([60, 80, 110, 130]):
        t = 100 + k * 0.1
        stale = SignalState("red", "mqtt", 0.0, 90.0)  # last reading 10 s old
        v, _ = rule.step(t, k, [_track(1, (200, y))], stale)
        out += v
    assert out == []


def test_leave_and_reenter_is_a_new_crossing_but_not_a_double_count() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    # Back to the kerb for a second, then across again: a new crossing.
    ys = [60, 80, 110, 130, 110, 80, 60, 60, 60, 60, 60, 60, 60, 60, 80, 110, 130]
    assert _walk(rule, 1, ys, 10.0, 5.0) == ["road", "road"]
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    quick = [60, 80, 110, 130, 110, 80, 110, 130]  # out and straight back in: the same one
    assert _walk(rule, 1, quick, 10.0, 5.0) == ["road"]
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    jitter = [60, 80, 110, 130, 97, 110, 130]  # a dip inside the hysteresis band
    assert _walk(rule, 1, jitter, 10.0, 5.0) == ["road"]


def _step(rule: CrossingRule, t: float, tracks: list[Track], since: float = 0.0) -> list:
    v, _ = rule.step(t, round(t * 10), tracks, _red(since, t))
    return v


def test_entry_time_is_when_the_ground_point_crossed_the_edge() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, hysteresis_px=6.0))
    ys = [84, 88, 92, 96, 98, 101, 103, 105, 107]  # edge at y = 100, confirmed at 107
    got = []
    for k, y in enumerate(ys):
        got += _step(rule, 10.0 + k * 0.1, [_track(1, (200, y))])
    (v,) = got
    assert v.t == pytest.approx(10.4 + 0.1 * 2 / 3, abs=1e-6)  # between 98 and 101
    assert v.confirmed_t == pytest.approx(10.8)
    assert v.red_for_s == pytest.approx(v.t)
    d = v.as_dict()
    assert d["t"] < d["confirmed_t"]


def test_entry_across_a_gap_in_the_track_is_its_first_sighting_inside() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    got = _step(rule, 10.0, [_track(1, (200, 90))])
    got += _step(rule, 10.1, [_track(1, (200, 94))])
    got += _step(rule, 11.0, [_track(1, (200, 120))])  # unseen for 0.9 s, then well inside
    (v,) = got
    assert v.t == pytest.approx(11.0)  # no guessing inside the gap


def test_grace_is_judged_on_the_entry_not_the_confirmation() -> None:
    ys = [84, 88, 92, 96, 98, 101, 103, 105, 107]
    for since, expect in ((8.0, 0), (7.9, 1)):  # entry at 10.467 s, grace 2.5 s
        rule = CrossingRule([SQUARE], RuleParams(grace_s=2.5))
        got = []
        for k, y in enumerate(ys):
            got += _step(rule, 10.0 + k * 0.1, [_track(1, (200, y))], since)
        assert len(got) == expect, since


def test_a_broken_track_does_not_violate_twice() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    t = 10.0
    got = []
    for y in (60, 80, 110, 130):  # track 1 violates, then the tracker loses it
        got += _step(rule, t, [_track(1, (200, y))])
        t += 0.1
    t += 0.3
    # The same person picked up as track 2, just outside the zone's far side? No: the
    # detector lost them inside and a new track starts where track 1 was heading.
    for y in (90, 95, 110, 130, 150):
        got += _step(rule, t, [_track(2, (215, y))])
        t += 0.1
    assert [v.track_id for v in got] == [1]
    assert rule.duplicates_suppressed == 1
    assert rule.counters_dict(t)["road"]["violations"] == 1


def test_two_people_side_by_side_are_two_violations() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    got = []
    for k, y in enumerate((60, 80, 110, 130)):
        got += _step(rule, 10.0 + k * 0.1, [_track(1, (160, y)), _track(2, (240, y + 2))])
    assert sorted(v.track_id for v in got) == [1, 2]


def test_someone_standing_on_the_edge_is_not_entering() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    got = []
    for k, y in enumerate((92, 97, 108, 93, 109, 92, 108)):  # jitter across the band
        x = 200.0
        still = Track(1, np.array([x - 10, y - 40, x + 10, y]), 0.9, 9, True, 0.0, (0.0, 1.0))
        got += _step(rule, 10.0 + k * 0.1, [still])
    assert got == []


def test_rule_memory_is_bounded_by_the_people_in_view() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0))
    t = 0.0
    for tid in range(1, 2001):  # 2,000 people cross one after another and leave
        for y in (60, 80, 110, 130, 150):
            _step(rule, t, [_track(tid, (200, y))])
            t += 0.1
        t += 3.0  # gone for longer than the dedupe window
    _step(rule, t, [])
    assert len(rule._seen) == 0 and len(rule.presence.inside) == 0
    assert len(rule._violators) <= 1  # only the current phase's, whose track is gone


def test_tracker_re_identifies_a_person_after_an_occlusion() -> None:
    img = np.full((400, 600, 3), 90, np.uint8)

    def frame(xa: float) -> np.ndarray:
        im = img.copy()
        cv2.rectangle(im, (int(xa), 100), (int(xa) + 30, 200), (0, 0, 220), -1)  # red coat
        cv2.rectangle(im, (420, 120), (450, 220), (220, 120, 0), -1)  # blue, standing
        return im

    tr = Tracker()
    ids = []
    for f in range(40):
        xa = 40 + 4 * f
        dets = [[420, 120, 450, 220, 0.9]]
        if not 15 <= f < 30:  # the red walker is hidden behind a post for 1.5 s
            dets.append([xa, 100, xa + 30, 200, 0.9])
        tracks = tr.update(f / 10, np.array(dets, float), frame(xa))
        ids += [t.id for t in tracks if t.box[0] < 400]
    assert len(set(ids)) == 1, ids


def test_young_tracks_are_not_trusted() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=3))
    sig = _red(0.0, 10.0)
    rule.step(10.0, 0, [_track(1, (200, 60), hits=1)], sig)
    v, _ = rule.step(10.1, 1, [_track(1, (200, 120), hits=2)], sig)
    assert v == []


# ---- audio -------------------------------------------------------------------

def test_window_wraps_midnight() -> None:
    s, e = parse_hhmm("22:00"), parse_hhmm("06:00")
    assert in_window(parse_hhmm("23:30"), s, e) and in_window(parse_hhmm("05:59"), s, e)
    assert not in_window(parse_hhmm("06:00"), s, e) and not in_window(parse_hhmm("12:00"), s, e)


def test_policy_cooldown_quiet_hours_and_volume() -> None:
    utc = ZoneInfo("UTC")
    pol = WarningPolicy(cooldown_s=10, quiet_hours=("22:00", "06:00"),
                        volume_schedule=(("07:00", 90), ("21:00", 40)))
    noon = datetime(2026, 6, 1, 12, 0, tzinfo=utc).timestamp()
    first = pol.decide("a", noon)
    assert isinstance(first, Play) and first.volume == 90 and first.clips == DEFAULT_CLIPS
    assert pol.decide("a", noon + 5) == Skip("a", "cooldown")
    assert isinstance(pol.decide("b", noon + 5), Play)  # cooldown is per zone
    assert isinstance(pol.decide("a", noon + 10), Play)
    night = datetime(2026, 6, 1, 23, 0, tzinfo=utc).timestamp()
    assert pol.decide("c", night) == Skip("c", "quiet_hours")
    evening = datetime(2026, 6, 1, 21, 30, tzinfo=utc).timestamp()
    p = pol.decide("c", evening)
    assert isinstance(p, Play) and p.volume == 40
    early = datetime(2026, 6, 1, 6, 30, tzinfo=utc).timestamp()
    p = pol.decide("d", early)  # before the first entry: yesterday's last volume
    assert isinstance(p, Play) and p.volume == 40


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 3600), min_size=1, max_size=40))
def test_policy_never_plays_a_zone_twice_within_cooldown(times: list[float]) -> None:
    pol = WarningPolicy(cooldown_s=30)
    played = [t for t in sorted(times) if isinstance(pol.decide("z", 1e9 + t), Play)]
    assert all(b - a >= 30 for a, b in itertools.pairwise(played))


@pytest.mark.skipif(shutil.which("aplay") is None, reason="aplay (alsa-utils) not installed")
def test_player_switches_the_amp_around_real_aplay_on_the_null_device() -> None:
    calls: list[tuple[str, bool]] = []

    async def amp(on: bool) -> bool:
        calls.append(("amp", on))
        return True

    async def go() -> list:
        p = AlsaPlayer("null", amp, amp_settle_s=0.0)
        p.on_started = lambda rec: calls.append(("play", True))
        return await p.play(Play("z", (DEFAULT_CLIPS[0],), 50))

    recs = asyncio.run(go())
    assert [r.ok for r in recs] == [True], recs
    assert calls == [("amp", True), ("play", True), ("amp", False)]
    # ALSA's null device does not pace playback, so check ordering, not duration.
    assert recs[0].ended >= recs[0].started >= recs[0].requested


def test_player_reports_a_failing_device() -> None:
    if shutil.which("aplay") is None:
        pytest.skip("aplay (alsa-utils) not installed")

    async def go() -> list:
        return await AlsaPlayer("no_such_device_xyz").play(Play("z", (DEFAULT_CLIPS[0],), 50))

    recs = asyncio.run(go())
    assert not recs[0].ok and recs[0].detail


# ---- privacy -----------------------------------------------------------------

def _sharp(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_blur_removes_detail_inside_boxes_only() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    out = blur_people(img, np.array([[50, 50, 110, 170, 0.9]]))
    inner = (slice(60, 160), slice(60, 100))
    assert _sharp(out[inner]) < 0.05 * _sharp(img[inner])
    np.testing.assert_array_equal(out[:, 150:], img[:, 150:])


def test_snapshot_respects_its_size_bound() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (576, 768, 3), dtype=np.uint8)  # noise: worst case for JPEG
    jpg = snapshot_jpeg(img, np.zeros((0, 5)), 20_000)
    assert len(jpg) <= 20_000
    assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR) is not None


def test_default_clips_exist_and_are_16bit() -> None:
    import wave

    for p in DEFAULT_CLIPS:
        assert Path(p).is_file()
        with wave.open(str(p)) as w:
            assert w.getsampwidth() == 2 and w.getnchannels() == 1


def test_anonymise_coarsens_people_the_detector_missed() -> None:
    from edge_controller.crossing.privacy import anonymise

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = anonymise(img, np.zeros((0, 5)))  # no detections at all
    assert _sharp(out) < 0.2 * _sharp(img)


def test_tracker_memory_is_bounded_by_the_people_in_view() -> None:
    """1,000 people walk through one after another: the tracker holds only the few in
    view or recently lost, never a record per person it has seen."""
    tr = Tracker()
    tr.update(0.0, np.zeros((0, 5)), np.full((400, 600, 3), 90, np.uint8))  # scene size
    t = 0.1
    held = []
    for person in range(1_000):
        x0 = 40 + (person % 7) * 60
        for f in range(4):  # 4 frames in view, then gone for good
            tr.update(t, np.array([[x0 + 5 * f, 100, x0 + 30 + 5 * f, 200, 0.9]]))
            t += 0.1
        t += 0.2
        held.append(len(tr.ids))
    assert tr._next_id > 500  # it did see a stream of people
    # A track lost inside the scene is kept reid_max_s (5 s); one person every 0.6 s.
    bound = int(TrackerParams().reid_max_s / 0.6) + 2
    assert max(held) <= bound, (max(held), bound)
    assert len(tr.x) == len(tr.P) == len(tr.feat) == len(tr.ids)


def test_a_track_broken_as_its_person_steps_in_still_enters() -> None:
    # Track 1 walks towards the zone and is lost 10 px short of the edge; 0.3 s later a new
    # track 2 starts 14 px inside, where 1 was heading: the same person, whose entry was
    # seen by the two tracks together. One violation, timed between their sightings.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    got = []
    for k, y in enumerate([70, 76, 82, 88, 90]):
        got += _step(rule, 10.0 + 0.1 * k, [_track(1, (200, y))])
    for k, y in enumerate([114, 120, 126]):
        got += _step(rule, 10.7 + 0.1 * k, [_track(2, (200, y))])
    (v,) = got
    assert v.track_id == 2 and 10.4 < v.t < 10.7 and v.confirmed_t == pytest.approx(10.7)
    # ... and the old id, should the tracker bring it back inside, speaks for nobody.
    assert _step(rule, 11.2, [_track(1, (200, 140))]) == []


def test_a_new_track_inside_far_from_any_lost_one_is_a_first_sighting() -> None:
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    got = []
    for k, y in enumerate([70, 76, 82, 88, 90]):
        got += _step(rule, 10.0 + 0.1 * k, [_track(1, (200, y))])
    got += _step(rule, 10.7, [_track(2, (290, 260))])  # the other side of the zone
    got += _step(rule, 12.5, [_track(3, (200, 120))])  # where 1 was heading, 2.1 s later
    assert got == []


def test_a_track_found_inside_after_a_long_gap_did_not_visibly_enter() -> None:
    # Lost 5 px outside (someone standing at the kerb) and re-identified 3 s later inside:
    # the tracker keeps occluded tracks for seconds, and who crossed is not known.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    got = []
    for k in range(5):
        got += _step(rule, 10.0 + 0.1 * k, [_track(1, (200, 92))])
    got += _step(rule, 13.4, [_track(1, (200, 118))])
    got += _step(rule, 13.5, [_track(1, (200, 120))])
    assert got == []
    # Within the gap it still counts (a short occlusion while stepping in).
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    got = []
    for k in range(5):
        got += _step(rule, 10.0 + 0.1 * k, [_track(1, (200, 80 + 3 * k))])
    got += _step(rule, 11.2, [_track(1, (200, 118))])
    assert len(got) == 1


def test_the_signal_is_judged_at_the_entry_time() -> None:
    # Red from 0 to 11.0 s, then green. The ground point crosses the edge at 10.95 s, the
    # band confirms it at 11.1 s (green by then): a violation of that red phase.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=2.0, min_track_hits=1))
    got = []
    for k, y in enumerate([80, 86, 92, 98, 104, 110]):
        t = round(10.6 + 0.1 * k, 3)
        sig = _red(0.0, t) if t < 11.0 else SignalState("green", "plan", 11.0, t)
        got += rule.step(t, k, [_track(1, (200, y))], sig)[0]
    (v,) = got
    assert v.signal == "red" and v.t < 11.0 <= v.confirmed_t
    assert v.red_for_s == pytest.approx(v.t)
    # Entering after green came is not.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=2.0, min_track_hits=1))
    got = []
    for k, y in enumerate([80, 86, 92, 98, 104, 110]):
        t = round(11.1 + 0.1 * k, 3)
        sig = _red(0.0, t) if t < 11.0 else SignalState("green", "plan", 11.0, t)
        if k == 0:
            rule.step(10.9, 0, [], _red(0.0, 10.9))
        got += rule.step(t, k, [_track(1, (200, y))], sig)[0]
    assert got == []


def test_a_box_stretched_over_a_passers_legs_does_not_step_in() -> None:
    # Someone stands 8 px outside; a passer-by's legs in front make their box grow 30 px
    # downwards (head where it was): the ground point is in the zone, the person is not.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    got = []
    for k in range(15):
        bottom = 92.0 if k < 10 else 92.0 + 6 * (k - 9)  # 98 ... 122
        tr = Track(1, np.array([190, 30, 210, bottom]), 0.9, 5, True, 0.0, (0.0, 40.0))
        got += _step(rule, 10.0 + 0.1 * k, [tr])
    assert got == []
    # The same ground points with the whole box moving (a step) are an entry.
    rule = CrossingRule([SQUARE], RuleParams(grace_s=0.0, min_track_hits=1))
    got = []
    for k in range(15):
        bottom = 92.0 if k < 10 else 92.0 + 6 * (k - 9)
        tr = Track(1, np.array([190, bottom - 62, 210, bottom]), 0.9, 5, True, 0.0,
                   (0.0, 40.0))
        got += _step(rule, 10.0 + 0.1 * k, [tr])
    assert len(got) == 1


def test_last_hour_counters_are_trimmed_without_telemetry_and_after_a_clock_step() -> None:
    from edge_controller.crossing.rules import RECENT_MAX, ZoneCounters

    c = ZoneCounters()
    t = 1_000_000.0
    for _ in range(3 * 3600):  # three hours, a crossing a second, telemetry never asks
        t += 1.0
        c.note(c.recent_crossings, t)
    assert len(c.recent_crossings) <= 3601  # the last hour only
    # The clock steps back two hours: what was counted "in the future" is stale.
    t -= 7200.0
    c.note(c.recent_crossings, t)
    assert c.as_dict(t)["crossings_last_hour"] == 1
    # and a burst beyond any real crossing rate stops at the cap
    for k in range(RECENT_MAX + 500):
        c.note(c.recent_violations, t + k * 1e-3)
    assert len(c.recent_violations) == RECENT_MAX
