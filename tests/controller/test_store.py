"""The durable store-and-forward queue."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

from edge_controller.uplink.store import RecordStore


def test_sequence_numbers_are_contiguous_and_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite3"
    s = RecordStore(db)
    assert [s.append("t/events", {"e": i}) for i in range(3)] == [1, 2, 3]
    s.ack(1)
    s.close()
    s = RecordStore(db)
    assert s.append("t/events", {"e": 3}) == 4  # numbering continues after a restart
    recs = s.peek(10)
    assert [r.seq for r in recs] == [2, 3, 4]
    assert json.loads(recs[0].payload) == {"e": 1, "seq": 2}
    assert len(s) == 3


def _writer(path: str, n: int) -> None:
    s = RecordStore(path)
    for i in range(n):
        s.append("t/events", {"i": i})
    os._exit(0)  # no close, no cleanup: like a power cut right after the last commit


def test_records_committed_before_a_hard_exit_are_all_there(tmp_path: Path) -> None:
    db = str(tmp_path / "q.sqlite3")
    p = multiprocessing.get_context("fork").Process(target=_writer, args=(db, 200))
    p.start()
    p.join(30)
    s = RecordStore(db)
    assert [r.seq for r in s.peek(1000)] == list(range(1, 201))


def test_bounds_drop_telemetry_first_and_count(tmp_path: Path) -> None:
    s = RecordStore(tmp_path / "q.sqlite3", max_records=5)
    for i in range(4):
        s.append("t/telemetry", {"i": i}, kind="telemetry")
    s.append("t/events", {"e": 1}, kind="events")
    s.append("t/events", {"e": 2}, kind="events")  # over: the oldest telemetry goes
    kinds = [json.loads(r.payload).get("e") for r in s.peek(10)]
    assert len(s) == 5 and s.dropped == 1 and kinds[-2:] == [1, 2]
    assert [r.seq for r in s.peek(10)] == [2, 3, 4, 5, 6]


def test_events_go_when_there_is_no_telemetry_left(tmp_path: Path) -> None:
    s = RecordStore(tmp_path / "q.sqlite3", max_records=3)
    for i in range(5):
        s.append("t/events", {"e": i}, kind="events")
    assert [r.seq for r in s.peek(10)] == [3, 4, 5] and s.dropped == 2


def test_byte_bound_and_age_bound(tmp_path: Path) -> None:
    s = RecordStore(tmp_path / "q.sqlite3", max_bytes=400, max_age_s=60)
    for i in range(20):
        s.append("t/events", {"pad": "x" * 50, "i": i}, kind="events", now=1000.0)
    assert sum(len(r.payload) for r in s.peek(100)) <= 400 and s.dropped > 0
    before = s.dropped
    s.append("t/events", {"late": 1}, kind="events", now=1000.0 + 61)  # the rest are stale
    assert [json.loads(r.payload).get("late") for r in s.peek(100)] == [1]
    assert s.dropped > before
