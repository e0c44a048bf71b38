"""Could the board check the Ed25519 signature too? tests/update/mp_ed25519.py
(pure Python, with its own SHA-512) compiled with mpy-cross and run under the
MicroPython unix port: same answers as `cryptography`, and the heap and time
it needs (docs/firmware.md, "Signatures")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from polesim.firmware import find_micropython

from edge_controller.update import signing

HERE = Path(__file__).resolve().parent

DRIVER = """
import gc, sys
from time import ticks_ms, ticks_diff
sys.path.insert(0, sys.argv[1])
gc.collect(); a0 = gc.mem_alloc()
import mp_ed25519 as e
gc.collect(); imp = gc.mem_alloc() - a0
best = 1 << 30
with open(sys.argv[2]) as f:
    lines = f.read().split()
for line in lines:
    pub, msg, sig = [bytes.fromhex(x) for x in line.split(":")]
    gc.collect(); t0 = ticks_ms(); ok = e.verify(pub, msg, sig)
    best = min(best, ticks_diff(ticks_ms(), t0))
    print("R", 1 if ok else 0)
print("M", imp, best)
"""


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ed")
    mpy_cross = Path(find_micropython()).parent / "mpy-cross"
    subprocess.run([str(mpy_cross), "-o", str(d / "mp_ed25519.mpy"),
                    str(HERE / "mp_ed25519.py")], check=True)
    return d


def run(mpy_dir: Path, heap: str, cases: list[tuple[bytes, bytes, bytes]],
        ) -> tuple[list[bool], int, int]:
    # Cases go in a file: long command-line arguments upset the unix port.
    (mpy_dir / "cases.txt").write_text(
        "\n".join(f"{p.hex()}:{m.hex()}:{s.hex()}" for p, m, s in cases))
    res = subprocess.run([find_micropython(), "-X", f"heapsize={heap}", "-c", DRIVER,
                          str(mpy_dir), str(mpy_dir / "cases.txt")],
                         capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    m = re.search(r"^M (\d+) (\d+)$", out, re.M)
    assert res.returncode == 0 and m, out
    return [ln == "R 1" for ln in out.splitlines() if ln.startswith("R ")], int(m[1]), int(m[2])


def test_micropython_verifier_agrees_with_cryptography(mpy_dir: Path) -> None:
    cases: list[tuple[bytes, bytes, bytes]] = []
    want: list[bool] = []
    for i in range(3):
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes_raw()
        stmt = signing.statement(bytes([i]) * 1000)
        sig = key.sign(stmt)
        bad_sig = sig[:40] + bytes([sig[40] ^ 4]) + sig[41:]
        bad_msg = stmt[:-1] + bytes([stmt[-1] ^ 1])
        cases += [(pub, stmt, sig), (pub, stmt, bad_sig), (pub, bad_msg, sig)]
        want += [True, False, False]
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    cases.append((other, cases[0][1], cases[0][2]))
    want.append(False)
    got, _, _ = run(mpy_dir, "64K", cases)
    assert got == want


def test_micropython_verifier_heap_and_time(mpy_dir: Path) -> None:
    key = Ed25519PrivateKey.generate()
    stmt = signing.statement(b"bundle")
    case = [(key.public_key().public_bytes_raw(), stmt, key.sign(stmt))]
    fits = {}
    for heap in ("16K", "20K", "24K"):
        try:
            fits[heap] = run(mpy_dir, heap, case)[0] == [True]
        except AssertionError:
            fits[heap] = False
    got, imp, ms = run(mpy_dir, "64K", case)
    print(f"\nEd25519 verify under MicroPython (unix port, 64-bit): {ms} ms, module "
          f"{imp} B of heap once imported; runs standalone in: "
          f"{', '.join(h for h, ok in fits.items() if ok) or 'none of 16K-24K'}")
    assert got == [True] and fits["24K"]
