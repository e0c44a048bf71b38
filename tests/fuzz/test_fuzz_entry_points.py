"""Fuzzing through the real entry points: random and mutated input, only declared errors
allowed, and the rejection counters rise. FUZZ_EXAMPLES sets the count per entry point
(CI: 10,000; `make fuzz`: 200,000)."""

from __future__ import annotations

import contextlib
import json
import os
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_controller.api import commands
from edge_controller.config import ConfigError, parse
from edge_controller.link import codec

N = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
VALID_CMD = json.dumps({"id": "c-1", "issued_at": "2026-11-28T23:10:07.123Z",
                        "body": {"type": "lamp.set", "level": 55, "fade_ms": 100}}).encode()
VALID_FRAME = codec.pack("lamp_set", 5, (50, 1000), codec.F_ACK_REQ)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for op, pos, val in edits:
        if not b:
            b.append(val)
            continue
        i = pos % len(b)
        if op == 0:
            b[i] = val
        elif op == 1:
            del b[i]
        else:
            b.insert(i, val)
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)),
                 max_size=6)


class Counter:
    n = 0


@FUZZ
@given(st.one_of(st.binary(max_size=600), EDITS.map(lambda e: _mutate(VALID_FRAME * 2, e))))
def test_link_decoder(data: bytes) -> None:
    dec = codec.Decoder()
    frames = dec.feed(data)
    for f in frames:
        try:
            f.fields()
        except codec.CodecError:
            Counter.n += 1
    c = dec.counters()
    assert c["frames"] == len(frames)
    if data and not frames and data.strip(b"\x00"):
        # Something arrived and nothing decoded: it must have been counted as dropped
        # (or still be waiting in the buffer for its delimiter).
        assert c["dropped_bytes"] > 0 or data[-1] != 0


@FUZZ
@given(st.one_of(st.binary(max_size=400), EDITS.map(lambda e: _mutate(VALID_CMD, e))))
def test_command_handler(payload: bytes) -> None:
    out = commands.parse(payload, 1.8e9)
    assert isinstance(out, commands.Envelope | commands.Rejection)
    if isinstance(out, commands.Rejection):
        assert out.reason in ("invalid_json", "schema", "expired", "too_large") and out.detail


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                             max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["pole", "link", "mqtt", "camera", "zones", "signal", "crossing",
                        "audio", "detector", "queue", "commands", "telemetry", "bogus"])


@FUZZ
@given(st.dictionaries(KEYS, JSONISH, max_size=5))
def test_config_loader(data: dict[str, object]) -> None:
    try:
        parse(data, "fuzz.toml")
    except ConfigError as e:
        assert e.problems and all(k and r for k, r in e.problems)


@settings(max_examples=max(100, N // 10), deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=300))
def test_config_loader_bytes(raw: bytes) -> None:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    with contextlib.suppress(ConfigError):
        parse(data, "fuzz.toml")


# ---- peripheral adapters: what comes off the RS-485 bus or the screen's line ------------

def _modbus_image() -> st.SearchStrategy[dict[int, int]]:
    from edge_controller.peripherals.config import DEFAULT_PROFILE
    from edge_controller.peripherals.modbus_charger import read_plan

    addrs = [a for start, n in read_plan(DEFAULT_PROFILE) for a in range(start, start + n)]
    return st.fixed_dictionaries({a: st.integers(-5, 0x1_0005) for a in addrs})


@FUZZ
@given(st.one_of(_modbus_image(), st.dictionaries(st.integers(0, 200), st.integers())))
def test_modbus_register_decoder(regs: dict[int, int]) -> None:
    from edge_controller.peripherals.config import DEFAULT_PROFILE
    from edge_controller.peripherals.modbus_charger import ModbusReject, decode

    try:
        status = decode(DEFAULT_PROFILE, regs)
    except ModbusReject as e:
        assert e.args
        return
    assert status is not None


@FUZZ
@given(st.binary(max_size=120))
def test_led_screen_reply_parser(frame: bytes) -> None:
    from edge_controller.peripherals.led_screen import AsciiV1, ScreenReject

    prof = AsciiV1()
    for parse_fn in (prof.parse_status, prof.parse_ack):
        with contextlib.suppress(ScreenReject):
            parse_fn(frame)
