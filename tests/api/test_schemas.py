"""The v1 MQTT API contract: docs/api/schemas/*.schema.json and docs/api/asyncapi.yaml."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from .schemas import (
    API_DIR,
    SCHEMA_DIR,
    SCHEMA_ID_BASE,
    SCHEMA_NAMES,
    TOPIC_SCHEMAS,
    ValidationError,
    errors,
    load_schema,
    schema_for_topic,
    validate,
    validate_message,
)

MQTT_MD = API_DIR.parent / "mqtt.md"

# Properties that may be absent; every other property of every object schema is required.
OPTIONAL = {
    ("command", "/properties"): {"expires_at", "sig", "pole_id"},  # required when signed
    ("command", "/$defs/lamp_set/properties"): {"fade_ms"},
    ("command", "/$defs/reboot/properties"): {"target"},
    ("command", "/$defs/screen_text/properties"): {"device_id"},
    ("command", "/$defs/dimming_schedule/properties"): {"night_level", "periods"},
    ("birth", "/properties"): {"api_version", "commands",  # since 1.6.0: absent from older poles
                               "command_signatures"},  # since 1.8.0
    ("result", "/properties"): {"duplicate"},  # since 1.8.0: absent from older poles
    ("periph_status", "/properties"): {"shown"},  # since 1.7.0: led_screen only, not older poles
}

# The one object schema allowed to be open (documented in its $comment).
OPEN_OBJECTS = {("event", "/properties/detail")}

# Keywords whose value is a subschema, a list of them, or a map of them.
_SUB = {
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
}
_SUB_LIST = {"oneOf", "anyOf", "allOf", "prefixItems"}
_SUB_MAP = {"properties", "patternProperties", "$defs", "dependentSchemas"}


def walk(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (JSON pointer, subschema) in `schema`, the root included."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key, value in schema.items():
        if key in _SUB:
            yield from walk(value, f"{path}/{key}")
        elif key in _SUB_LIST:
            for i, sub in enumerate(value):
                yield from walk(sub, f"{path}/{key}/{i}")
        elif key in _SUB_MAP:
            for name, sub in value.items():
                yield from walk(sub, f"{path}/{key}/{name}")


def is_object_schema(s: dict[str, Any]) -> bool:
    t = s.get("type")
    types = t if isinstance(t, list) else [t]
    return "object" in types or "properties" in s or "patternProperties" in s


# --------------------------------------------------------------------------- schema files


def test_schema_files_are_exactly_the_v1_messages() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(
        f"{n}.schema.json" for n in SCHEMA_NAMES
    )


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{SCHEMA_ID_BASE}{name}.schema.json"
    assert schema["title"] and schema["description"]
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_object_schema_is_closed_and_requires_its_properties(name: str) -> None:
    checked = 0
    for path, sub in walk(load_schema(name)):
        if not is_object_schema(sub):
            continue
        checked += 1
        if (name, path) in OPEN_OBJECTS:
            assert set(sub) <= {"type", "description", "$comment"}, path
            assert "exception" in sub["$comment"], path
            continue
        assert sub.get("additionalProperties") is False, f"{name}{path}: not closed"
        props = set(sub.get("properties", {}))
        if not props:  # a map: patternProperties only
            assert sub.get("patternProperties"), f"{name}{path}: object without properties"
            assert not sub.get("required"), path
            continue
        optional = OPTIONAL.get((name, f"{path}/properties"), set())
        assert set(sub.get("required", ())) == props - optional, f"{name}{path}: required"
        assert len(sub["required"]) == len(set(sub["required"])), path
    assert checked


def test_open_object_and_optional_tables_point_at_real_schemas() -> None:
    for name, path in OPEN_OBJECTS | set(OPTIONAL):
        pointers = {p for p, _ in walk(load_schema(name))}
        assert path.removesuffix("/properties") in pointers, (name, path)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_local_refs_resolve(name: str) -> None:
    schema = load_schema(name)
    for _, sub in walk(schema):
        ref = sub.get("$ref")
        if ref is None:
            continue
        assert ref.startswith("#/"), ref
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target[part]
        assert isinstance(target, dict)


def test_shared_definitions_are_identical_everywhere() -> None:
    for key in ("v", "pole_id", "timestamp"):
        defs = [load_schema(n)["$defs"][key] for n in SCHEMA_NAMES]
        assert all(d == defs[0] for d in defs), key


def test_patterns_are_anchored_and_compile() -> None:
    for name in SCHEMA_NAMES:
        for path, sub in walk(load_schema(name)):
            patterns = [sub["pattern"]] if "pattern" in sub else []
            patterns += list(sub.get("patternProperties", {}))
            for p in patterns:
                assert p.startswith("^") and p.endswith("$"), f"{name}{path}: {p}"
                re.compile(p)


# --------------------------------------------------------------------------- valid samples

TS = "2026-11-28T23:10:07.123Z"

TELEMETRY: dict[str, Any] = {
    "v": 1,
    "pole_id": "p1",
    "ts": TS,
    "clock": {"synced": True, "source": "adjtimex"},
    "lamp": {"level": 100, "target": 0, "duty": 65535, "on": True, "failsafe": False},
    "sensors": {
        "lux": 0,
        "temp_c": -12.5,
        "door_open": True,
        "tilt_deg": None,
        "power_w": 0.0,
        "energy_wh": 1,
        "mains": False,
    },
    "digital_inputs": 0,
    "link": {
        "up": True,
        "port": "sim",
        "rtt_ms": 0.9,
        **dict.fromkeys(
            [
                "tx_frames",
                "rx_frames",
                "crc_errors",
                "framing_errors",
                "oversize",
                "resyncs",
                "naks_received",
                "retries",
                "timeouts",
            ],
            0,
        ),
        "firmware_stats": dict.fromkeys(
            [
                "rx_frames",
                "tx_frames",
                "rx_dropped",
                "crc_errors",
                "framing_errors",
                "oversize",
                "naks_sent",
                "mem_alloc",
                "mem_free",
            ],
            7,
        ),
    },
    "process": {
        "uptime_s": 0,
        "cpu_percent": 150.0,
        "rss_mb": 70.25,
        "tasks": {
            "link": {"healthy": True, "restarts": 0, "state": "running"},
            "mqtt_uplink2": {"healthy": False, "restarts": 9, "state": "failed"},
        },
    },
    "camera": {
        "source": "/dev/video0",
        "frames": 0,
        "fps": 0,
        "width": 640,
        "height": 480,
        "healthy": False,
    },
    "mqtt": {"protocol": "3.1.1", "reconnects": 0, "commands_received": 3, "commands_rejected": 1,
             "queued": 0, "dropped": 0, "refused": 0},
    "crossing": None,
    "dimming": None,
    "visibility": None,
    "seq": 41,
}

PERIPH: dict[str, Any] = {
    "v": 1, "pole_id": "pole-0042", "ts": TS, "device_id": "charger1", "kind": "ocpp_charger",
    "health": "ok", "reasons": [], "seen_at": TS,
    "charger": {"connector_state": "Charging", "error_code": "NoError", "voltage_v": 230.1,
                "current_a": 15.9, "power_w": 3660.0, "session_energy_wh": 1240.0,
                "meter_total_wh": 845120.0, "transaction_id": 17},
    "screen": None,
}

BASE: dict[str, dict[str, Any]] = {
    "periph_status": PERIPH,
    "state": {"v": 1, "pole_id": "pole-0042", "state": "online", "ts": TS, "reason": "connected"},
    "birth": {
        "v": 1,
        "pole_id": "pole-0042",
        "ts": TS,
        "boot_id": "0123456789abcdef0123456789abcdef",
        "started_at": "2026-11-28T23:10:00Z",
        "controller_version": "0.1.0",
        "firmware": {"version": "1.0.0", "board_id": "sim-0001", "protocol": "1.0"},
        "config_version": "0123456789abcdef",
        "models": {"person-detector": "1.2", "yolo_v8n.int8": "2026.1"},
        "capabilities": ["lamp", "mqtt5"],
    },
    "telemetry": TELEMETRY,
    "event": {
        "v": 1,
        "pole_id": "pole-0042",
        "ts": TS,
        "event": "tilt_alarm",
        "detail": {"tilt_deg": 9.5, "nested": {"anything": [1, None]}},
        "seq": 42,
    },
    "command": {
        "id": "c-1",
        "issued_at": TS,
        "expires_at": "2026-11-28T23:11:07.123Z",
        "pole_id": "pole-0042",
        "sig": "A" * 86 + "==",
        "body": {"type": "lamp.set", "level": 55, "fade_ms": 0},
    },
    "result": {
        "v": 1,
        "pole_id": "pole-0042",
        "ts": TS,
        "id": "c-1",
        "status": "ok",
        "reason": "done",
        "detail": "level 55",
        "seq": 43,
    },
}


def with_(base: str, **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE[base])
    obj.update(changes)
    return obj


VALID: list[tuple[str, dict[str, Any]]] = [
    *BASE.items(),
    ("state", with_("state", state="offline", reason="shutdown")),
    ("state", with_("state", state="offline", reason="connection_lost", ts=None)),
    ("state", with_("state", ts="2026-11-28T23:10:07Z")),
    ("state", with_("state", ts="2026-11-28T23:10:07.123456Z")),
    ("state", with_("state", pole_id="a" * 63)),
    ("state", with_("state", pole_id="0")),
    ("birth", with_("birth", firmware=None, models={}, capabilities=[])),
    (
        "birth",
        with_(
            "birth",
            capabilities=[
                "lamp",
                "lux",
                "temp",
                "door",
                "tilt",
                "power",
                "din",
                "amp",
                "wdt",
                "update",
                "failsafe",
                "camera",
                "mqtt5",
            ],
        ),
    ),
    (
        "telemetry",
        {**TELEMETRY, "lamp": None, "sensors": None, "digital_inputs": None, "camera": None},
    ),
    (
        "telemetry",
        {
            **TELEMETRY,
            "digital_inputs": 65535,
            "process": {**TELEMETRY["process"], "tasks": {}},
            "mqtt": {**TELEMETRY["mqtt"], "protocol": "5"},
            "link": {**TELEMETRY["link"], "up": False, "rtt_ms": None, "firmware_stats": None},
        },
    ),
    (
        "telemetry",
        {
            **TELEMETRY,
            "sensors": dict.fromkeys(TELEMETRY["sensors"], None)
            | {"door_open": False, "mains": True},
        },
    ),
    ("event", with_("event", event="door_opened", detail={})),
    *[
        ("event", with_("event", event=e))
        for e in (
            "door_closed",
            "tilt_cleared",
            "mains_lost",
            "mains_restored",
            "link_lost",
            "link_restored",
            "failsafe_entered",
            "failsafe_exited",
            "fault_raised",
            "fault_cleared",
            "camera_lost",
            "camera_restored",
            "task_failed",
        )
    ],
    ("command", {"id": "x", "issued_at": TS, "body": {"type": "ping"}}),
    (
        "command",
        {"id": "A.b_c:d-9" + "z" * 55, "issued_at": TS, "body": {"type": "lamp.set", "level": 0}},
    ),
    (
        "command",
        {"id": "r", "issued_at": TS, "body": {"type": "lamp.set", "level": 100, "fade_ms": 65535}},
    ),
    ("command", {"id": "r", "issued_at": TS, "body": {"type": "reboot"}}),
    ("command", {"id": "r", "issued_at": TS, "body": {"type": "reboot", "target": "controller"}}),
    ("result", with_("result", id=None, status="rejected", reason="invalid_json", detail="")),
    ("result", with_("result", status="failed", reason="firmware_nak", detail="nak 2")),
]


@pytest.mark.parametrize(("name", "obj"), VALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VALID)])
def test_valid_sample(name: str, obj: dict[str, Any]) -> None:
    assert errors(name, obj) == []
    # What a pole puts on the wire survives a JSON round trip unchanged.
    validate(name, json.loads(json.dumps(obj)))


def test_every_schema_has_valid_samples() -> None:
    assert {n for n, _ in VALID} == set(SCHEMA_NAMES)


# --------------------------------------------------------------------------- invalid samples

DROP = object()


def mutate(name: str, path: str, value: Any = DROP) -> dict[str, Any]:
    """BASE[name] with the key at dotted `path` replaced by `value` (or removed)."""
    obj = copy.deepcopy(BASE[name])
    *parents, last = path.split(".")
    cur = obj
    for key in parents:
        cur = cur[key]
    if value is DROP:
        del cur[last]
    else:
        cur[last] = value
    return obj


INVALID: list[tuple[str, str, Any]] = [
    # (schema, dotted path, new value or DROP)
    ("periph_status", "health", DROP),
    ("periph_status", "health", "sick"),
    ("periph_status", "kind", "toaster"),
    ("periph_status", "device_id", "Charger 1"),
    ("periph_status", "charger.connector_state", "Exploded"),
    ("periph_status", "charger.extra", 1),
    ("periph_status", "extra", 1),
    ("state", "reason", DROP),
    ("state", "ts", DROP),
    ("state", "extra", 1),
    ("state", "state", "away"),
    ("state", "reason", "shutdown"),  # online must say connected
    ("state", "ts", None),  # only the last-will has no time
    ("state", "v", 2),
    ("state", "v", "1"),
    ("state", "pole_id", "Pole-1"),
    ("state", "pole_id", "-pole"),
    ("state", "pole_id", "a" * 64),
    ("state", "pole_id", ""),
    ("state", "ts", "2026-11-28T23:10:07.123+00:00"),
    ("state", "ts", "2026-11-28 23:10:07.123Z"),
    ("state", "ts", "2026-11-28T23:10:07.1234567Z"),
    ("state", "ts", "2026-11-28"),
    ("state", "ts", 1764371407.123),
    ("birth", "capabilities", DROP),
    ("birth", "hostname", "pole"),
    ("birth", "firmware.extra", "x"),
    ("birth", "firmware.protocol", DROP),
    ("birth", "firmware.protocol", "1"),
    ("birth", "boot_id", "0123456789ABCDEF0123456789ABCDEF"),
    ("birth", "boot_id", "01234567-89ab-cdef-0123-456789abcdef"),
    ("birth", "config_version", "0123456789abcdef0"),
    ("birth", "capabilities", ["lamp", "lamp"]),
    ("birth", "capabilities", ["laser"]),
    ("birth", "models", {"person-detector": 2}),
    ("birth", "models", {"bad name": "1"}),
    ("birth", "started_at", "yesterday"),
    ("telemetry", "camera", DROP),
    ("telemetry", "mqtt.commands_rejected", DROP),
    ("telemetry", "link.firmware_stats.mem_free", DROP),
    ("telemetry", "gps", None),
    ("telemetry", "lamp.brightness", 3),
    ("telemetry", "sensors.humidity", 40),
    ("telemetry", "link.firmware_stats.extra", 0),
    ("telemetry", "process.tasks.link.pid", 12),
    ("telemetry", "process.tasks.Link", {"healthy": True, "restarts": 0, "state": "running"}),
    ("telemetry", "process.tasks.link.state", "sleeping"),
    ("telemetry", "mqtt.protocol", "3"),
    ("telemetry", "mqtt.protocol", 5),
    ("telemetry", "lamp.level", 101),
    ("telemetry", "lamp.target", -1),
    ("telemetry", "lamp.duty", 65536),
    ("telemetry", "lamp.level", 50.5),
    ("telemetry", "lamp.on", 1),
    ("telemetry", "digital_inputs", 65536),
    ("telemetry", "digital_inputs", True),
    ("telemetry", "link.retries", -1),
    ("telemetry", "link.rtt_ms", "4ms"),
    ("telemetry", "process.rss_mb", -0.1),
    ("telemetry", "camera.fps", -1),
    ("telemetry", "clock", None),
    ("telemetry", "clock.synced", "yes"),
    ("telemetry", "sensors.door_open", None),
    ("telemetry", "ts", "2026-11-28T23:10:07.123z"),
    ("event", "detail", DROP),
    ("event", "detail", None),
    ("event", "detail", "door"),
    ("event", "event", "door_ajar"),
    ("event", "severity", "high"),
    ("event", "ts", "2026-11-28T23:10:07,123Z"),
    ("command", "id", DROP),
    ("command", "issued_at", DROP),
    ("command", "body", DROP),
    ("command", "v", 1),
    ("command", "id", ""),
    ("command", "id", "a" * 65),
    ("command", "id", "has space"),
    ("command", "id", "a/b"),
    ("command", "id", 7),
    ("command", "issued_at", "2026-11-28T23:10:07.123"),
    ("command", "expires_at", None),
    ("command", "sig", "not base64!"),
    ("command", "sig", "A" * 88),
    ("command", "body.type", "lamp.toggle"),
    ("command", "body.type", DROP),
    ("command", "body.level", DROP),
    ("command", "body.level", 101),
    ("command", "body.level", "50"),
    ("command", "body.fade_ms", 65536),
    ("command", "body.fade_ms", -1),
    ("command", "body.target", "controller"),  # reboot's field on lamp.set
    ("command", "body.extra", True),
    ("command", "body", {"type": "reboot", "target": "everything"}),
    ("command", "body", {"type": "reboot", "level": 5}),
    ("command", "body", {"type": "ping", "payload": "x"}),
    ("command", "body", []),
    ("result", "id", DROP),
    ("result", "detail", DROP),
    ("result", "status", "error"),
    ("result", "reason", "Link Down"),
    ("result", "reason", ""),
    ("result", "detail", None),
    ("result", "id", 5),
    ("result", "extra", {}),
    ("result", "pole_id", "POLE"),
    ("result", "ts", None),
]


@pytest.mark.parametrize(
    ("name", "path", "value"),
    INVALID,
    ids=[f"{n}-{p}-{'drop' if v is DROP else json.dumps(v)[:20]}" for n, p, v in INVALID],
)
def test_invalid_sample_is_rejected(name: str, path: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        validate(name, mutate(name, path, value))


def test_every_schema_has_invalid_samples_of_each_kind() -> None:
    for name in SCHEMA_NAMES:
        cases = [(p, v) for n, p, v in INVALID if n == name]
        assert any(v is DROP for _, v in cases), f"{name}: no missing-key case"
        assert len(cases) >= 5, name


@pytest.mark.parametrize(
    ("state", "reason", "ts"),
    [
        ("online", "connection_lost", None),
        ("online", "shutdown", TS),
        ("offline", "connected", TS),
        ("offline", "connection_lost", TS),
        ("offline", "shutdown", None),
    ],
)
def test_state_reason_combinations_outside_the_three_kinds(
    state: str, reason: str, ts: Any
) -> None:
    assert errors("state", with_("state", state=state, reason=reason, ts=ts))


def test_non_objects_are_rejected() -> None:
    for name in SCHEMA_NAMES:
        for junk in (None, [], "x", 1):
            assert errors(name, junk), (name, junk)


# --------------------------------------------------------------------------- helpers


def test_load_schema_accepts_file_names_and_rejects_unknown() -> None:
    assert load_schema("telemetry.schema.json") is load_schema("telemetry")
    with pytest.raises(KeyError):
        load_schema("periph")


def test_validate_reports_where() -> None:
    with pytest.raises(ValidationError) as info:
        validate("telemetry", mutate("telemetry", "lamp.level", 101))
    assert list(info.value.absolute_path) == ["lamp", "level"]


def test_schema_for_topic() -> None:
    assert schema_for_topic("smartpole/v1/pole-0042/cmd/result") == ("pole-0042", "result")
    assert schema_for_topic("smartpole/v1/p/events") == ("p", "event")
    assert schema_for_topic("smartpole/v1/p/periph/lamp0/status") == ("p", "periph_status")
    for topic in (
        "smartpole/v2/p/state",
        "smartpole/v1/P/state",
        "smartpole/v1/p/x",
        "smartpole/v1/p/periph/Lamp 0/status",
        "smartpole/v1/p/state/",
    ):
        with pytest.raises(KeyError):
            schema_for_topic(topic)


def test_validate_message() -> None:
    raw = json.dumps(BASE["result"]).encode()
    assert validate_message("smartpole/v1/pole-0042/cmd/result", raw) == BASE["result"]
    assert validate_message("smartpole/v1/pole-0042/cmd", BASE["command"])
    unbound = {k: v for k, v in BASE["command"].items() if k not in ("pole_id", "sig")}
    assert validate_message("smartpole/v1/any-pole/cmd", unbound)
    with pytest.raises(ValidationError, match="does not match topic"):
        validate_message("smartpole/v1/pole-0043/cmd", BASE["command"])
    with pytest.raises(ValidationError, match="dependency of 'sig'"):
        validate("command", {k: v for k, v in BASE["command"].items() if k != "pole_id"})
    with pytest.raises(ValidationError, match="does not match topic"):
        validate_message("smartpole/v1/pole-0043/cmd/result", raw)
    with pytest.raises(json.JSONDecodeError):
        validate_message("smartpole/v1/pole-0042/state", b"{")


# --------------------------------------------------------------------------- asyncapi

# channel id -> (address, schema, pole's action, qos, retain)
CHANNELS = {
    "state": ("smartpole/v1/{pole_id}/state", "state", "send", 1, True),
    "birth": ("smartpole/v1/{pole_id}/birth", "birth", "send", 1, True),
    "telemetry": ("smartpole/v1/{pole_id}/telemetry", "telemetry", "send", 1, False),
    "events": ("smartpole/v1/{pole_id}/events", "event", "send", 1, False),
    "cmd": ("smartpole/v1/{pole_id}/cmd", "command", "receive", 1, False),
    "cmdResult": ("smartpole/v1/{pole_id}/cmd/result", "result", "send", 1, False),
    "periphStatus": ("smartpole/v1/{pole_id}/periph/{device_id}/status", "periph_status",
                     "send", 1, True),
}


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    with (API_DIR / "asyncapi.yaml").open(encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    target: Any = doc
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def message_schema(doc: dict[str, Any], message: dict[str, Any]) -> str:
    ref = message["payload"]["$ref"]
    m = re.fullmatch(r"\./schemas/([a-z_]+)\.schema\.json", ref)
    assert m, ref
    assert (API_DIR / ref).is_file(), ref
    return m[1]


def test_asyncapi_header(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] == "Smartpole pole MQTT API"
    assert asyncapi["info"]["version"] == "1.9.0"
    assert asyncapi["defaultContentType"] == "application/json"
    servers = asyncapi["servers"]
    assert set(servers) == {"mqtt", "mqtts"}
    assert servers["mqtt"]["protocol"] == "mqtt"
    assert servers["mqtts"]["protocol"] == "secure-mqtt"
    for server in servers.values():
        assert server["protocolVersion"] == "5"
        assert "3.1.1" in server["description"]
        will = server["bindings"]["mqtt"]["lastWill"]
        assert (will["topic"], will["qos"], will["retain"]) == (CHANNELS["state"][0], 1, True)


def test_asyncapi_internal_refs_resolve(asyncapi: dict[str, Any]) -> None:
    for ref in refs(asyncapi):
        if ref.startswith("./"):
            assert (API_DIR / ref).is_file(), ref
        else:
            assert isinstance(resolve(asyncapi, ref), dict), ref


def test_asyncapi_channels(asyncapi: dict[str, Any]) -> None:
    channels = asyncapi["channels"]
    assert set(channels) == set(CHANNELS)
    for cid, channel in channels.items():
        params = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert params == set(channel.get("parameters", {})), cid
    for cid, (address, schema, *_) in CHANNELS.items():
        channel = channels[cid]
        assert channel["address"] == address
        (message,) = channel["messages"].values()
        assert message_schema(asyncapi, resolve(asyncapi, message["$ref"])) == schema
        concrete = address.replace("{pole_id}", "p").replace("{device_id}", "dev1")
        assert schema_for_topic(concrete) == ("p", schema)


def test_asyncapi_operations(asyncapi: dict[str, Any]) -> None:
    seen = set()
    for oid, op in asyncapi["operations"].items():
        cid = op["channel"]["$ref"].removeprefix("#/channels/")
        _, _, action, qos, retain = CHANNELS[cid]
        assert op["action"] == action, oid
        mqtt = op["bindings"]["mqtt"]
        assert (mqtt["qos"], mqtt["retain"]) == (qos, retain), oid
        for m in op["messages"]:
            assert m["$ref"].startswith(f"#/channels/{cid}/messages/"), oid
        seen.add(cid)
    assert seen == set(CHANNELS)
    reply = asyncapi["operations"]["receiveCommand"]["reply"]
    assert reply["channel"]["$ref"] == "#/channels/cmdResult"


def asyncapi_examples(doc: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for mid, message in doc["components"]["messages"].items():
        for i, example in enumerate(message["examples"]):
            yield f"{mid}/{example.get('name', i)}", message_schema(doc, message), example


def test_asyncapi_every_message_has_named_examples(asyncapi: dict[str, Any]) -> None:
    for mid, message in asyncapi["components"]["messages"].items():
        names = [e["name"] for e in message["examples"]]
        assert names and len(names) == len(set(names)), mid


def test_asyncapi_examples_validate(asyncapi: dict[str, Any]) -> None:
    checked = set()
    for label, schema, example in asyncapi_examples(asyncapi):
        assert errors(schema, example["payload"]) == [], label
        checked.add(schema)
    assert checked == set(SCHEMA_NAMES)


def test_asyncapi_last_will_matches_state_schema(asyncapi: dict[str, Any]) -> None:
    for server in asyncapi["servers"].values():
        message = server["bindings"]["mqtt"]["lastWill"]["message"]
        will = json.loads(message.replace("{pole_id}", "pole-0042"))
        validate("state", will)
        assert (will["state"], will["reason"], will["ts"]) == ("offline", "connection_lost", None)


# --------------------------------------------------------------------------- mqtt.md


def test_mqtt_md_covers_every_topic() -> None:
    text = MQTT_MD.read_text(encoding="utf-8")
    for suffix in [*TOPIC_SCHEMAS, "periph/<device_id>/status"]:
        assert f"smartpole/v1/<pole_id>/{suffix}" in text, suffix
    assert "$share/" in text
    assert "mosquitto_sub" in text


def test_asyncapi_keys_are_strings(asyncapi: dict[str, Any]) -> None:
    """YAML 1.1 turns bare `on`, `off`, `yes`, `no` keys into booleans: quote them."""

    def keys(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield path, key
                yield from keys(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from keys(value, f"{path}/{i}")

    assert [(p, k) for p, k in keys(asyncapi) if not isinstance(k, str)] == []
