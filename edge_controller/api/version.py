"""Versions of the pole's MQTT API (docs/api/CHANGELOG.md, docs/mqtt.md#versioning)."""

from __future__ import annotations

from typing import Final

# The API's semantic version: `info.version` of docs/api/asyncapi.yaml (a test checks).
API_VERSION = "1.9.0"
# `v` in every payload: the major version, also the `v1` of the topic root.
PAYLOAD_VERSION: Final = 1
TOPIC_ROOT = "smartpole/v1"
