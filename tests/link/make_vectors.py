"""Regenerate vectors_v1.json from an independent reference encoder.

This script does NOT import the product codec: it builds every frame from the
byte layout written in docs/link.md (struct layouts typed out by hand here, a
separate COBS implementation, binascii's CRC). The product codec is then
checked against this file on CPython and on MicroPython (check_vectors.py).

    python tests/link/make_vectors.py > tests/link/vectors_v1.json
"""

import binascii
import json
import struct
import sys

VERSION = 0x10  # protocol 1.0


def cobs(data: bytes) -> bytes:
    # Reference COBS (Cheshire & Baker 1999): split on zeros, 254-byte runs.
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def frame(mtype: int, seq: int, flags: int, body: bytes, ver: int = VERSION) -> bytes:
    raw = bytes([ver, mtype, seq, flags]) + body
    crc = binascii.crc_hqx(raw, 0xFFFF)
    return b"\x00" + cobs(raw + struct.pack(">H", crc)) + b"\x00"


def s(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


GOOD = [
    ("hello", 0x01, 0, 0, struct.pack("<B", 0) + s("0.1.0") + struct.pack("<I", 0x07FF),
     {"proto_minor": 0, "fw_version": "0.1.0", "caps": 0x07FF}),
    ("hello_req", 0x02, 1, 0, struct.pack("<B", 0) + s("ctl 0.1.0"),
     {"proto_minor": 0, "ctl_version": "ctl 0.1.0"}),
    ("heartbeat", 0x03, 255, 0, struct.pack("<I", 123456789), {"uptime_ms": 123456789}),
    ("ack", 0x04, 7, 0, struct.pack("<BB", 5, 0x10), {"ack_seq": 5, "ack_type": 0x10}),
    ("nak", 0x05, 8, 0, struct.pack("<BBB", 6, 0x99, 1),
     {"nak_seq": 6, "nak_type": 0x99, "reason": 1}),
    ("board_id", 0x06, 2, 0, s("sim-0001"), {"board_id": "sim-0001"}),
    ("lamp_set", 0x10, 5, 1, struct.pack("<BH", 50, 1000), {"level": 50, "fade_ms": 1000}),
    ("lamp_set", 0x10, 0, 3, struct.pack("<BH", 0, 0), {"level": 0, "fade_ms": 0}),
    ("lamp_state", 0x11, 9, 0, struct.pack("<BBHBB", 40, 100, 26214, 1, 0),
     {"level": 40, "target": 100, "duty": 26214, "on": 1, "failsafe": 0}),
    ("lamp_get", 0x12, 10, 0, b"", {}),
    ("sensor_report", 0x20, 11, 0, struct.pack("<ffBfffB", 12.5, -3.25, 1, 0.5, 61.0, 1024.75, 1),
     {"lux": 12.5, "temp_c": -3.25, "door": 1, "tilt_deg": 0.5, "power_w": 61.0,
      "energy_wh": 1024.75, "mains": 1}),
    ("digital_inputs", 0x21, 12, 0, struct.pack("<HH", 0x0005, 0x0004),
     {"levels": 5, "changed": 4}),
    ("amp_enable", 0x22, 13, 1, struct.pack("<B", 1), {"on": 1}),
    ("fault_report", 0x23, 14, 0, struct.pack("<HB", 7, 1) + s("link lost"),
     {"code": 7, "active": 1, "detail": "link lost"}),
    ("sensor_get", 0x24, 15, 0, b"", {}),
    ("config_get", 0x30, 16, 0, s("failsafe_level"), {"key": "failsafe_level"}),
    ("config_set", 0x31, 17, 1, s("failsafe_level") + s("80"),
     {"key": "failsafe_level", "value": "80"}),
    ("config_value", 0x32, 18, 0, struct.pack("<B", 0) + s("failsafe_level") + s("80"),
     {"status": 0, "key": "failsafe_level", "value": "80"}),
    ("reboot", 0x3F, 19, 1, struct.pack("<H", 500), {"delay_ms": 500}),
    ("update_begin", 0x40, 20, 1, struct.pack("<BI", 1, 65536) + bytes([32]) + bytes(range(32)),
     {"slot": 1, "size": 65536, "sha256": bytes(range(32)).hex()}),
    ("update_chunk", 0x41, 21, 1, struct.pack("<IH", 4096, 0xBEEF) + bytes(range(0, 200)),
     {"offset": 4096, "crc16": 0xBEEF, "data": bytes(range(0, 200)).hex()}),
    ("update_commit", 0x42, 22, 1, bytes([32]) + b"\xaa" * 32, {"sha256": "aa" * 32}),
    ("update_status", 0x43, 23, 0, struct.pack("<BIB", 2, 4296, 0),
     {"state": 2, "offset": 4296, "code": 0}),
    ("stats", 0x50, 24, 0, struct.pack("<IIIHHHHII", 1000, 998, 3, 1, 2, 0, 4, 21504, 44032),
     {"rx_frames": 1000, "tx_frames": 998, "rx_dropped": 3, "crc_errors": 1,
      "framing_errors": 2, "oversize": 0, "naks_sent": 4, "mem_alloc": 21504, "mem_free": 44032}),
]
BYTES_FIELDS = ("sha256", "data")


def bad() -> list[dict[str, object]]:
    ok = frame(0x10, 5, 1, struct.pack("<BH", 50, 1000))
    flipped = bytearray(ok)
    flipped[7] ^= 0x01  # a body bit (level 50 -> 51): CRC must catch it
    short = b"\x00" + cobs(bytes([VERSION, 0x10, 1])) + b"\x00"  # no room for a CRC
    badcobs = b"\x00\x09\x10\x10\x00"  # code says 8 bytes follow, only 2 do
    huge = b"\x00" + b"\x01" * 400 + b"\x00"  # longer than any legal frame
    return [
        {"name": "crc flipped bit", "hex": bytes(flipped).hex(), "counter": "crc_errors"},
        {"name": "too short", "hex": short.hex(), "counter": "framing_errors"},
        {"name": "cobs overrun", "hex": badcobs.hex(), "counter": "framing_errors"},
        {"name": "oversize", "hex": huge.hex(), "counter": "oversize"},
    ]


def main() -> None:
    good = []
    for name, mtype, seq, flags, body, fields in GOOD:
        good.append({
            "name": name, "hex": frame(mtype, seq, flags, body).hex(), "type": mtype,
            "seq": seq, "flags": flags, "fields": fields,
        })
    doc = {
        "about": "Link v1 test vectors, generated by tests/link/make_vectors.py "
                 "from an independent reference encoder. Fields named in "
                 "bytes_fields are hex strings.",
        "version": VERSION,
        "bytes_fields": list(BYTES_FIELDS),
        "good": good,
        "bad": bad(),
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
