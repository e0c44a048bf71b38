"""Firmware bundles: the `.mpy` build packed in one streamable container.

Layout (docs/deploy.md, "Bundle format"), all integers little-endian::

    b"SPB1"
    member*:  name_len u8 | name (ASCII) | size u32 | size bytes
              the first member is manifest.json, then one member per .mpy file

`manifest.json` is ``{"v": 2, "version": "0.2.0", "counter": 7, "loader": 1,
"files": [[name, size, sha256_hex], ...]}``, with ``"downgrade_from": N`` on
a recovery image; it lists every other member once, in order. `counter` is
the anti-rollback counter (the board installs only an image above its
floor, docs/security.md); `downgrade_from` makes a signed recovery image
that may go below a floor up to N. `loader` is the loader interface the image was built for
(firmware/src/slots.py `API`); the board refuses any other at commit. The
board unpacks members as they come (no index to hold in RAM) and checks
every file against the manifest; the whole bundle's SHA-256 is what
`update_begin` / `update_commit` carry and what the Ed25519 signature binds
(see `signing.py`).

The loader (`main`, `loader`, `slots`) is left out: it is installed once
with the factory image and never replaced over the link, like a boot ROM.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"SPB1"
MANIFEST = "manifest.json"
# The loader: installed once (mpremote), never shipped over the link.
LOADER_MODULES = ("main.mpy", "loader.mpy", "slots.mpy")
_NAME = re.compile(r"[A-Za-z0-9_.]{1,35}\.mpy")
_VERSION = re.compile(r"[0-9A-Za-z._+-]{1,32}")
MAX_COUNTER = 0x7FFFFFFF  # firmware/build.py MAX_COUNTER
MANIFEST_V = 2  # 2: counter (anti-rollback) and downgrade_from; 1 had neither
MAX_BUNDLE = 0x100000  # the board refuses larger images (update.py _MAX_IMAGE)
LOADER_API = 1  # firmware/src/slots.py API


class BundleError(ValueError):
    """Not a well-formed bundle (bad magic, member, manifest or file hash)."""


@dataclass(frozen=True)
class Bundle:
    version: str
    files: dict[str, bytes]  # name -> content, in bundle order
    manifest: dict[str, object]
    data: bytes  # the whole container, as it travels
    counter: int = 0  # anti-rollback counter
    downgrade_from: int | None = None  # a recovery image: may go below floors up to this

    def allowed_on(self, floor: int) -> bool:
        """What the board checks at commit: above `floor`, or a recovery covering it."""
        return self.counter > floor or (self.downgrade_from is not None
                                        and self.downgrade_from >= floor)

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()

    @property
    def size(self) -> int:
        return len(self.data)


def _member(name: str, content: bytes) -> bytes:
    raw = name.encode("ascii")
    return struct.pack("<B", len(raw)) + raw + struct.pack("<I", len(content)) + content


def _check_counter(what: str, n: object) -> int:
    if type(n) is not int or not 0 <= n <= MAX_COUNTER:
        raise BundleError(f"{what} {n!r}: must be an integer 0..{MAX_COUNTER}")
    return n


def pack(version: str, files: dict[str, bytes], counter: int,
         downgrade_from: int | None = None) -> bytes:
    """Container bytes for these files (names `*.mpy`), manifest first."""
    _check_counter("counter", counter)
    if downgrade_from is not None:
        _check_counter("downgrade_from", downgrade_from)
        if downgrade_from < counter:
            raise BundleError(f"downgrade_from {downgrade_from} is below the image's counter "
                              f"{counter}: a recovery image goes down from a higher floor")
    if not _VERSION.fullmatch(version):
        raise BundleError(f"version {version!r}: use 1-32 of 0-9 A-Z a-z . _ + -")
    if not files:
        raise BundleError("a bundle needs at least one module")
    for name in files:
        if not _NAME.fullmatch(name):
            raise BundleError(f"member name {name!r}: must be a .mpy file name (A-Z a-z 0-9 _ .)")
    manifest: dict[str, object] = {
        "v": MANIFEST_V,
        "version": version,
        "counter": counter,
        "loader": LOADER_API,
        "files": [[n, len(c), hashlib.sha256(c).hexdigest()] for n, c in files.items()],
    }
    if downgrade_from is not None:
        manifest["downgrade_from"] = downgrade_from
    out = bytearray(MAGIC)
    out += _member(MANIFEST, json.dumps(manifest).encode())
    for n, c in files.items():
        out += _member(n, c)
    if len(out) > MAX_BUNDLE:
        raise BundleError(f"bundle is {len(out)} bytes; the board takes at most {MAX_BUNDLE}")
    return bytes(out)


def build_bundle(build_dir: Path, version: str | None = None, *,
                 downgrade_from: int | None = None) -> bytes:
    """Pack a `firmware/build.py` output directory (its `*.mpy`, less the loader).

    The counter is the build's (`fw_counter`, compiled into app.mpy), so the
    manifest the controller verifies and the code the board runs agree."""
    build_dir = Path(build_dir)
    man_path = build_dir / "manifest.json"
    if not man_path.exists():
        raise BundleError(f"{build_dir} is not a firmware build (no manifest.json); "
                          "run firmware/build.py first")
    built = json.loads(man_path.read_text())
    version = version or str(built.get("fw_version") or "")
    if not version:
        raise BundleError(f"{man_path} names no fw_version; pass the version explicitly")
    counter = built.get("fw_counter")
    if type(counter) is not int:
        raise BundleError(f"{man_path} names no fw_counter (built before anti-rollback "
                          "counters); rebuild with firmware/build.py")
    files: dict[str, bytes] = {}
    for p in sorted(build_dir.glob("*.mpy")):
        if p.name not in LOADER_MODULES:
            files[p.name] = p.read_bytes()
    # The build's own manifest lists each module's hash: a file changed after
    # the build would otherwise be signed without anyone noticing.
    for row in built.get("modules", []):
        name = f"{row['module']}.mpy"
        if name in files and hashlib.sha256(files[name]).hexdigest() != row["sha256"]:
            raise BundleError(f"{build_dir / name} changed after the build; rebuild it")
    return pack(version, files, counter, downgrade_from)


def parse(data: bytes) -> Bundle:
    """Check a container the way the board will, and more strictly."""
    if data[:4] != MAGIC:
        raise BundleError("not a smartpole bundle (magic is not SPB1)")
    if len(data) > MAX_BUNDLE:
        raise BundleError(f"bundle is {len(data)} bytes; the board takes at most {MAX_BUNDLE}")
    pos = 4
    members: list[tuple[str, bytes]] = []
    while pos < len(data):
        nl = data[pos]
        name_raw = data[pos + 1:pos + 1 + nl]
        if len(name_raw) != nl or pos + 5 + nl > len(data):
            raise BundleError(f"member header at byte {pos} runs past the end")
        try:
            name = name_raw.decode("ascii")
        except UnicodeDecodeError:
            raise BundleError(f"member name at byte {pos} is not ASCII") from None
        (size,) = struct.unpack_from("<I", data, pos + 1 + nl)
        start = pos + 5 + nl
        if start + size > len(data):
            raise BundleError(f"member {name!r} runs past the end of the bundle")
        members.append((name, data[start:start + size]))
        pos = start + size
    if not members or members[0][0] != MANIFEST:
        raise BundleError("the first member must be manifest.json")
    try:
        manifest = json.loads(members[0][1])
        version = manifest["version"]
        listed = [(str(n), int(s), str(h)) for n, s, h in manifest["files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"manifest.json is invalid: {e}") from None
    if manifest.get("v") != MANIFEST_V:
        raise BundleError(f"manifest.json v {manifest.get('v')!r}: this controller takes v "
                          f"{MANIFEST_V} (with an anti-rollback counter); rebuild the bundle")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise BundleError("manifest.json: bad version")
    counter = _check_counter("manifest.json counter", manifest.get("counter"))
    raw_down = manifest.get("downgrade_from")
    down = (None if raw_down is None
            else _check_counter("manifest.json downgrade_from", raw_down))
    if manifest.get("loader") != LOADER_API:
        raise BundleError(f"built for loader interface {manifest.get('loader')}, boards run "
                          f"{LOADER_API}; install the matching loader with --mpremote first")
    files = dict(members[1:])
    if len(files) != len(members) - 1:
        raise BundleError("a member name appears twice")
    if [n for n, _, _ in listed] != list(files):
        raise BundleError("manifest.json does not list exactly the bundle's members, in order")
    for name, size, sha in listed:
        if not _NAME.fullmatch(name):
            raise BundleError(f"member name {name!r} is not allowed")
        content = files[name]
        if len(content) != size or hashlib.sha256(content).hexdigest() != sha:
            raise BundleError(f"{name}: size or sha256 differs from manifest.json")
    return Bundle(version, files, manifest, bytes(data), counter, down)
