"""Upstream command envelopes, sans-I/O: bytes and `now` in, Envelope or Rejection out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from edge_controller.api import commands
from edge_controller.api.commands import Envelope, LampSet, Ping, Reboot, Rejection

NOW = datetime(2026, 11, 28, 23, 15, 30, tzinfo=UTC).timestamp()
ISSUED = "2026-11-28T23:15:00.000Z"
EXPIRES = "2026-11-28T23:16:00.000Z"  # NOW + 30 s
SIG = "A" * 86 + "=="


def cmd(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "c-20261128-0001", "issued_at": ISSUED, "body": body, **extra}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def rejected(payload: bytes, now: float = NOW) -> Rejection:
    r = commands.parse(payload, now)
    assert isinstance(r, Rejection), f"accepted: {r!r}"
    return r


# ---- valid commands --------------------------------------------------------------


def test_lamp_set_with_all_fields() -> None:
    env = commands.parse(raw(cmd({"type": "lamp.set", "level": 30, "fade_ms": 2000},
                                 expires_at=EXPIRES, pole_id="pole-0042", sig=SIG)), NOW)
    assert isinstance(env, Envelope)
    assert env.id == "c-20261128-0001"
    assert env.expires_at == EXPIRES and env.sig == SIG and env.pole_id == "pole-0042"
    assert isinstance(env.body, LampSet)
    assert (env.body.level, env.body.fade_ms) == (30, 2000)


@pytest.mark.parametrize("level", [0, 100])
def test_lamp_set_level_bounds_and_default_fade(level: int) -> None:
    env = commands.parse(raw(cmd({"type": "lamp.set", "level": level})), NOW)
    assert isinstance(env, Envelope) and isinstance(env.body, LampSet)
    assert env.body.level == level and env.body.fade_ms == 1000


@pytest.mark.parametrize(("body", "target"), [
    ({"type": "reboot"}, "firmware"),
    ({"type": "reboot", "target": "firmware"}, "firmware"),
    ({"type": "reboot", "target": "controller"}, "controller"),
])
def test_reboot(body: dict[str, Any], target: str) -> None:
    env = commands.parse(raw(cmd(body)), NOW)
    assert isinstance(env, Envelope) and isinstance(env.body, Reboot)
    assert env.body.target == target


@pytest.mark.parametrize("ts", [
    "2026-11-28T23:15:00Z", "2026-11-28T23:15:00.1Z", "2026-11-28T23:15:00.123456Z"])
def test_ping_and_accepted_timestamp_precisions(ts: str) -> None:
    env = commands.parse(raw({"id": "p.1:a_b-c", "issued_at": ts, "body": {"type": "ping"}}), NOW)
    assert isinstance(env, Envelope) and isinstance(env.body, Ping)
    assert env.id == "p.1:a_b-c"


def test_expires_at_exactly_now_is_still_valid() -> None:
    env = commands.parse(raw(cmd({"type": "ping"}, expires_at=EXPIRES)), NOW + 30.0)
    assert isinstance(env, Envelope)


def test_payload_of_exactly_max_size_is_accepted() -> None:
    p = raw(cmd({"type": "ping"}))
    p = p[:-1] + b" " * (commands.MAX_PAYLOAD - len(p)) + b"}"
    assert len(p) == commands.MAX_PAYLOAD
    assert isinstance(commands.parse(p, NOW), Envelope)


# ---- rejections ------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"id": "x",}'])
def test_invalid_json(payload: bytes) -> None:
    r = rejected(payload)
    assert (r.id, r.reason) == (None, "invalid_json")
    assert r.detail


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"ping"', b"null"])
def test_json_that_is_not_an_object_is_invalid_json(payload: bytes) -> None:
    # docs/mqtt.md: "invalid_json: payload is not a UTF-8 JSON object" (flowchart: JSON object?
    # no -> rejected / invalid_json, id null).
    r = rejected(payload)
    assert (r.id, r.reason) == (None, "invalid_json")


def test_json_in_another_encoding_than_utf8_is_invalid_json() -> None:
    # "UTF-8 JSON, one object per message": UTF-16 is not a valid command payload.
    r = rejected(json.dumps(cmd({"type": "ping"})).encode("utf-16"))
    assert (r.id, r.reason) == (None, "invalid_json")


def test_deeply_nested_json_is_rejected_not_raised() -> None:
    # Fits in MAX_PAYLOAD; must end as a Rejection (every command gets a result), not an exception.
    r = rejected(b"[" * 4000 + b"]" * 4000)
    assert (r.id, r.reason) == (None, "invalid_json")
    r = rejected(b'{"id": "deep", "x": ' + b"[" * 4000 + b"]" * 4000 + b"}")
    assert r.reason in ("invalid_json", "schema")


def test_missing_id_is_schema_with_null_id() -> None:
    r = rejected(raw({"issued_at": ISSUED, "body": {"type": "ping"}}))
    assert (r.id, r.reason) == (None, "schema")
    assert "id" in r.detail


@pytest.mark.parametrize("bad_id", [5, None, ["c-1"], {"id": "c-1"}])
def test_non_string_id_is_schema_with_null_id(bad_id: object) -> None:
    r = rejected(raw({"id": bad_id, "issued_at": ISSUED, "body": {"type": "ping"}}))
    assert (r.id, r.reason) == (None, "schema")


@pytest.mark.parametrize("cid", ["", "has space", "ü-nicode", "semi;colon"])
def test_id_not_matching_the_pattern_is_schema_and_echoed(cid: str) -> None:
    r = rejected(raw({"id": cid, "issued_at": ISSUED, "body": {"type": "ping"}}))
    assert (r.id, r.reason) == (cid, "schema")
    assert "id" in r.detail


@pytest.mark.parametrize(("doc", "where"), [
    (cmd({"type": "ping"}, extra=1), "extra"),
    (cmd({"type": "ping", "extra": 1}), "extra"),
    (cmd({"type": "lamp.set", "level": 5, "colour": "red"}), "colour"),
    (cmd({"type": "reboot", "force": True}), "force"),
    (cmd({"type": "ping"}, v=1), "v"),
])
def test_unknown_keys_anywhere_are_schema(doc: dict[str, Any], where: str) -> None:
    r = rejected(raw(doc))
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")
    assert where in r.detail


@pytest.mark.parametrize("body", [
    {"type": "lamp.set", "level": 101},
    {"type": "lamp.set", "level": -1},
    {"type": "lamp.set"},
    {"type": "lamp.set", "level": 50, "fade_ms": 65536},
    {"type": "lamp.set", "level": 50, "fade_ms": -1},
    {"type": "reboot", "target": "everything"},
    {"type": "self_destruct"},
    {"level": 50},
    {},
])
def test_bad_bodies_are_schema(body: dict[str, Any]) -> None:
    r = rejected(raw(cmd(body)))
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")
    assert r.detail.startswith("body")


@pytest.mark.parametrize("body", [
    {"type": "lamp.set", "level": "50"},
    {"type": "lamp.set", "level": 50.0},
    {"type": "lamp.set", "level": 50.5},
    {"type": "lamp.set", "level": True},
    {"type": "lamp.set", "level": None},
    {"type": "lamp.set", "level": 50, "fade_ms": "1000"},
    {"type": "reboot", "target": 1},
])
def test_wrong_types_are_rejected_strictly(body: dict[str, Any]) -> None:
    r = rejected(raw(cmd(body)))
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")


@pytest.mark.parametrize("body", [None, "ping", ["ping"], 1])
def test_body_not_an_object_is_schema(body: object) -> None:
    r = rejected(raw(cmd(body)))  # type: ignore[arg-type]
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")


@pytest.mark.parametrize("field", ["issued_at", "expires_at"])
@pytest.mark.parametrize("ts", [
    "2026-11-28T23:15:00",  # no Z
    "2026-11-28T23:15:00+00:00",  # offset instead of Z
    "2026-11-28 23:15:00Z",  # space
    "2026-11-28T23:15:00.1234567Z",  # 7 fractional digits
    "2026-11-28",
    "yesterday",
    "2026-02-30T00:00:00Z",  # matches the pattern, not a date
    "2026-11-28T24:00:00Z",
    "2026-13-01T00:00:00Z",
])
def test_bad_timestamps_are_schema(field: str, ts: str) -> None:
    doc = cmd({"type": "ping"}, expires_at=EXPIRES)
    doc[field] = ts
    r = rejected(raw(doc))
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")


def test_issued_at_missing_is_schema() -> None:
    r = rejected(raw({"id": "c-9", "body": {"type": "ping"}}))
    assert (r.id, r.reason) == ("c-9", "schema")
    assert "issued_at" in r.detail


def test_expired_command_is_rejected_with_its_id() -> None:
    r = rejected(raw(cmd({"type": "lamp.set", "level": 10}, expires_at=EXPIRES)), NOW + 30.001)
    assert (r.id, r.reason) == ("c-20261128-0001", "expired")
    assert EXPIRES in r.detail


def test_expiry_is_judged_against_now_not_the_wall_clock() -> None:
    doc = cmd({"type": "ping"}, expires_at="2001-01-01T00:00:00Z")
    doc["issued_at"] = "2001-01-01T00:00:00Z"
    past = datetime(2000, 12, 31, tzinfo=UTC).timestamp()
    assert isinstance(commands.parse(raw(doc), past), Envelope)
    assert rejected(raw(doc), past + 2 * 86400).reason == "expired"


def test_too_large_payload_is_rejected_before_parsing() -> None:
    p = raw(cmd({"type": "ping"}))
    p = p[:-1] + b" " * (commands.MAX_PAYLOAD + 1 - len(p)) + b"}"
    assert len(p) == commands.MAX_PAYLOAD + 1
    r = rejected(p)
    assert (r.id, r.reason) == (None, "too_large")
    assert str(commands.MAX_PAYLOAD) in r.detail


@pytest.mark.parametrize("extra", [
    {"sig": "not-a-signature"},  # command.schema.json: ^[A-Za-z0-9+/]{86}==$
    {"sig": None},  # schema: a string when present
    {"expires_at": None},  # schema: a timestamp string when present
    {"pole_id": None},
    {"pole_id": "Pole_42"},  # the pole id pattern
])
def test_optional_fields_follow_the_schema_when_present(extra: dict[str, Any]) -> None:
    # docs/mqtt.md: "Poles are strict about commands"; command.schema.json is normative.
    r = rejected(raw(cmd({"type": "ping"}, **extra)))
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")


@pytest.mark.parametrize(("extra", "missing"), [
    ({"pole_id": "pole-0042"}, "expires_at"),
    ({"expires_at": EXPIRES}, "pole_id"),
    ({}, "expires_at and pole_id"),
])
def test_a_signed_command_must_carry_its_deadline_and_pole(extra: dict[str, Any],
                                                          missing: str) -> None:
    # Since 1.8.0 (command.schema.json dependentRequired): a signature binds both.
    r = rejected(raw(cmd({"type": "ping"}, sig=SIG, **extra)))
    assert (r.id, r.reason) == ("c-20261128-0001", "schema")
    assert f"a signed command must carry {missing}" in r.detail
    # Unsigned commands keep them optional (1.x compatibility).
    assert isinstance(commands.parse(raw(cmd({"type": "ping"}, **extra)), NOW), Envelope)
