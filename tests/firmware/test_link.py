"""Integration tests: the built firmware under MicroPython (-X heapsize=64K)
on one end of a PtyWire, a controller end on the other, the sim panel for
the hardware. Contract: docs/link.md (protocol) and docs/firmware.md."""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from edge_controller.link import codec as lc
from tests.firmware.conftest import Rig, RigFactory


def duty_for(level: int) -> int:
    """firmware/src/lamp.py's logarithmic curve at whole percents (that module
    needs MicroPython's time): the same integer steps."""
    c = level * 100
    if c <= 0:
        return 0
    if c >= 10000:
        return 65535
    e = (c - 100) * 3735 // 100
    f = (e & 0xFFFF) >> 4
    return min(65535, (1311 << (e >> 16)) * (4096 + (f * (2689 + (1407 * f >> 12)) >> 12)) >> 12)


def lamp(rig: Rig) -> dict[str, int]:
    return rig.fw.panel.get()["lamp"]  # type: ignore[no-any-return]


def wait_for(cond: object, timeout: float = 2.0, every: float = 0.02) -> None:
    assert callable(cond)
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(every)


# ---- boot and identity ------------------------------------------------------


def test_boot_sends_hello_and_board_id(rig: Rig) -> None:
    hello = rig.ctl.expect("hello").fields()
    assert hello["proto_minor"] == lc.PROTO_MINOR
    assert hello["fw_version"] == "0.1.0"
    caps = hello["caps"]
    for cap in (lc.CAP_LAMP, lc.CAP_LUX, lc.CAP_TEMP, lc.CAP_DOOR, lc.CAP_TILT, lc.CAP_POWER,
                lc.CAP_DIN, lc.CAP_AMP, lc.CAP_WDT, lc.CAP_FAILSAFE):
        assert caps & cap
    assert not caps & lc.CAP_UPDATE  # not implemented, so not claimed
    assert rig.ctl.expect("board_id").fields()["board_id"] == "sim-00000001"


def test_hello_req_answered_with_request_seq(rig: Rig) -> None:
    rig.ctl.expect("board_id")
    seq = rig.ctl.send("hello_req", (lc.PROTO_MINOR, "test-ctl"))
    assert rig.ctl.reply("hello", seq).fields()["fw_version"] == "0.1.0"
    assert rig.ctl.reply("board_id", seq).fields()["board_id"].startswith("sim-")


# ---- commands, acks, retries ------------------------------------------------


def test_lamp_set_acked_and_fades(rig: Rig) -> None:
    ans = rig.ctl.command("lamp_set", (80, 600))
    assert ans.name == "ack"
    assert ans.fields() == {"ack_seq": ans.seq, "ack_type": lc.msg_id("lamp_set")}
    duties = []
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        duties.append(lamp(rig)["duty_u16"])
        time.sleep(0.03)
    assert duties == sorted(duties), "a fade up never goes down"
    middle = {d for d in duties if 0 < d < duty_for(80)}
    assert len(middle) >= 5, f"expected a gradual fade, saw {sorted(set(duties))}"
    assert duties[-1] == duty_for(80)
    st = rig.ctl.expect("lamp_state", pred=lambda f: f.fields()["level"] == 80).fields()
    assert st == {"level": 80, "target": 80, "duty": duty_for(80), "on": 1, "failsafe": 0}
    seq = rig.ctl.send("lamp_get")
    assert rig.ctl.reply("lamp_state", seq).fields()["level"] == 80


def test_lamp_off_immediately(rig: Rig) -> None:
    assert rig.ctl.command("lamp_set", (40, 0)).name == "ack"
    assert lamp(rig)["duty_u16"] == duty_for(40)
    assert rig.ctl.command("lamp_set", (0, 0)).name == "ack"
    st = rig.ctl.expect("lamp_state", pred=lambda f: f.fields()["on"] == 0).fields()
    assert st["duty"] == 0 and st["level"] == 0
    assert rig.fw.panel.get()["power_w"] == 0.0


def test_command_without_ack_req_runs_silently(rig: Rig) -> None:
    rig.ctl.send("lamp_set", (25, 0))
    wait_for(lambda: lamp(rig)["level"] == 25)
    rig.ctl.expect_none("ack", 0.2)


def test_retry_is_acked_again_but_not_rerun(rig: Rig) -> None:
    seq = rig.ctl.send("lamp_set", (30, 0), lc.F_ACK_REQ)
    assert rig.ctl.expect_answer(seq).name == "ack"
    # Same seq and type, flagged as a retry, but a body that would change the
    # lamp if it were executed again.
    rig.ctl.send("lamp_set", (90, 0), lc.F_ACK_REQ | lc.F_RETRY, seq=seq)
    ans = rig.ctl.expect_answer(seq)
    assert ans.name == "ack" and ans.fields()["ack_type"] == lc.msg_id("lamp_set")
    assert lamp(rig)["level"] == 30
    assert rig.fw.panel.get()["counters"]["dup_acks"] == 1
    # A retry of something never executed (the original was lost) does run.
    seq2 = rig.ctl.next_seq()
    rig.ctl.send("lamp_set", (60, 0), lc.F_ACK_REQ | lc.F_RETRY, seq=seq2)
    assert rig.ctl.expect_answer(seq2).name == "ack"
    assert lamp(rig)["level"] == 60


def test_amp_enable(rig: Rig) -> None:
    assert rig.ctl.command("amp_enable", (1,)).name == "ack"
    assert rig.fw.panel.get()["amp"] == 1
    assert rig.ctl.command("amp_enable", (0,)).name == "ack"
    assert rig.fw.panel.get()["amp"] == 0


def test_ack_round_trip_time(rig: Rig) -> None:
    rig.ctl.expect("board_id")
    rtts = []
    for i in range(200):
        t0 = time.perf_counter()
        ans = rig.ctl.command("lamp_set", (i % 101, 0))
        rtts.append((time.perf_counter() - t0) * 1000)
        assert ans.name == "ack"
    rtts.sort()
    p50 = statistics.median(rtts)
    p95 = rtts[int(len(rtts) * 0.95)]
    print(f"\nack round trip over the pty wire: p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
          f"max {rtts[-1]:.2f} ms (n={len(rtts)})")
    assert p95 < 50


# ---- errors -------------------------------------------------------------------


def nak_for(rig: Rig, seq: int) -> dict[str, int]:
    ans = rig.ctl.expect_answer(seq)
    assert ans.name == "nak", ans
    return ans.fields()


def test_unknown_type_naks_unsupported(rig: Rig) -> None:
    rig.ctl.write(lc.encode_frame(0x7E, 0x51, lc.F_ACK_REQ, b"\x01\x02"))
    assert nak_for(rig, 0x51) == {"nak_seq": 0x51, "nak_type": 0x7E, "reason": lc.NAK_UNSUPPORTED}
    # Known to the catalogue but board-to-controller only.
    seq = rig.ctl.send("stats", (0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert nak_for(rig, seq)["reason"] == lc.NAK_UNSUPPORTED
    # Update transfer: not in this build's caps.
    seq = rig.ctl.send("update_begin", (0, 1024, b"\x00" * 32), lc.F_ACK_REQ)
    assert nak_for(rig, seq)["reason"] == lc.NAK_UNSUPPORTED


def test_malformed_body_naks_malformed(rig: Rig) -> None:
    lamp_set = lc.msg_id("lamp_set")
    rig.ctl.write(lc.encode_frame(lamp_set, 0x52, lc.F_ACK_REQ, b"\x05"))  # too short
    assert nak_for(rig, 0x52) == {"nak_seq": 0x52, "nak_type": lamp_set,
                                  "reason": lc.NAK_MALFORMED}
    rig.ctl.write(lc.encode_frame(lamp_set, 0x53, 0, b"\x05\x00\x00\x09"))  # trailing byte
    assert nak_for(rig, 0x53)["reason"] == lc.NAK_MALFORMED
    cfg = lc.msg_id("config_set")
    rig.ctl.write(lc.encode_frame(cfg, 0x54, 0, b"\x02\xff\xfe\x01a"))  # key not UTF-8
    assert nak_for(rig, 0x54)["reason"] == lc.NAK_MALFORMED
    assert lamp(rig)["level"] == 0


def test_out_of_range_naks_bad_value(rig: Rig) -> None:
    seq = rig.ctl.send("lamp_set", (101, 0), lc.F_ACK_REQ)
    assert nak_for(rig, seq) == {"nak_seq": seq, "nak_type": lc.msg_id("lamp_set"),
                                 "reason": lc.NAK_BAD_VALUE}
    seq = rig.ctl.send("amp_enable", (2,), lc.F_ACK_REQ)
    assert nak_for(rig, seq)["reason"] == lc.NAK_BAD_VALUE
    assert lamp(rig)["level"] == 0 and rig.fw.panel.get()["amp"] == 0


def test_wrong_major_naks_version(rig: Rig) -> None:
    body = bytes([50, 0, 0])
    ver = (lc.PROTO_MAJOR + 1) << 4
    rig.ctl.write(lc.encode_frame(lc.msg_id("lamp_set"), 0x55, lc.F_ACK_REQ, body, ver=ver))
    nak = rig.ctl.expect_answer(0x55)
    assert nak.name == "nak" and nak.ver == lc.VERSION  # answered in our own version
    assert nak.fields()["reason"] == lc.NAK_VERSION
    assert lamp(rig)["level"] == 0
    assert rig.fw.panel.get()["counters"]["version_errors"] == 1


def test_garbage_is_counted_and_link_survives(rig: Rig) -> None:
    rig.ctl.config_set("stats_frames", 10)
    rig.ctl.expect("board_id")
    good = lc.pack("lamp_get", 0x60)
    bad_crc = bytearray(good)
    bad_crc[3] ^= 0x01  # inside the COBS block: CRC check fails
    rig.wire.inject("fw", bytes(bad_crc))
    rig.wire.inject("fw", b"\x00\x03\x00")  # COBS code runs past the block
    rig.wire.inject("fw", b"\x00\x02\x01\x00")  # decodes to fewer bytes than a header
    rig.wire.inject("fw", b"\x00" + b"\x55" * 600 + b"\x00")  # oversize run
    rig.wire.inject("fw", bytes(range(1, 200)))  # line noise, no delimiter...
    for _ in range(12):  # ...swallowed by the next frame's leading 0x00
        seq = rig.ctl.send("lamp_get")
        rig.ctl.reply("lamp_state", seq)
    stats = rig.ctl.expect("stats").fields()
    assert stats["crc_errors"] >= 1
    assert stats["framing_errors"] >= 2
    assert stats["oversize"] >= 1
    assert stats["rx_dropped"] >= 600
    assert stats["rx_frames"] >= 10
    assert stats["mem_alloc"] > 0 and stats["mem_free"] > 0
    counters = rig.fw.panel.get()["counters"]
    assert counters["errors"] == 0  # no handler blew up
    assert rig.ctl.command("lamp_set", (10, 0)).name == "ack"


# ---- fail-safe --------------------------------------------------------------


def test_failsafe_follows_lux_with_hysteresis(make_rig: RigFactory) -> None:
    rig = make_rig({"failsafe_timeout_ms": 400, "failsafe_fade_ms": 0})
    rig.fw.panel.set(lux=5.0)  # night
    assert rig.ctl.command("lamp_set", (30, 0)).name == "ack"
    t0 = time.monotonic()
    fault = rig.ctl.expect("fault_report", timeout=3.0).fields()
    silent = time.monotonic() - t0
    assert fault["code"] == 7 and fault["active"] == 1 and "silent" in fault["detail"]
    assert 0.3 < silent < 1.5
    st = rig.ctl.expect("lamp_state", pred=lambda f: f.fields()["failsafe"] == 1).fields()
    assert st["target"] == 100  # failsafe_level, dark
    wait_for(lambda: lamp(rig)["level"] == 100)
    panel = rig.fw.panel
    panel.set(lux=35.0)  # between lux_on (20) and lux_off (50): no change
    time.sleep(0.3)
    assert lamp(rig)["target"] == 100
    panel.set(lux=60.0)  # bright
    wait_for(lambda: lamp(rig)["level"] == 0)
    panel.set(lux=35.0)
    time.sleep(0.3)
    assert lamp(rig)["level"] == 0
    panel.set(lux=10.0)
    wait_for(lambda: lamp(rig)["level"] == 100)
    assert lamp(rig)["failsafe"] == 1
    # Any valid controller frame ends fail-safe; the level is held.
    rig.ctl.backlog.clear()
    rig.ctl.send("heartbeat", (1,))
    back = rig.ctl.expect("fault_report").fields()
    assert back["code"] == 7 and back["active"] == 0
    st = rig.ctl.expect("lamp_state", pred=lambda f: f.fields()["failsafe"] == 0).fields()
    assert st["level"] == 100 and st["target"] == 100
    panel.set(lux=500.0)  # no longer in charge: daylight changes nothing
    time.sleep(0.2)
    assert lamp(rig)["level"] == 100 and lamp(rig)["failsafe"] == 0
    assert rig.ctl.command("lamp_set", (20, 0)).name == "ack"
    assert lamp(rig)["level"] == 20


def test_failsafe_on_cable_cut(make_rig: RigFactory) -> None:
    rig = make_rig({"failsafe_timeout_ms": 300, "failsafe_fade_ms": 200})
    rig.fw.panel.set(lux=1.0)
    rig.wire.cut(True)
    wait_for(lambda: lamp(rig)["failsafe"] == 1, timeout=3.0)
    wait_for(lambda: lamp(rig)["level"] == 100)
    assert rig.wire.counters()["dropped"] > 0  # heartbeats etc. went nowhere
    rig.wire.cut(False)
    rig.ctl.backlog.clear()
    seq = rig.ctl.send("lamp_get")
    st = rig.ctl.reply("lamp_state", seq).fields()
    assert st["failsafe"] == 0 and st["level"] == 100


def test_failsafe_respects_lamp_max_and_level(make_rig: RigFactory) -> None:
    rig = make_rig({"failsafe_timeout_ms": 300, "failsafe_fade_ms": 0,
                    "failsafe_level": 80, "lamp_max": 60})
    rig.fw.panel.set(lux=0.0)
    wait_for(lambda: lamp(rig)["failsafe"] == 1, timeout=3.0)
    wait_for(lambda: lamp(rig)["level"] == 60)


def test_silence_at_boot_enters_failsafe(make_rig: RigFactory) -> None:
    # A board whose controller never comes up must still light the street.
    rig = make_rig({"failsafe_timeout_ms": 300, "failsafe_fade_ms": 0})
    rig.fw.panel.set(lux=0.0)
    assert rig.ctl.expect("fault_report", timeout=3.0).fields()["active"] == 1


# ---- sensors ------------------------------------------------------------------


def test_sensor_get_reflects_panel(rig: Rig) -> None:
    rig.fw.panel.set(lux=123.5, temp_c=31.25, tilt_deg=3.5, din=0)
    seq = rig.ctl.send("sensor_get")
    rep = rig.ctl.reply("sensor_report", seq).fields()
    assert rep["lux"] == pytest.approx(123.5)
    assert rep["temp_c"] == pytest.approx(31.25)
    assert rep["tilt_deg"] == pytest.approx(3.5)
    assert rep["door"] == 0 and rep["mains"] == 1
    assert rep["power_w"] == 0.0


def test_door_mains_tilt_changes_reported_promptly(rig: Rig) -> None:
    rig.ctl.pump(0.25)  # let the first sensor poll settle the baseline
    for change, check in (
        ({"door": 1}, lambda r: r["door"] == 1),
        ({"mains": 0}, lambda r: r["mains"] == 0),
        ({"tilt_deg": 15.0}, lambda r: r["tilt_deg"] > 14.0),  # past tilt_alarm_deg
        ({"door": 0}, lambda r: r["door"] == 0),
    ):
        rig.ctl.backlog.clear()
        t0 = time.monotonic()
        rig.fw.panel.set(**change)
        rig.ctl.expect("sensor_report", timeout=0.5, pred=lambda f, c=check: c(f.fields()))
        assert time.monotonic() - t0 < 0.5, change


def test_digital_inputs_on_change_and_with_reports(rig: Rig) -> None:
    rig.ctl.pump(0.25)
    rig.fw.panel.set(din=0b0101)
    di = rig.ctl.expect("digital_inputs", timeout=0.5,
                        pred=lambda f: f.fields()["changed"] != 0).fields()
    assert di == {"levels": 0b0101, "changed": 0b0101}
    rig.fw.panel.set(din=0b0100)
    di = rig.ctl.expect("digital_inputs", timeout=0.5,
                        pred=lambda f: f.fields()["changed"] != 0).fields()
    assert di == {"levels": 0b0100, "changed": 0b0001}
    # And a plain copy with the periodic report.
    rig.ctl.expect("sensor_report", timeout=1.5)
    assert rig.ctl.expect("digital_inputs", timeout=0.5).fields()["levels"] == 0b0100


def test_periodic_heartbeat_report_and_power(make_rig: RigFactory) -> None:
    rig = make_rig({"heartbeat_ms": 200, "report_interval_ms": 300})
    assert rig.ctl.command("lamp_set", (50, 0)).name == "ack"
    t = []
    for _ in range(4):
        t.append(time.monotonic())
        hb = rig.ctl.expect("heartbeat", timeout=1.0)
    gaps = [b - a for a, b in itertools.pairwise(t[1:])]
    assert all(0.1 < g < 0.4 for g in gaps), gaps
    assert hb.fields()["uptime_ms"] > 0
    rep = rig.ctl.expect("sensor_report", timeout=1.0).fields()
    # The sim's 60 W luminaire draws in proportion to the duty (log curve: 50 % -> 14 %).
    assert rep["power_w"] == pytest.approx(60.0 * duty_for(50) / 65535)
    e1 = rep["energy_wh"]
    time.sleep(0.5)
    rep2 = rig.ctl.expect("sensor_report", timeout=1.0,
                          pred=lambda f: f.fields()["energy_wh"] > e1).fields()
    assert rep2["energy_wh"] > e1


# ---- settings -------------------------------------------------------------------


def test_config_set_get_round_trip(rig: Rig) -> None:
    rig.ctl.config_set("report_interval_ms", 2500)
    seq = rig.ctl.send("config_get", ("report_interval_ms",))
    assert rig.ctl.reply("config_value", seq).fields() == {
        "status": 0, "key": "report_interval_ms", "value": "2500"}
    seq = rig.ctl.send("config_get", ("no_such_key",))
    assert rig.ctl.reply("config_value", seq).fields()["status"] == 1
    for key, value in (("no_such_key", "1"), ("heartbeat_ms", "fast"), ("heartbeat_ms", "5"),
                       ("lamp_max", "101"), ("failsafe_lux_on", "51")):
        ans = rig.ctl.command("config_set", (key, value))
        assert ans.name == "nak" and ans.fields()["reason"] == lc.NAK_BAD_VALUE, (key, value)


def test_lamp_max_caps_lamp(rig: Rig) -> None:
    assert rig.ctl.command("lamp_set", (90, 0)).name == "ack"
    rig.ctl.config_set("lamp_max", 40)
    assert lamp(rig)["level"] == 40
    assert rig.ctl.command("lamp_set", (100, 0)).name == "ack"  # accepted, capped
    assert lamp(rig) | {"on": 1} == {"level": 40, "target": 40, "duty_u16": duty_for(40),
                                     "on": 1, "failsafe": 0}


def test_settings_persist_across_process_restart(make_rig: RigFactory, tmp_path: object) -> None:
    rig = make_rig({})
    rig.ctl.config_set("heartbeat_ms", 700)
    path = rig.fw.settings_path
    assert path is not None
    rig.fw.stop()
    rig.fw.start()
    seq = rig.ctl.send("config_get", ("heartbeat_ms",))
    assert rig.ctl.reply("config_value", seq).fields()["value"] == "700"


def test_reboot_soft_restarts_app(rig: Rig) -> None:
    rig.ctl.expect("board_id")
    rig.ctl.config_set("heartbeat_ms", 900)
    assert rig.ctl.command("lamp_set", (70, 0)).name == "ack"
    assert rig.ctl.command("reboot", (100,)).name == "ack"
    assert rig.ctl.expect("hello", timeout=2.0).fields()["fw_version"] == "0.1.0"
    rig.ctl.expect("board_id")
    state = rig.fw.panel.get()
    assert state["counters"]["boots"] == 2 and state["resets"] == 1
    assert state["lamp"]["level"] == 0  # outputs restart from off
    assert rig.fw.running  # a soft restart, not an exit
    seq = rig.ctl.send("config_get", ("heartbeat_ms",))
    assert rig.ctl.reply("config_value", seq).fields()["value"] == "900"


# ---- watchdog, panel, memory ------------------------------------------------------


def test_watchdog_fed_while_tasks_alive(make_rig: RigFactory) -> None:
    rig = make_rig({"wdt_timeout_ms": 1000})  # checked every 250 ms
    s0 = rig.fw.panel.get()
    assert s0["wdt_timeout_ms"] == 1000
    time.sleep(0.8)
    s1 = rig.fw.panel.get()
    assert s1["wdt_feeds"] - s0["wdt_feeds"] >= 2
    assert s1["wdt_age_ms"] < 600


@pytest.mark.parametrize("task", ["tick", "rx"])
def test_watchdog_starves_when_a_task_dies(make_rig: RigFactory, task: str) -> None:
    rig = make_rig({"wdt_timeout_ms": 1000})
    time.sleep(0.3)
    assert rig.fw.panel.request({"op": "fault", "kill": task})["ok"]
    feeds = rig.fw.panel.get()["wdt_feeds"]
    time.sleep(1.2)
    s = rig.fw.panel.get()  # the panel task lives on; the board would have reset
    assert s["wdt_feeds"] <= feeds + 1  # at most one check was already under way
    assert s["wdt_age_ms"] > 1000


def test_watchdog_would_bite_on_a_blocked_loop(make_rig: RigFactory) -> None:
    rig = make_rig({"wdt_timeout_ms": 1000})
    time.sleep(0.3)
    assert rig.fw.panel.request({"op": "fault", "hang_ms": 1300}, timeout=3.0)["ok"]
    wait_for(lambda: rig.fw.panel.get()["wdt_bites"] == 1, timeout=1.0)
    assert rig.ctl.command("lamp_set", (1, 0)).name == "ack"  # and it carries on


def test_panel_rejects_bad_requests(rig: Rig) -> None:
    p = rig.fw.panel
    assert p.request_raw(b"{nope\n") == {"ok": False, "error": "bad json"}
    assert not p.request({"op": "explode"})["ok"]
    assert "unknown key" in p.request({"op": "set", "volts": 3})["error"]
    assert not p.request({"op": "set", "door": "open"})["ok"]
    assert not p.request({"op": "set", "door": 2})["ok"]
    assert not p.request({"op": "set", "lux": 5.0, "mains": 7})["ok"]
    assert p.get()["lux"] != 5.0  # a rejected set changes nothing
    assert p.request_raw(b"[1, 2]\n")["ok"] is False
    assert p.request_raw(b"x" * 600 + b"\n")["ok"] is False
    assert not p.request({"op": "fault"})["ok"]
    assert not p.request({"op": "fault", "kill": "panel"})["ok"]
    assert p.get()["ok"]
    assert rig.ctl.command("lamp_set", (5, 0)).name == "ack"


def test_heap_headroom_at_64k(rig: Rig) -> None:
    mem = rig.fw.panel.mem()
    print(f"\nheap at 64K after boot: mem_alloc {mem['mem_alloc']} B, "
          f"mem_free {mem['mem_free']} B")
    assert mem["mem_alloc"] + mem["mem_free"] <= 64 * 1024
    assert mem["mem_free"] > 8 * 1024
