"""An independent Sparkplug B payload codec for the tests: the protobuf wire format by
hand, with the field numbers of the Tahu `sparkplug_b.proto` (eclipse/tahu,
sparkplug_b/sparkplug_b.proto; Sparkplug 3.0 spec, chapter 6). It uses neither tahutils
nor the protobuf package, so it cannot share a bug with the product's encoder."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

# DataType codes (spec 3.0, 6.4.16)
INT32, INT64, UINT64, DOUBLE, BOOLEAN, STRING = 3, 4, 8, 10, 11, 12


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = v = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7


def _fields(b: bytes) -> list[tuple[int, int, Any]]:
    out, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        out.append((num, wt, v))
    return out


@dataclass
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    is_null: bool = False
    value: Any = None


@dataclass
class Payload:
    timestamp: int | None = None
    seq: int | None = None
    metrics: list[Metric] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        return {m.name: m.value for m in self.metrics if m.name is not None}

    def types(self) -> dict[str, int | None]:
        return {m.name: m.datatype for m in self.metrics if m.name is not None}


def decode(b: bytes) -> Payload:
    p = Payload()
    for num, _wt, v in _fields(b):
        if num == 1:
            p.timestamp = v
        elif num == 3:
            p.seq = v
        elif num == 2:
            p.metrics.append(_metric(v))
    return p


def _metric(b: bytes) -> Metric:
    m = Metric()
    for num, _wt, v in _fields(b):
        if num == 1:
            m.name = v.decode()
        elif num == 2:
            m.alias = v
        elif num == 3:
            m.timestamp = v
        elif num == 4:
            m.datatype = v
        elif num == 7:
            m.is_null = bool(v)
        elif num in (10, 11):  # int_value (uint32), long_value (uint64)
            m.value = v
        elif num == 12:
            m.value = struct.unpack("<f", v)[0]
        elif num == 13:
            m.value = struct.unpack("<d", v)[0]
        elif num == 14:
            m.value = bool(v)
        elif num == 15:
            m.value = v.decode()
    if m.datatype == INT32 and isinstance(m.value, int) and m.value >= 2**31:
        m.value -= 2**32
    return m


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _key(num: int, wt: int) -> bytes:
    return _enc_varint(num << 3 | wt)


def _len(num: int, b: bytes) -> bytes:
    return _key(num, 2) + _enc_varint(len(b)) + b


def encode(ts: int, metrics: list[tuple[str, int, Any]], seq: int | None = None) -> bytes:
    """A command payload as a host application sends it (NCMD/DCMD)."""
    out = _key(1, 0) + _enc_varint(ts)
    for name, dtype, value in metrics:
        m = _len(1, name.encode()) + _key(3, 0) + _enc_varint(ts) + _key(4, 0) + \
            _enc_varint(dtype)
        if dtype == BOOLEAN:
            m += _key(14, 0) + _enc_varint(int(value))
        elif dtype == STRING:
            m += _len(15, value.encode())
        elif dtype == INT32:
            m += _key(10, 0) + _enc_varint(value & 0xFFFFFFFF)
        elif dtype == DOUBLE:
            m += _key(13, 1) + struct.pack("<d", value)
        else:
            m += _key(11, 0) + _enc_varint(value)
        out += _len(2, m)
    if seq is not None:
        out += _key(3, 0) + _enc_varint(seq)
    return out
