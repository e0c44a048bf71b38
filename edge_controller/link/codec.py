# Link codec v1: the single source of the wire format between the edge
# controller (CPython) and the pole I/O board (MicroPython).
#
# This file runs unchanged on both interpreters: the firmware build copies it
# to `linkcodec.py` and compiles it with mpy-cross. Hence: no typing or
# __future__ imports, no dataclasses, no f-strings with `=`, only `struct`
# from the standard library, and annotations that MicroPython parses and
# ignores. The contract it implements is docs/link.md.
#
# Sans-I/O: `Decoder.feed()` takes bytes and returns frames; `pack()` returns
# bytes. Nothing here reads a clock, a port or a file.

import struct

try:
    from binascii import crc_hqx as _crc_hqx  # CPython: C speed
except ImportError:  # MicroPython has no crc_hqx
    _crc_hqx = None  # type: ignore[assignment]

# MicroPython's struct raises ValueError and has no struct.error.
_STRUCT_ERR = getattr(struct, "error", ValueError)

PROTO_MAJOR = 1
PROTO_MINOR = 0
VERSION = (PROTO_MAJOR << 4) | PROTO_MINOR

HEADER_LEN = 4  # version, type, seq, flags
CRC_LEN = 2
MAX_BODY = 240
MAX_RAW = HEADER_LEN + MAX_BODY + CRC_LEN
# COBS adds one byte per 254 plus one; the delimiter is not counted.
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1

# Frame flags.
F_ACK_REQ = 0x01  # sender retries until an ack or nak with this seq arrives
F_RETRY = 0x02  # this frame is a retransmission of the same seq

# NAK reasons (docs/link.md, "NAK reasons").
NAK_UNSUPPORTED = 1
NAK_MALFORMED = 2
NAK_BAD_VALUE = 3
NAK_BUSY = 4
NAK_VERSION = 5
NAK_STATE = 6
NAK_REASONS = ("", "unsupported", "malformed", "bad_value", "busy", "version", "state")

# Capability bits carried by `hello`.
CAP_LAMP = 0x0001
CAP_LUX = 0x0002
CAP_TEMP = 0x0004
CAP_DOOR = 0x0008
CAP_TILT = 0x0010
CAP_POWER = 0x0020
CAP_DIN = 0x0040
CAP_AMP = 0x0080
CAP_WDT = 0x0100
CAP_UPDATE = 0x0200
CAP_FAILSAFE = 0x0400
CAP_NAMES = (
    "lamp", "lux", "temp", "door", "tilt", "power",
    "din", "amp", "wdt", "update", "failsafe",
)

# Message catalogue: (id, name, field codes, field names).
# Field codes: struct codes B b H h I i f (little-endian), plus
#   s  UTF-8 text, u8 length prefix      y  bytes, u8 length prefix
#   r  bytes to the end of the body (last field only)
# Id ranges: 0x00-0x0F link control, 0x10-0x1F lamp, 0x20-0x2F sensors and
# I/O, 0x30-0x3F config and reboot, 0x40-0x4F update transfer, 0x50-0x5F
# diagnostics; 0x60-0x7F reserved for v1.x, 0x80-0xBF peripheral relay,
# 0xC0-0xEF vendor, 0xF0-0xFF test rigs.
MESSAGES = (
    (0x01, "hello", "BsI", ("proto_minor", "fw_version", "caps")),
    (0x02, "hello_req", "Bs", ("proto_minor", "ctl_version")),
    (0x03, "heartbeat", "I", ("uptime_ms",)),
    (0x04, "ack", "BB", ("ack_seq", "ack_type")),
    (0x05, "nak", "BBB", ("nak_seq", "nak_type", "reason")),
    (0x06, "board_id", "s", ("board_id",)),
    (0x10, "lamp_set", "BH", ("level", "fade_ms")),
    (0x11, "lamp_state", "BBHBB", ("level", "target", "duty", "on", "failsafe")),
    (0x12, "lamp_get", "", ()),
    (0x20, "sensor_report", "ffBfffB",
     ("lux", "temp_c", "door", "tilt_deg", "power_w", "energy_wh", "mains")),
    (0x21, "digital_inputs", "HH", ("levels", "changed")),
    (0x22, "amp_enable", "B", ("on",)),
    (0x23, "fault_report", "HBs", ("code", "active", "detail")),
    (0x24, "sensor_get", "", ()),
    (0x30, "config_get", "s", ("key",)),
    (0x31, "config_set", "ss", ("key", "value")),
    (0x32, "config_value", "Bss", ("status", "key", "value")),
    (0x3F, "reboot", "H", ("delay_ms",)),
    (0x40, "update_begin", "BIy", ("slot", "size", "sha256")),
    (0x41, "update_chunk", "IHr", ("offset", "crc16", "data")),
    (0x42, "update_commit", "y", ("sha256",)),
    (0x43, "update_status", "BIB", ("state", "offset", "code")),
    (0x50, "stats", "IIIHHHHII",
     ("rx_frames", "tx_frames", "rx_dropped", "crc_errors", "framing_errors",
      "oversize", "naks_sent", "mem_alloc", "mem_free")),
)


class CodecError(Exception):
    """Base of every error this module raises."""


class EncodeError(CodecError):
    """A value cannot be put on the wire (out of range, too long, unknown name)."""


class UnknownType(CodecError):
    """The frame's type is not in this version's catalogue (answer NAK unsupported)."""


class MalformedBody(CodecError):
    """The body does not match its type's layout (answer NAK malformed)."""


def _find(key: int | str) -> tuple[int, str, str, tuple[str, ...]] | None:
    # Linear scan over ~25 entries: cheaper in RAM than an index dict.
    for m in MESSAGES:
        if m[0] == key or m[1] == key:
            return m
    return None


def msg_id(name: str) -> int:
    m = _find(name)
    if m is None or not isinstance(name, str):
        raise EncodeError("unknown message " + str(name))
    return m[0]


def msg_name(mtype: int) -> str:
    m = _find(mtype)
    if m is None or isinstance(mtype, str):
        return "0x%02x" % mtype
    return m[1]


_NIBBLE = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)


def crc16(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout)."""
    if _crc_hqx is not None:
        return _crc_hqx(data, crc)
    t = _NIBBLE
    for b in data:
        crc = ((crc << 4) & 0xFFFF) ^ t[((crc >> 12) ^ (b >> 4)) & 0x0F]
        crc = ((crc << 4) & 0xFFFF) ^ t[((crc >> 12) ^ b) & 0x0F]
    return crc


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    out = bytearray(len(data) + len(data) // 254 + 2)
    code_pos = 0
    code = 1
    o = 1
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                code_pos = o
                o += 1
                code = 1
    out[code_pos] = code
    return bytes(out[:o])


def cobs_decode(data: bytes | bytearray) -> bytes:
    """Decode one COBS block (no delimiter). Raises MalformedBody if invalid."""
    n = len(data)
    out = bytearray()
    i = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise MalformedBody("zero byte inside COBS block")
        end = i + code
        if end > n:
            raise MalformedBody("COBS code runs past the block")
        out.extend(data[i + 1:end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


class Frame:
    """One decoded frame: header fields and the raw body."""

    def __init__(self, mtype: int, seq: int, flags: int, body: bytes, ver: int = VERSION) -> None:
        self.ver = ver
        self.mtype = mtype
        self.seq = seq
        self.flags = flags
        self.body = body

    @property
    def name(self) -> str:
        return msg_name(self.mtype)

    @property
    def major(self) -> int:
        return self.ver >> 4

    def fields(self) -> dict[str, object]:
        return unpack_body(self.mtype, self.body)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Frame)
            and self.ver == other.ver
            and self.mtype == other.mtype
            and self.seq == other.seq
            and self.flags == other.flags
            and self.body == other.body
        )

    def __repr__(self) -> str:
        return "Frame(%s seq=%d flags=%d body=%s)" % (
            self.name, self.seq, self.flags, self.body.hex())


def _int_range(c: str) -> tuple[int, int]:
    if c == "B":
        return 0, 0xFF
    if c == "H":
        return 0, 0xFFFF
    if c == "I":
        return 0, 0xFFFFFFFF
    if c == "b":
        return -0x80, 0x7F
    if c == "h":
        return -0x8000, 0x7FFF
    return -0x80000000, 0x7FFFFFFF


def _pack_fields(
    codes: str,
    names: tuple[str, ...],
    values: "tuple[object, ...] | list[object] | dict[str, object]",
) -> bytes:
    out = bytearray()
    for i in range(len(codes)):
        c = codes[i]
        if isinstance(values, dict):
            if names[i] not in values:
                raise EncodeError(names[i] + " missing")
            v = values[names[i]]
        else:
            v = values[i]
        if c == "s" or c == "y" or c == "r":
            if c == "s":
                if not isinstance(v, str):
                    raise EncodeError(names[i] + " must be text")
                raw = v.encode()
            elif isinstance(v, (bytes, bytearray)):
                raw = bytes(v)
            else:
                raise EncodeError(names[i] + " must be bytes")
            if c != "r":
                if len(raw) > 255:
                    raise EncodeError(names[i] + " longer than 255 bytes")
                out.append(len(raw))
            out.extend(raw)
        else:
            if c != "f":
                # MicroPython's struct silently truncates; check ranges here.
                lo, hi = _int_range(c)
                if not isinstance(v, int) or v < lo or v > hi:
                    raise EncodeError("%s=%r does not fit %s" % (names[i], v, c))
            try:
                out.extend(struct.pack("<" + c, v))
            except (OverflowError, ValueError, TypeError, _STRUCT_ERR):
                raise EncodeError("%s=%r does not fit %s" % (names[i], v, c))
    return bytes(out)


def unpack_body(mtype: int, body: bytes) -> dict[str, object]:
    m = _find(mtype)
    if m is None or isinstance(mtype, str):
        raise UnknownType("unknown message type 0x%02x" % mtype)
    codes = m[2]
    names = m[3]
    out: dict[str, object] = {}
    pos = 0
    n = len(body)
    for i in range(len(codes)):
        c = codes[i]
        if c == "r":
            out[names[i]] = bytes(body[pos:])
            pos = n
        elif c == "s" or c == "y":
            if pos >= n:
                raise MalformedBody(m[1] + ": body too short")
            ln = body[pos]
            pos += 1
            if pos + ln > n:
                raise MalformedBody(m[1] + ": body too short")
            raw = bytes(body[pos:pos + ln])
            pos += ln
            if c == "s":
                try:
                    out[names[i]] = raw.decode()
                except UnicodeError:
                    raise MalformedBody(m[1] + ": " + names[i] + " is not UTF-8")
            else:
                out[names[i]] = raw
        else:
            sz = struct.calcsize("<" + c)
            if pos + sz > n:
                raise MalformedBody(m[1] + ": body too short")
            out[names[i]] = struct.unpack_from("<" + c, body, pos)[0]
            pos += sz
    if pos != n:
        raise MalformedBody(m[1] + ": %d trailing bytes" % (n - pos))
    return out


def encode_frame(
    mtype: int, seq: int, flags: int, body: bytes | bytearray, ver: int = VERSION
) -> bytes:
    """Wrap a body into a wire frame: 0x00 COBS(header+body+crc) 0x00.

    The leading delimiter costs one byte and guarantees that line noise or a
    torn frame before this one can never swallow it.
    """
    if len(body) > MAX_BODY:
        raise EncodeError("body longer than %d bytes" % MAX_BODY)
    if not (0 <= mtype <= 255 and 0 <= seq <= 255 and 0 <= flags <= 255 and 0 <= ver <= 255):
        raise EncodeError("header field out of range")
    raw = bytearray(HEADER_LEN + len(body) + CRC_LEN)
    raw[0] = ver
    raw[1] = mtype
    raw[2] = seq
    raw[3] = flags
    raw[HEADER_LEN:HEADER_LEN + len(body)] = body
    c = crc16(memoryview(raw)[:HEADER_LEN + len(body)])
    raw[-2] = c >> 8
    raw[-1] = c & 0xFF
    return b"\x00" + cobs_encode(raw) + b"\x00"


def pack(
    msg: int | str,
    seq: int,
    values: "tuple[object, ...] | list[object] | dict[str, object]" = (),
    flags: int = 0,
) -> bytes:
    """Encode a catalogue message by name or id; values as a tuple or dict."""
    m = _find(msg)
    if m is None:
        raise EncodeError("unknown message " + str(msg))
    if len(values) != len(m[3]):
        raise EncodeError("%s takes %d fields" % (m[1], len(m[3])))
    return encode_frame(m[0], seq, flags, _pack_fields(m[2], m[3], values))


class Decoder:
    """Byte stream in, frames out. Never raises on input; counts what it drops.

    A frame ends at 0x00. Anything that fails COBS, length or CRC checks is
    dropped and counted; the next delimiter resynchronises the stream.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED) -> None:
        self.max_encoded = max_encoded
        self._buf = bytearray()
        self._skipping = False  # inside an oversize run: drop until 0x00
        self.frames = 0
        self.crc_errors = 0
        self.framing_errors = 0  # COBS errors and frames too short
        self.oversize = 0
        self.dropped_bytes = 0
        self.resyncs = 0  # times the stream was re-acquired after a drop

    def counters(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "framing_errors": self.framing_errors,
            "oversize": self.oversize,
            "dropped_bytes": self.dropped_bytes,
            "resyncs": self.resyncs,
        }

    def _drop(self, n: int) -> None:
        self.dropped_bytes += n
        self.resyncs += 1

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if not isinstance(data, bytes):
            data = bytes(data)  # MicroPython's bytearray has no find()
        out: list[Frame] = []
        buf = self._buf
        start = 0
        n = len(data)
        while start < n:
            end = data.find(b"\x00", start)
            if end < 0:
                chunk = data[start:]
                start = n
                delim = False
            else:
                chunk = data[start:end]
                start = end + 1
                delim = True
            if self._skipping:
                self.dropped_bytes += len(chunk)
            else:
                buf.extend(chunk)
                if len(buf) > self.max_encoded:
                    self.oversize += 1
                    self.dropped_bytes += len(buf)
                    buf[:] = b""
                    self._skipping = True
            if delim:
                if self._skipping:
                    self._skipping = False
                    self.resyncs += 1
                elif len(buf):
                    f = self._frame(bytes(buf))
                    if f is not None:
                        out.append(f)
                    buf[:] = b""
        return out

    def _frame(self, block: bytes) -> "Frame | None":
        try:
            raw = cobs_decode(block)
        except MalformedBody:
            self.framing_errors += 1
            self._drop(len(block) + 1)
            return None
        if len(raw) < HEADER_LEN + CRC_LEN or len(raw) > MAX_RAW:
            self.framing_errors += 1
            self._drop(len(block) + 1)
            return None
        body_end = len(raw) - CRC_LEN
        if crc16(raw[:body_end]) != (raw[body_end] << 8) | raw[body_end + 1]:
            self.crc_errors += 1
            self._drop(len(block) + 1)
            return None
        self.frames += 1
        return Frame(raw[1], raw[2], raw[3], raw[HEADER_LEN:body_end], raw[0])
