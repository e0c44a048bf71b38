"""Firmware bundles: the `.mpy` build packed in one streamable container.

Layout (docs/deploy.md, "Bundle format"), all integers little-endian::

    b"SPB1"
    member*:  name_len u8 | name (ASCII) | size u32 | size bytes
              the first member is manifest.json, then one member per .mpy file

`manifest.json` is ``{"v": 1, "version": "0.2.0", "loader": 1, "files":
[[name, size, sha256_hex], ...]}``; it lists every other member once, in
order. `loader` is the loader interface the image was built for
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

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()

    @property
    def size(self) -> int:
        return len(self.data)


def _member(name: str, content: bytes) -> bytes:
    raw = name.encode("ascii")
    return struct.pack("<B", len(raw)) + raw + struct.pack("<I", len(content)) + content


def pack(version: str, files: dict[str, bytes]) -> bytes:
    """Container bytes for these files (names `*.mpy`), manifest first."""
    if not _VERSION.fullmatch(version):
        raise BundleError(f"version {version!r}: use 1-32 of 0-9 A-Z a-z . _ + -")
    if not files:
        raise BundleError("a bundle needs at least one module")
    for name in files:
        if not _NAME.fullmatch(name):
            raise BundleError(f"member name {name!r}: must be a .mpy file name (A-Z a-z 0-9 _ .)")
    manifest = {
        "v": 1,
        "version": version,
        "loader": LOADER_API,
        "files": [[n, len(c), hashlib.sha256(c).hexdigest()] for n, c in files.items()],
    }
    out = bytearray(MAGIC)
    out += _member(MANIFEST, json.dumps(manifest).encode())
    for n, c in files.items():
        out += _member(n, c)
    if len(out) > MAX_BUNDLE:
        raise BundleError(f"bundle is {len(out)} bytes; the board takes at most {MAX_BUNDLE}")
    return bytes(out)


def build_bundle(build_dir: Path, version: str | None = None) -> bytes:
    """Pack a `firmware/build.py` output directory (its `*.mpy`, less the loader)."""
    build_dir = Path(build_dir)
    man_path = build_dir / "manifest.json"
    if not man_path.exists():
        raise BundleError(f"{build_dir} is not a firmware build (no manifest.json); "
                          "run firmware/build.py first")
    built = json.loads(man_path.read_text())
    version = version or str(built.get("fw_version") or "")
    if not version:
        raise BundleError(f"{man_path} names no fw_version; pass the version explicitly")
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
    return pack(version, files)


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
    if manifest.get("v") != 1 or not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise BundleError("manifest.json: unsupported v or bad version")
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
    return Bundle(version, files, manifest, bytes(data))
