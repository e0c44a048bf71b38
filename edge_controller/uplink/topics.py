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

    def kind_of(self, topic: str) -> tuple[str | None, str | None]:
        """(kind, device_id) of one of this pole's publish topics, (None, None) otherwise;
        kinds as in edge_controller.profiles.base.NativeKind."""
        if not topic.startswith(self.base + "/"):
            return None, None
        rest = topic[len(self.base) + 1:]
        if rest == "cmd/result":
            return "result", None
        if rest in ("state", "birth", "telemetry", "events"):
            return rest, None
        parts = rest.split("/")
        if len(parts) == 3 and parts[0] == "periph" and parts[2] == "status":
            return "periph_status", parts[1]
        return None, None
