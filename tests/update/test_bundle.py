"""Bundles and signatures, host side: build, sign, verify, and every way a
changed bundle is refused before a byte goes to the board."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_controller.update import bundle as bundles
from edge_controller.update import signing
from tests.update.conftest import Builds, Keys


def test_build_sign_verify(builds: Builds, keys: Keys) -> None:
    data = bundles.build_bundle(builds.new)
    key = signing.load_private(keys.private)
    sig = signing.sign(data, key)
    assert len(sig) == 64
    b = signing.verify(data, sig, signing.load_public(keys.public))
    assert b.version == builds.new_version
    assert data[:4] == b"SPB1"
    # Every module of the build except the loader (main, loader, slots).
    built = {p.name for p in builds.new.glob("*.mpy")}
    assert set(b.files) == built - {"main.mpy", "loader.mpy", "slots.mpy"}
    for name, content in b.files.items():
        assert content == (builds.new / name).read_bytes()
    listed = {n: (s, h) for n, s, h in b.manifest["files"]}  # type: ignore[attr-defined]
    assert listed["app.mpy"] == (len(b.files["app.mpy"]),
                                 hashlib.sha256(b.files["app.mpy"]).hexdigest())
    # The same public key as 64 hex digits (fits in a config value).
    raw_hex = signing.load_public(keys.public).public_bytes_raw().hex()
    assert signing.verify(data, sig, signing.load_public(raw_hex)).version == b.version


def test_signature_covers_domain_and_digest(new_bundle: bundles.Bundle, keys: Keys) -> None:
    key = signing.load_private(keys.private)
    stmt = signing.statement(new_bundle.data)
    assert stmt == b"smartpole firmware bundle v1\n" + new_bundle.sha256
    # A signature by the same key over anything else (the raw bundle, a
    # command) is not a firmware signature.
    with pytest.raises(signing.SignatureError):
        signing.verify(new_bundle.data, key.sign(new_bundle.data), key.public_key())
    with pytest.raises(signing.SignatureError):
        signing.verify(new_bundle.data, key.sign(new_bundle.sha256), key.public_key())


@pytest.mark.parametrize("where", [0, 5, 100, -1, "mid"])
def test_tampered_bundle_refused_by_signature(new_bundle: bundles.Bundle, keys: Keys,
                                              where: int | str) -> None:
    key = signing.load_private(keys.private)
    data = bytearray(new_bundle.data)
    sig = signing.sign(bytes(data), key)
    i = len(data) // 2 if where == "mid" else int(where)
    data[i] ^= 0x01
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(bytes(data), sig, key.public_key())


def test_wrong_key_and_bad_signature_refused(new_bundle: bundles.Bundle, keys: Keys) -> None:
    sig = signing.sign(new_bundle.data, signing.load_private(keys.private))
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(signing.SignatureError, match="another key"):
        signing.verify(new_bundle.data, sig, other)
    with pytest.raises(signing.SignatureError, match="not 64"):
        signing.verify(new_bundle.data, sig[:63], other)


def test_read_signed_needs_the_sig_file(tmp_path: Path, new_bundle: bundles.Bundle,
                                        keys: Keys) -> None:
    p = tmp_path / "fw.spb"
    p.write_bytes(new_bundle.data)
    pub = signing.load_public(keys.public)
    with pytest.raises(signing.SignatureError, match="missing"):
        signing.read_signed(p, pub)
    signing.sig_path(p).write_bytes(signing.sign(new_bundle.data,
                                                 signing.load_private(keys.private)))
    assert signing.read_signed(p, pub).sha256 == new_bundle.sha256


def test_keys(tmp_path: Path) -> None:
    signing.generate(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        signing.generate(tmp_path / "k.pem")
    signing.generate(tmp_path / "k.pem", force=True)
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(signing.KeyFileError):
        signing.load_private(tmp_path / "junk.pem")
    with pytest.raises(signing.KeyFileError):
        signing.load_public(tmp_path / "junk.pem")
    # A private key file also yields its public key.
    assert signing.key_id(signing.load_public(tmp_path / "k.pem")) == signing.key_id(
        signing.load_private(tmp_path / "k.pem").public_key())


def _member(name: bytes, content: bytes) -> bytes:
    return struct.pack("<B", len(name)) + name + struct.pack("<I", len(content)) + content


def _manifest(files: dict[str, bytes], version: str = "1.0") -> bytes:
    return json.dumps({"v": 2, "version": version, "counter": 3, "loader": 1, "files": [
        [n, len(c), hashlib.sha256(c).hexdigest()] for n, c in files.items()]}).encode()


GOOD = {"app.mpy": b"M\x06app", "lamp.mpy": b"M\x06lamp"}


@pytest.mark.parametrize("data, why", [
    (b"XXXX", "magic"),
    (b"SPB1", "manifest.json"),
    (b"SPB1" + _member(b"app.mpy", b"x"), "manifest.json"),
    (b"SPB1" + _member(b"manifest.json", _manifest(GOOD)) + _member(b"app.mpy", GOOD["app.mpy"]),
     "exactly"),
    (b"SPB1" + _member(b"manifest.json", _manifest(GOOD)) + _member(b"app.mpy", b"M\x06apX")
     + _member(b"lamp.mpy", GOOD["lamp.mpy"]), "sha256"),
    (b"SPB1" + _member(b"manifest.json", _manifest(GOOD)) + _member(b"app.mpy", GOOD["app.mpy"])
     + _member(b"app.mpy", GOOD["app.mpy"]), "twice"),
    (b"SPB1" + _member(b"manifest.json", b"{not json"), "invalid"),
    (b"SPB1" + _member(b"manifest.json", _manifest(GOOD))[:-3], "past the end"),
    (b"SPB1" + _member(b"manifest.json", _manifest({"../x.mpy": b"a"}))
     + _member(b"../x.mpy", b"a"), "not allowed"),
])
def test_parse_refuses(data: bytes, why: str) -> None:
    with pytest.raises(bundles.BundleError, match=why):
        bundles.parse(data)


def test_pack_refuses_bad_names_and_versions() -> None:
    with pytest.raises(bundles.BundleError):
        bundles.pack("1.0", {"../evil.mpy": b"x"}, 1)
    with pytest.raises(bundles.BundleError):
        bundles.pack("1.0 beta", {"app.mpy": b"x"}, 1)
    with pytest.raises(bundles.BundleError):
        bundles.pack("1.0", {}, 1)
    with pytest.raises(bundles.BundleError, match="counter"):
        bundles.pack("1.0", GOOD, -1)
    with pytest.raises(bundles.BundleError, match="below the image's counter"):
        bundles.pack("1.0", GOOD, 5, downgrade_from=4)


def _with_manifest(**change: object) -> bytes:
    man = json.loads(_manifest(GOOD))
    man.update(change)
    for k in [k for k, v in change.items() if v is None]:
        del man[k]
    return (b"SPB1" + _member(b"manifest.json", json.dumps(man).encode())
            + b"".join(_member(n.encode(), c) for n, c in GOOD.items()))


def test_bundles_without_a_counter_are_refused() -> None:
    # A bundle from before anti-rollback (manifest v1, no counter) carries no
    # version the controller could compare: refused, rebuild it.
    with pytest.raises(bundles.BundleError, match="v 1"):
        bundles.parse(_with_manifest(v=1, counter=None))
    with pytest.raises(bundles.BundleError, match="counter"):
        bundles.parse(_with_manifest(counter=None))
    with pytest.raises(bundles.BundleError, match="counter"):
        bundles.parse(_with_manifest(counter="7"))
    with pytest.raises(bundles.BundleError, match="downgrade_from"):
        bundles.parse(_with_manifest(downgrade_from=-1))
    b = bundles.parse(_with_manifest(counter=4, downgrade_from=9))
    assert (b.counter, b.downgrade_from) == (4, 9)
    assert b.allowed_on(9) and b.allowed_on(3) and not b.allowed_on(10)


def test_build_bundle_notices_a_changed_build(builds: Builds, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(builds.new, copy)
    p = copy / "lamp.mpy"
    p.write_bytes(p.read_bytes() + b"\x00")
    with pytest.raises(bundles.BundleError, match="changed after the build"):
        bundles.build_bundle(copy)
    with pytest.raises(bundles.BundleError, match="not a firmware build"):
        bundles.build_bundle(tmp_path)


names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}\.mpy", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=300), min_size=1, max_size=6),
       st.from_regex(r"[0-9][0-9a-z.+-]{0,8}", fullmatch=True))
def test_pack_parse_roundtrip(files: dict[str, bytes], version: str) -> None:
    b = bundles.parse(bundles.pack(version, files, 7))
    assert b.counter == 7 and b.downgrade_from is None
    assert b.files == files and b.version == version


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_bundles_raise_only_bundle_error(data: st.DataObject) -> None:
    good = bundles.pack("1.0", GOOD, 1)
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    raw = raw[:cut]
    try:
        b = bundles.parse(bytes(raw))
    except bundles.BundleError:
        return
    # Accepted only if it still describes itself consistently.
    assert all(hashlib.sha256(c).hexdigest() == h
               for (n, _s, h), c in zip(b.manifest["files"], b.files.values(),  # type: ignore[call-overload]
                                        strict=True))


def test_loader_interface_matches_the_firmware() -> None:
    import re

    src = (Path(__file__).resolve().parents[2] / "firmware" / "src" / "slots.py").read_text()
    m = re.search(r"^API = (\d+)$", src, re.M)
    assert m and int(m[1]) == bundles.LOADER_API
    other = json.loads(_manifest(GOOD))
    other["loader"] = bundles.LOADER_API + 1
    data = (b"SPB1" + _member(b"manifest.json", json.dumps(other).encode())
            + b"".join(_member(n.encode(), c) for n, c in GOOD.items()))
    with pytest.raises(bundles.BundleError, match="loader interface"):
        bundles.parse(data)
