"""The telemetry message, assembled from what each part of the pole contributes.

A contributor is a function returning the sections it owns (e.g. the crossing
feature returns {"crossing": {...}}); `build` merges them into one
`api.Telemetry` (validated: a missing core section or an unknown one is a bug,
raised here). A feature that is off contributes nothing and its section is null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_controller.api.messages import Message, Telemetry

Contributor = Callable[[], dict[str, Any]]

SECTIONS = tuple(n for n in Telemetry.model_fields if n not in Message.model_fields
                 and n != "seq")


class TelemetryBuilder:
    def __init__(self) -> None:
        self._parts: list[tuple[frozenset[str], Contributor]] = []

    def contribute(self, sections: tuple[str, ...], fn: Contributor) -> None:
        """`fn()` returns exactly `sections` (each a telemetry section it owns)."""
        unknown = set(sections) - set(SECTIONS)
        taken = set(sections) & {s for owned, _ in self._parts for s in owned}
        if unknown or taken:
            raise ValueError(f"telemetry sections unknown {sorted(unknown)} "
                             f"or already contributed {sorted(taken)}")
        self._parts.append((frozenset(sections), fn))

    def sections(self) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(SECTIONS)
        for owned, fn in self._parts:
            got = fn()
            if set(got) != owned:
                raise ValueError(f"telemetry contributor returned {sorted(got)}, "
                                 f"owns {sorted(owned)}")
            out.update(got)
        return out

    def build(self, pole_id: str, ts: str) -> Telemetry:
        return Telemetry(pole_id=pole_id, ts=ts, **self.sections())
