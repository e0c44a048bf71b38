"""Profiles by name: each profile module registers itself when imported.

To add a profile: a module here with a `Profile` subclass, a `ProfileSettings`
subclass for its `[mqtt.<name>]` table and a `register(ProfileSpec(...))` call;
its name in `BUILTIN`; and a field of that name in edge_controller.config's
`MqttSection` (so the table is validated and documented in docs/config.md).
Built-in modules are imported on first use: a pole that speaks only `native`
never loads a translator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_controller.profiles.base import Profile
from edge_controller.profiles.settings import ProfileSettings
from edge_controller.uplink.topics import Topics

NATIVE = "native"

# Where the built-in profiles live, by name.
BUILTIN = {
    "homeassistant": "edge_controller.profiles.homeassistant",
    "thingsboard": "edge_controller.profiles.thingsboard",
    "sparkplug_b": "edge_controller.profiles.sparkplug_b",
    "huawei_iotda": "edge_controller.profiles.huawei_iotda",
}


@dataclass(frozen=True)
class ProfileContext:
    """What a profile knows about the pole when it is made."""

    pole_id: str
    topics: Topics  # the native topics (e.g. state, for availability)


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    settings: type[ProfileSettings]
    create: Callable[[ProfileContext, Any], Profile]  # (context, its settings) -> profile


REGISTERED: dict[str, ProfileSpec] = {}


def register(spec: ProfileSpec) -> None:
    if spec.name in REGISTERED and REGISTERED[spec.name] is not spec:
        raise ValueError(f"profile {spec.name!r} is registered twice")
    REGISTERED[spec.name] = spec


def known() -> list[str]:
    """Every name `[mqtt] profiles` may list."""
    return [NATIVE, *sorted(set(BUILTIN) | set(REGISTERED))]


def spec(name: str) -> ProfileSpec:
    if name not in REGISTERED and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    try:
        return REGISTERED[name]
    except KeyError:
        raise LookupError(f"no profile {name!r} (known: {', '.join(known())})") from None
