"""The frozen MQTT topic tree (docs/architecture.md, docs/mqtt.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    root: str  # e.g. "smartpole/v1"
    pole_id: str

    @property
    def base(self) -> str:
        return f"{self.root}/{self.pole_id}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def birth(self) -> str:
        return f"{self.base}/birth"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def command(self) -> str:
        return f"{self.base}/cmd"

    @property
    def result(self) -> str:
        return f"{self.base}/cmd/result"

    def periph_status(self, device_id: str) -> str:
        return f"{self.base}/periph/{device_id}/status"
