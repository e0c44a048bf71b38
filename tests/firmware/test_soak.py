"""Heap soak: drive the firmware (-X heapsize=64K) with a realistic traffic
mix and check that its heap does not grow.

The firmware sends `stats` after every 1,000 received frames, with
gc.mem_alloc() measured right after gc.collect(). After a warm-up of two
reports, every report must stay within warm-up max + 512 bytes.

    SOAK_FRAMES=100000 pytest -s tests/firmware/test_soak.py    (make soak)
"""

from __future__ import annotations

import os
import statistics
import time

from edge_controller.link import codec as lc
from tests.firmware.conftest import RigFactory

WARMUP_REPORTS = 2
SLACK_BYTES = 512
WINDOW = 8  # frames in flight: enough to keep the firmware busy, like a real controller

# One round of the mix: (message, values, flags, reply it must get).
MIX: tuple[tuple[str, tuple[object, ...], int, str | None], ...] = (
    ("lamp_set", (0, 0), lc.F_ACK_REQ, "ack"),
    ("heartbeat", (0,), 0, None),
    ("sensor_get", (), 0, "sensor_report"),
    ("lamp_set", (0, 200), lc.F_ACK_REQ, "ack"),
    ("lamp_get", (), 0, "lamp_state"),
    ("heartbeat", (0,), 0, None),
    ("config_get", ("heartbeat_ms",), 0, "config_value"),
    ("amp_enable", (1,), lc.F_ACK_REQ, "ack"),
    ("sensor_get", (), 0, "sensor_report"),
    ("lamp_get", (), 0, "lamp_state"),
)


def reply_key(f: lc.Frame) -> tuple[str, int] | None:
    if f.name == "ack":
        return "ack", int(f.fields()["ack_seq"])
    if f.name in ("sensor_report", "lamp_state", "config_value"):
        return f.name, f.seq
    return None


def test_heap_soak(make_rig: RigFactory) -> None:
    n_frames = int(os.environ.get("SOAK_FRAMES", "5000"))
    n_reports = n_frames // 1000
    assert n_reports > WARMUP_REPORTS, "SOAK_FRAMES must allow warm-up plus checked reports"
    rig = make_rig(heap="64K")
    ctl = rig.ctl
    ctl.expect("board_id")
    reports: list[dict[str, int]] = []
    pending: dict[tuple[str, int], float] = {}
    ack_rtts: list[float] = []
    sent = 0
    garbage = 0

    def absorb(timeout: float) -> None:
        for f in ctl.read(timeout):
            if f.name == "stats":
                reports.append(f.fields())
                continue
            if f.name == "nak":
                raise AssertionError(f"unexpected nak {f.fields()}")
            key = reply_key(f)
            if key is not None and key in pending:
                t0 = pending.pop(key)
                if key[0] == "ack":
                    ack_rtts.append((time.perf_counter() - t0) * 1000)

    t_start = time.perf_counter()
    while sent < n_frames:
        burst = min(WINDOW, n_frames - sent)
        for _ in range(burst):
            name, values, flags, reply = MIX[sent % len(MIX)]
            if name == "lamp_set":
                values = (sent % 101, values[1])
            seq = ctl.next_seq()
            if reply is not None:
                pending[("ack" if reply == "ack" else reply, seq)] = time.perf_counter()
            ctl.write(lc.pack(name, seq, values, flags))
            sent += 1
        if sent % 400 < WINDOW:
            # Line noise between frames: costs the firmware work, never a frame.
            rig.wire.inject("fw", b"\x00\x13\x37\xff\xfe\x00" + os.urandom(20))
            garbage += 1
        deadline = time.monotonic() + 2.0
        while pending:
            assert time.monotonic() < deadline, f"replies missing: {sorted(pending)[:5]}"
            absorb(0.5)
    elapsed = time.perf_counter() - t_start
    deadline = time.monotonic() + 3.0
    while len(reports) < n_reports and time.monotonic() < deadline:
        absorb(0.2)

    mem = [r["mem_alloc"] for r in reports]
    free = [r["mem_free"] for r in reports]
    ack_rtts.sort()
    print(f"\nsoak: {sent} frames in {elapsed:.2f} s = {sent / elapsed:.0f} frames/s "
          f"({garbage} garbage bursts, window {WINDOW})")
    if ack_rtts:
        print(f"ack rtt under load: p50 {statistics.median(ack_rtts):.2f} ms, "
              f"p95 {ack_rtts[int(len(ack_rtts) * 0.95)]:.2f} ms")
    if len(mem) <= 12:
        print(f"stats reports: {len(reports)}; mem_alloc per report: {mem}")
        print(f"mem_free per report: {free}")
    else:
        print(f"stats reports: {len(reports)}; mem_alloc first {mem[:4]} last {mem[-4:]}, "
              f"range {min(mem)}..{max(mem)}; mem_free range {min(free)}..{max(free)}")
    assert len(reports) >= n_reports, f"expected {n_reports} stats reports, got {len(reports)}"
    # Triggered by the 1,000th frame, sent from the next 20 ms tick: frames
    # that arrived in between are already counted.
    for i, r in enumerate(reports[:n_reports]):
        assert 1000 * (i + 1) <= r["rx_frames"] < 1000 * (i + 2), r
    warm = max(mem[:WARMUP_REPORTS])
    print(f"warm-up max {warm} B; limit {warm + SLACK_BYTES} B; "
          f"later max {max(mem[WARMUP_REPORTS:])} B")
    for i, m in enumerate(mem[WARMUP_REPORTS:], start=WARMUP_REPORTS):
        assert m <= warm + SLACK_BYTES, f"report {i}: mem_alloc {m} > {warm} + {SLACK_BYTES}"
    state = rig.fw.panel.get()
    assert state["counters"]["errors"] == 0
    assert state["counters"]["framing_errors"] + state["counters"]["crc_errors"] > 0
    assert rig.fw.running
