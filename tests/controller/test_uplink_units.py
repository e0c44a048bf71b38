"""The parts of the MQTT uplink that need no broker: reconnect backoff and the publish queue."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_controller.config import MqttConfig
from edge_controller.uplink.mqtt import Record, Uplink, backoff_delays
from edge_controller.uplink.store import RecordStore
from edge_controller.uplink.topics import Topics


class Bounds(random.Random):
    """A Random whose uniform() returns one end of the interval and records both ends."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b if self.end == "hi" else a


def test_delays_stay_within_half_lo_and_hi() -> None:
    lo, hi = 0.5, 30.0
    delay = backoff_delays(lo, hi, random.Random(1234))
    for attempt in range(40):
        for _ in range(200):
            d = delay(attempt)
            assert lo / 2 <= d <= hi
            assert d <= max(lo / 2, lo * 2**attempt)


def test_upper_bound_doubles_then_caps_at_hi() -> None:
    rng = Bounds("hi")
    delay = backoff_delays(0.5, 30.0, rng)
    got = [delay(n) for n in range(10)]
    assert got == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert all(a == 0.25 for a, _ in rng.calls)


def test_delays_grow_on_average() -> None:
    delay = backoff_delays(0.5, 30.0, random.Random(7))
    means = [statistics.fmean(delay(n) for _ in range(2000)) for n in range(7)]
    assert all(b > a for a, b in itertools.pairwise(means))
    assert means[-1] > 10 * means[0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    delay = backoff_delays(0.5, 30.0, Bounds("hi"))
    assert delay(10_000) == 30.0


@settings(max_examples=200, derandomize=True)
@given(lo=st.floats(0.001, 60.0), ratio=st.floats(1.0, 100.0), attempt=st.integers(0, 200),
       seed=st.integers(0, 2**32))
def test_delay_bounds_property(lo: float, ratio: float, attempt: int, seed: int) -> None:
    hi = lo * ratio
    d = backoff_delays(lo, hi, random.Random(seed))(attempt)
    assert lo / 2 <= d <= hi


# ---- Uplink.publish ---------------------------------------------------------------------


async def _ignore(_: bytes) -> None:
    return None


def make_uplink(limit: int) -> Uplink:
    return Uplink(MqttConfig(), Topics("smartpole/v1", "pole-0042"), dict, _ignore,
                  RecordStore(":memory:", max_records=limit))


def rec(i: int) -> Record:
    return Record("smartpole/v1/pole-0042/telemetry", {"i": i})


def _queued(up: Uplink) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in up.store.peek(100)]


def test_publish_queue_is_bounded_and_drops_the_oldest() -> None:
    up = make_uplink(3)
    for i in range(5):
        up.publish(rec(i))
    assert up.dropped == 2
    assert [r["i"] for r in _queued(up)] == [2, 3, 4]
    assert [r["seq"] for r in _queued(up)] == [3, 4, 5]  # numbering is never reused


def test_publish_below_the_bound_drops_nothing() -> None:
    up = make_uplink(3)
    for i in range(3):
        up.publish(rec(i))
    assert up.dropped == 0
    assert [r["i"] for r in _queued(up)] == [0, 1, 2]


def test_event_is_stamped_and_goes_through_the_same_queue() -> None:
    up = make_uplink(10)
    up.event("door_opened", {})
    (r,) = up.store.peek(10)
    p: dict[str, Any] = json.loads(r.payload)
    assert r.topic == "smartpole/v1/pole-0042/events" and r.qos == 1
    assert p["v"] == 1 and p["pole_id"] == "pole-0042" and p["event"] == "door_opened"
    assert p["detail"] == {} and p["ts"].endswith("Z")
