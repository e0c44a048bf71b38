"""Fixtures for the update tests: two firmware builds (the factory image and
a newer version), a signing key, signed bundles, and simulated boards with
A/B slot storage wired to a controller over a PtyWire."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from polesim.firmware import SimFirmware
from polesim.wire import PtyWire

from edge_controller.config import LinkConfig
from edge_controller.link.client import LinkClient
from edge_controller.update import bundle as bundles
from edge_controller.update import signing
from edge_controller.update.uploader import UpdateTap
from tests.support import build_firmware

ROOT = Path(__file__).resolve().parents[2]
NEW_VERSION = "9.1.0-test"
# Anti-rollback counters: the factory build keeps app.py's FW_COUNTER (1).
FACTORY_COUNTER = 1
NEW_COUNTER = 2
# Heap of the simulated board with slot storage. The 64-bit unix port needs
# more than the 64K of the plain sim: slot mode adds the loader's qstrs (one
# more qstr pool, 3.8 KB) and keeps update.py loaded from boot (docs/firmware.md,
# "Heap"); 96K leaves the headroom the tests print.
SLOT_HEAP = os.environ.get("UPDATE_SIM_HEAP", "96K")


@dataclass(frozen=True)
class Builds:
    factory: Path
    new: Path
    old_version: str
    new_version: str


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    base = tmp_path_factory.mktemp("updbuild")
    factory = build_firmware(base / "factory")
    new = build_firmware(base / "new", NEW_VERSION, NEW_COUNTER)
    old_version = json.loads((factory / "manifest.json").read_text())["fw_version"]
    return Builds(factory, new, old_version, NEW_VERSION)


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    signing.generate(d / "city.pem", d / "city.pub")
    return Keys(d / "city.pem", d / "city.pub")


@pytest.fixture(scope="session")
def pole_config(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pole's config that pins the city's update key (as provision writes it)."""
    p = tmp_path_factory.mktemp("pole") / "pole.toml"
    p.write_text(f'[update]\npublic_key = "{keys.public}"\n')
    return p


@pytest.fixture(scope="session")
def new_bundle(builds: Builds) -> bundles.Bundle:
    return bundles.parse(bundles.build_bundle(builds.new))


@pytest.fixture(scope="session")
def old_bundle(builds: Builds) -> bundles.Bundle:
    """The factory build as an ordinary bundle: a downgrade once NEW is installed."""
    return bundles.parse(bundles.build_bundle(builds.factory))


def rebadge(b: bundles.Bundle, counter: int) -> bundles.Bundle:
    """The same modules under another counter: a newer release of the same code,
    for tests that update a board more than once."""
    return bundles.parse(bundles.pack(b.version, b.files, counter))


@pytest.fixture(scope="session")
def recovery_bundle(builds: Builds) -> bundles.Bundle:
    """The factory build as a signed recovery: may go below floors up to NEW_COUNTER."""
    return bundles.parse(bundles.build_bundle(builds.factory, downgrade_from=NEW_COUNTER))


def slot_verified(slots: Path, name: str) -> bool:
    """The host's own check of a slot: every file its manifest lists, by sha256."""
    d = slots / name
    try:
        man = json.loads((d / "manifest.json").read_text())
        return all(hashlib.sha256((d / n).read_bytes()).hexdigest() == h
                   and (d / n).stat().st_size == s for n, s, h in man["files"])
    except (OSError, ValueError, KeyError):
        return False


@dataclass
class Board:
    wire: PtyWire
    fw: SimFirmware
    slots: Path

    def state(self) -> dict[str, Any]:
        p = self.slots / "state.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def set_state(self, **values: Any) -> None:
        st = self.state()
        st.update(values)
        self.slots.mkdir(parents=True, exist_ok=True)
        (self.slots / "state.json").write_text(json.dumps(st))

    def restart(self) -> None:
        """Power back on after a kill (or a crash point)."""
        self.fw.kill()
        self.fw.start()

    def bootable_image_verified(self) -> bool:
        """What the loader boots next: the pending slot if it verifies, else the
        active one, else the factory build (always there in the sim)."""
        st = self.state()
        for key in ("pending", "active"):
            name = st.get(key)
            if name in ("a", "b") and slot_verified(self.slots, name):
                return True
            if key == "active" and name in ("a", "b"):
                return False  # an active slot that does not verify
        return True  # factory


BoardFactory = Callable[..., Board]


@pytest.fixture
def make_board(builds: Builds, tmp_path: Path) -> Iterator[BoardFactory]:
    made: list[Board] = []

    def make(state: dict[str, Any] | None = None, heap: str = SLOT_HEAP) -> Board:
        slots = tmp_path / f"slots{len(made)}"
        slots.mkdir()
        if state:
            (slots / "state.json").write_text(json.dumps(state))
        wire = PtyWire()
        fw = SimFirmware(wire.fw_path, builds.factory, heap=heap, slots_dir=slots,
                         log_path=tmp_path / f"fw{len(made)}.log")
        board = Board(wire, fw, slots)
        made.append(board)
        fw.start()
        return board

    yield make
    for b in made:
        b.fw.stop()
        b.wire.close()
        tail = b.fw.log_tail()
        if tail:
            print(f"--- firmware log {b.fw.log_path} ---\n{tail}")


@dataclass
class Link:
    client: LinkClient
    tap: UpdateTap
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def open_link(path: str, up_within: float = 5.0) -> AsyncIterator[Link]:
    tap = UpdateTap()
    client = LinkClient(LinkConfig(port=path, ack_timeout_s=0.1), "test-ctl", tap.on_event)
    task = asyncio.create_task(client.run())
    try:
        assert await tap.wait(lambda: client.up, up_within), "link did not come up"
        yield Link(client, tap, task)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
