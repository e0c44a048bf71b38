# A/B firmware slots: the state shared by the loader and update.py
# (docs/firmware.md, "Slots").
#
#   ROOT/state.json    {"active", "pending", "trial", "rolled_back", ...}
#   ROOT/a/, ROOT/b/   a slot: *.mpy files + manifest.json (per-file sha256)
#
# Every change of state.json is a write to state.tmp then a rename (atomic
# on LittleFS and POSIX), and state.json names a slot only after its files
# verified, so a power cut at any instant leaves a verified image to boot.
# Like the loader, this module comes from the factory image (it is imported
# before any slot is on sys.path) and an update does not replace it.

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAMES = ("a", "b")
# Loader interface: what a slot image may expect of main/loader/slots (the
# loader imports app.App, hal_*.Hal, update.Updater and update.verify, and
# sets App.upd). A bundle names the version it was built for in its
# manifest ("loader"); update.py refuses any other at commit.
API = 1

ROOT = ""  # slot storage root ("/slots" on the ESP32)
BOOTED: "str | None" = None  # slot running now; None: the factory image
TRIAL_END: "Any" = None  # ticks_ms deadline while on trial, else None
CRASH_AT = ""  # sim tests only: die (SIGKILL) at this named point


def load() -> "dict[str, Any]":
    try:
        with open(ROOT + "/state.json") as f:
            d = json.load(f)
        if isinstance(d, dict):
            return d
    except (OSError, ValueError):
        pass
    return {}


def save(d: "dict[str, Any]") -> None:
    tmp = ROOT + "/state.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(d))
    os.rename(tmp, ROOT + "/state.json")


def crash(point: str) -> None:
    # Fault injection for the sim's power-cut tests; never on a board.
    if CRASH_AT == point and sys.platform != "esp32":
        print("crash point " + point)
        os.system("kill -9 $PPID")  # the shell's parent: this interpreter
