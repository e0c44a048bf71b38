"""Degraded copies of clear frames: fog, night under the pole's lamp, greyscale/IR, rain
and headlight glare (test-only generator).

Written independently of the product: it imports nothing from `edge_controller`, so an
error in the product's fog model or its night enhancement cannot cancel out against the
same error here. Its camera and its numbers are its own, deliberately different from
any default of the product and from the PETS09 camera the visibility tests fit:

* camera (for fog and lamp distances): 8.5 m above the road, 30 degrees down, 40 degrees
  vertical field of view, no roll (`CAMERA`). The PETS09 view is really 7.1 m / 17 deg /
  27.5 deg; the generator lays its own ground plane over the picture, which is what a
  pole at another site would see.
* fog: Koschmieder's law in linear light, I = J t + A (1 - t), t = exp(-beta d),
  beta = 2.996 / MOR; airlight 0.86 of white with +-8 % smooth unevenness and a slight
  blue tint; then sensor noise (read 0.3 %, shot) and JPEG quality 85.
* night: the daylight scene's linear light times the lamp's irradiance, which falls
  with the cube of the distance r from the lamp (a point source at 9 m above the
  camera's foot: cos / r^2 with cos = h / r), scaled so that the road at the foot of the
  pole gets `level` (0.10-0.30) of daylight; a faint sky glow (0.1 % of daylight); shot
  noise (0.4 % of full scale at full scale) plus read noise (0.6 % of full scale), in
  linear light, no auto-gain by default (`gain="auto"`: the camera's gain brings the
  99.5th percentile to 0.75 of full scale, noise amplified with it); 8-bit sRGB, JPEG 85.
* greyscale: BT.601 luma in three equal channels; `ir`: a near-infrared look (clothes
  and foliage reflect IR differently: 0.55 R + 0.35 G + 0.10 B, then a mild gamma).
* rain: bright slanted streaks (motion-blurred drops) over the frame; glare: a few
  headlight blooms with a veil over the lower image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Img = np.ndarray
MOR_K = float(-np.log(0.05))


@dataclass(frozen=True)
class Cam:
    height_m: float = 8.5
    tilt_deg: float = 30.0
    vfov_deg: float = 40.0
    lamp_height_m: float = 9.0


CAMERA = Cam()


def _lin_lut() -> Img:
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LIN = _lin_lut()


def to_linear(u8: Img) -> Img:
    return _LIN[u8]


def to_srgb(lin: Img) -> Img:
    # Exact per-pixel encoding (no coarse table): the darkest night values matter.
    x = np.clip(lin, 0.0, 1.0)
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


def jpeg(u8: Img, quality: int = 85) -> Img:
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


_DIST: dict[tuple[tuple[int, int], Cam], tuple[Img, Img]] = {}


def distances(shape: tuple[int, int], cam: Cam = CAMERA) -> tuple[Img, Img]:
    """Per pixel: camera-to-ground distance d and lamp-to-ground distance r (m)."""
    key = (shape, cam)
    if key not in _DIST:
        _DIST[key] = _distances(shape, cam)
    return _DIST[key]


def _distances(shape: tuple[int, int], cam: Cam) -> tuple[Img, Img]:
    h, w = shape
    f = (h / 2) / math.tan(math.radians(cam.vfov_deg) / 2)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = (xs - (w - 1) / 2) / f, (ys - (h - 1) / 2) / f
    th = math.radians(cam.tilt_deg)
    down = dy * math.cos(th) + math.sin(th)  # downward component of the (unnormalised) ray
    fwd = math.cos(th) - dy * math.sin(th)
    down = np.maximum(down, 1e-3)  # at or above the horizon: very far
    s = cam.height_m / down
    horiz = s * np.hypot(dx, fwd)
    d = np.sqrt(horiz ** 2 + cam.height_m ** 2)
    r = np.sqrt(horiz ** 2 + cam.lamp_height_m ** 2)
    return d.astype(np.float32), r.astype(np.float32)


def _field(rng: np.random.Generator, shape: tuple[int, int], lo: float, hi: float) -> Img:
    coarse = rng.uniform(0, 1, (4, 4))
    f = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-9)
    return (lo + (hi - lo) * f).astype(np.float32)


def _noise(lin: Img, rng: np.random.Generator, read: float, shot: float) -> Img:
    sigma = np.sqrt(np.float32(read) ** 2 + np.float32(shot) * np.clip(lin, 0, None))
    return lin + rng.standard_normal(lin.shape, dtype=np.float32) * sigma


def fog(u8: Img, mor_m: float, rng: np.random.Generator, airlight: float = 0.86,
        uneven: float = 0.08, cam: Cam = CAMERA) -> Img:
    lin = to_linear(u8)
    d, _ = distances(lin.shape[:2], cam)
    t = np.exp(-np.float32(MOR_K / mor_m) * d)[..., None]
    tint = np.array([1.02, 1.0, 0.98], np.float32)  # BGR: a touch of blue
    A = (np.float32(airlight) * _field(rng, lin.shape[:2], 1 - uneven, 1 + uneven))[..., None]
    out = lin * t + A * tint * (1 - t)
    out = _noise(out, rng, 0.003, 0.0005)
    return jpeg(to_srgb(out))


def night(u8: Img, level: float, rng: np.random.Generator, gain: str | float = 1.0,
          read: float = 0.006, shot: float = 0.004, cam: Cam = CAMERA) -> Img:
    """`level`: share of daylight on the road at the foot of the pole."""
    lin = to_linear(u8)
    _, r = distances(lin.shape[:2], cam)
    e = np.float32(level) * (cam.lamp_height_m / r) ** 3 + np.float32(0.001)
    scene = lin * e[..., None]
    g = 0.75 / max(float(np.percentile(scene, 99.5)), 1e-6) if gain == "auto" else float(gain)
    out = _noise(scene, rng, read, shot) * np.float32(g)
    return jpeg(to_srgb(out))


def grey(u8: Img) -> Img:
    y = cv2.cvtColor(u8, cv2.COLOR_BGR2GRAY)  # BT.601 weights
    return cv2.cvtColor(y, cv2.COLOR_GRAY2BGR)


def ir(u8: Img) -> Img:
    b, g, r = (u8[..., k].astype(np.float32) / 255 for k in range(3))
    y = np.clip(0.55 * r + 0.35 * g + 0.10 * b, 0, 1) ** 0.85
    y8 = np.round(y * 255).astype(np.uint8)
    return cv2.cvtColor(y8, cv2.COLOR_GRAY2BGR)


def rain(u8: Img, rng: np.random.Generator, drops: int = 500, length: int = 18) -> Img:
    h, w = u8.shape[:2]
    layer = np.zeros((h, w), np.float32)
    xs = rng.integers(0, w, drops)
    ys = rng.integers(0, h, drops)
    for x, y in zip(xs, ys, strict=True):
        dx = int(length * 0.25)
        cv2.line(layer, (int(x), int(y)), (int(x) + dx, int(y) + length), 1.0, 1)
    layer = cv2.GaussianBlur(layer, (3, 3), 0) * 0.35
    lin = to_linear(u8) * 0.8 + layer[..., None] * 0.6
    return jpeg(to_srgb(lin))


def glare(u8: Img, rng: np.random.Generator, lamps: int = 2) -> Img:
    h, w = u8.shape[:2]
    lin = to_linear(u8)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    veil = np.zeros((h, w), np.float32)
    for _ in range(lamps):
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.55, 0.95) * h
        r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (0.08 * w) ** 2
        veil += 1.5 / (1 + r2)
    out = lin + veil[..., None] * np.array([0.9, 0.95, 1.0], np.float32)
    return jpeg(to_srgb(out))


# The conditions the tests and the benchmark run (name -> function of frame and rng).
def make(name: str, u8: Img, rng: np.random.Generator) -> Img:
    if name == "clear":
        return u8
    if name.startswith("fog"):
        return fog(u8, float(name[3:]), rng)
    if name.startswith("night-gain"):
        return night(u8, float(name[10:]) / 100, rng, gain="auto")
    if name.startswith("night"):
        return night(u8, float(name[5:]) / 100, rng)
    if name == "grey":
        return grey(u8)
    if name == "ir":
        return ir(u8)
    if name == "rain":
        return rain(u8, rng)
    if name == "glare":
        return glare(u8, rng)
    raise ValueError(f"unknown condition {name!r}")
