"""An independent fog, lighting and night generator for the visibility tests.

Test-only and deliberately separate from the product: it imports nothing from
`edge_controller`, so an error in the estimator's geometry or photometry cannot
cancel out against the same error here.

* `fit_camera(gt.txt)`: a pinhole camera fitted (OpenCV `calibrateCamera`, one
  planar view, principal point at the image centre) to the PETS09 ground truth:
  foot points (bottom centre of each box) against their ground coordinates in
  metres (gt.txt columns 8-9). On PETS09-S2L1 View 001 it gives a camera 7.1 m
  above the ground, 16.9 degrees down, 27.5 degrees vertical field of view;
  median foot point error 3 cm.
* `depth_map()`: each pixel's distance to the camera along its ray to the
  ground plane (inf above the horizon).
* `fog()`: Koschmieder's model in linear intensity, I = J t + A (1 - t),
  t = exp(-beta d), beta = -ln(0.05) / MOR = 2.996 / MOR (the WMO's 5 %
  contrast threshold), with an uneven airlight (a smooth random field),
  illumination gain, shot and read noise, and JPEG compression.
* `clouds()`, `dusk()`: lighting changes without fog.
* `night()`: the scene darkened and lit by a lamp on the pole (inverse square,
  cosine), fog attenuating the light on its way to the ground and back, plus
  the glow of the lamp's light scattered by the fog.

Numbers are linear intensities in [0, 1] unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

Img = np.ndarray
_GROUND: dict[tuple[int, tuple[int, int]], tuple[Img, Img]] = {}  # per camera and size

# MOR is defined at the 5 % contrast threshold (WMO): beta = -ln(0.05) / MOR.
MOR_K = float(-np.log(0.05))  # 2.996


# ---- colour ---------------------------------------------------------------------


def _to_linear_lut() -> Img:
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _to_srgb_lut() -> Img:
    # 2**16 steps of linear intensity: fine enough for the darkest night pixels.
    x = np.arange(65536, dtype=np.float64) / 65535.0
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


_TO_LIN = _to_linear_lut()
_TO_SRGB = _to_srgb_lut()


def srgb_to_linear(u8: Img) -> Img:
    return _TO_LIN[u8]


def linear_to_srgb(lin: Img) -> Img:
    idx = np.clip(lin * 65535.0 + 0.5, 0, 65535).astype(np.int32)
    return _TO_SRGB[idx]


# ---- camera -----------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    K: Img  # 3x3 intrinsics
    R: Img  # world -> camera rotation
    C: Img  # camera centre in world metres (z up, ground at z = 0)
    size: tuple[int, int]  # (width, height)

    @property
    def height_m(self) -> float:
        return float(self.C[2])

    @property
    def tilt_deg(self) -> float:
        """Optical axis below the horizontal."""
        axis = self.R.T @ np.array([0.0, 0.0, 1.0])
        return float(np.degrees(np.arcsin(-axis[2])))

    @property
    def vfov_deg(self) -> float:
        return float(2 * np.degrees(np.arctan(self.size[1] / 2 / self.K[1, 1])))

    @property
    def roll_deg(self) -> float:
        """Rotation about the optical axis: positive when the image's x axis (right)
        points up, i.e. the scene appears rotated clockwise in the image."""
        x = self.R.T @ np.array([1.0, 0.0, 0.0])
        y = self.R.T @ np.array([0.0, 1.0, 0.0])
        return float(np.degrees(np.arctan2(x[2], -y[2])))

    @staticmethod
    def from_params(height_m: float, tilt_deg: float, vfov_deg: float, roll_deg: float,
                    size: tuple[int, int] = (768, 576)) -> Camera:
        """A camera at (0, 0, height) looking along +y, tilted down, rolled about its axis."""
        th, ph = np.radians(tilt_deg), np.radians(roll_deg)
        xc = np.array([1.0, 0.0, 0.0])
        yc = np.array([0.0, -np.sin(th), -np.cos(th)])  # image down
        zc = np.array([0.0, np.cos(th), -np.sin(th)])  # optical axis
        x = np.cos(ph) * xc - np.sin(ph) * yc
        y = np.sin(ph) * xc + np.cos(ph) * yc
        R = np.stack([x, y, zc])  # rows: camera axes in world = world -> camera
        f = size[1] / 2 / np.tan(np.radians(vfov_deg) / 2)
        K = np.array([[f, 0, size[0] / 2], [0, f, size[1] / 2], [0, 0, 1.0]])
        return Camera(K, R, np.array([0.0, 0.0, height_m]), size)

    def homography(self) -> Img:
        """Image pixel -> ground (x, y) metres."""
        P = self.K @ np.hstack([self.R, (-self.R @ self.C)[:, None]])
        Hg = P[:, [0, 1, 3]]  # ground z = 0: world (x, y, 1) -> image
        return np.linalg.inv(Hg) / np.linalg.inv(Hg)[2, 2]

    def ground(self, shape: tuple[int, int]) -> tuple[Img, Img]:
        """Ground points (h, w, 3) of every pixel's ray, and a mask of rays that hit it."""
        key = (id(self), shape)
        if key not in _GROUND:
            _GROUND[key] = self._ground(shape)
        return _GROUND[key]

    def _ground(self, shape: tuple[int, int]) -> tuple[Img, Img]:
        h, w = shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        sx, sy = self.size[0] / w, self.size[1] / h  # pixel centres at another scale
        pix = np.stack([(xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5, np.ones_like(xs)], -1)
        rays = pix @ np.linalg.inv(self.K).T @ self.R  # camera -> world directions
        s = -self.C[2] / np.where(rays[..., 2] < -1e-9, rays[..., 2], -1e-9)
        hit = rays[..., 2] < -1e-9
        pts = self.C + rays * s[..., None]
        return pts, hit


def fit_camera(gt_path: Path, size: tuple[int, int] = (768, 576)) -> Camera:
    gt = np.loadtxt(gt_path, delimiter=",", ndmin=2)
    img = np.stack([gt[:, 2] + gt[:, 4] / 2, gt[:, 3] + gt[:, 5]], 1).astype(np.float32)
    obj = np.stack([gt[:, 7], gt[:, 8], np.zeros(len(gt))], 1).astype(np.float32)
    w, h = size
    K0 = np.array([[900.0, 0, w / 2], [0, 900.0, h / 2], [0, 0, 1]])
    flags = (cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_PRINCIPAL_POINT
             | cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_ZERO_TANGENT_DIST
             | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3)
    _rms, K, _d, rv, tv = cv2.calibrateCamera([obj], [img], size, K0, np.zeros(5), flags=flags)
    R, _ = cv2.Rodrigues(rv[0])
    C = -R.T @ tv[0].ravel()
    if C[2] < 0:  # the ground's normal points up: put the camera above it
        flip = np.diag([1.0, 1.0, -1.0])
        R, C = R @ flip, flip @ C
    return Camera(K, R, C, size)


def depth_map(cam: Camera, shape: tuple[int, int]) -> Img:
    """Camera-to-ground distance (m) per pixel; inf where the ray misses the ground."""
    pts, hit = cam.ground(shape)
    d = np.linalg.norm(pts - cam.C, axis=-1)
    return np.where(hit, d, np.inf)


def lamp_distance(cam: Camera, shape: tuple[int, int], lamp_height_m: float) -> Img:
    """Distance from a lamp on the pole (above the camera's ground point) to each ground point."""
    pts, hit = cam.ground(shape)
    lamp = np.array([cam.C[0], cam.C[1], lamp_height_m])
    d = np.linalg.norm(pts - lamp, axis=-1)
    return np.where(hit, d, np.inf)


# ---- nuisances -----------------------------------------------------------------------


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], lo: float, hi: float,
                 cells: int = 3) -> Img:
    """A smooth random field in [lo, hi] (bicubic blow-up of a coarse grid)."""
    coarse = rng.uniform(0.0, 1.0, (cells, cells))
    f = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-9)
    return lo + (hi - lo) * f


def sensor(lin: Img, rng: np.random.Generator, gain: float = 1.0, read_noise: float = 0.004,
           shot: float = 0.0015, jpeg_quality: int = 80) -> Img:
    """Camera pipeline: exposure gain, shot + read noise, sRGB encode, JPEG round trip."""
    x = (lin * gain).astype(np.float32)
    sigma = np.sqrt(np.float32(read_noise ** 2) + np.float32(shot) * np.clip(x, 0, None))
    x = x + rng.standard_normal(x.shape, dtype=np.float32) * sigma
    u8 = linear_to_srgb(x)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def fog(lin: Img, depth: Img, mor_m: float, rng: np.random.Generator,
        airlight: float | None = None, uneven: float = 0.3) -> Img:
    """Daytime fog on a linear image: t = exp(-beta d), uneven grey-blue airlight."""
    beta = np.float32(MOR_K / mor_m)
    d = np.where(np.isfinite(depth), depth, 1e6).astype(np.float32)
    t = np.exp(-beta * d)[..., None]
    if airlight is None:
        # Fog's horizon luminance: brighter than most of the ground it hides.
        airlight = float(np.percentile(lin[::4, ::4].mean(axis=2), 90)) * rng.uniform(1.0, 1.5)
    field = smooth_field(rng, lin.shape[:2], 1.0 - uneven / 2, 1.0 + uneven / 2)
    tint = np.array([1.03, 1.0, 0.97], np.float32)  # slightly bluish (BGR order)
    A = (np.float32(airlight) * field.astype(np.float32))[..., None] * tint
    return lin * t + A * (1.0 - t)


def clouds(lin: Img, rng: np.random.Generator) -> Img:
    """Overcast: a global drop in light and a soft cloud shadow over part of the scene."""
    h, w = lin.shape[:2]
    g = rng.uniform(0.35, 0.7)
    shade = np.ones((h, w))
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.6) * h
    ys, xs = np.mgrid[0:h, 0:w]
    r = np.hypot((xs - cx) / (0.35 * w), (ys - cy) / (0.35 * h))
    shade -= rng.uniform(0.3, 0.5) * np.clip(1.5 - r, 0, 1)  # soft-edged shadow
    return lin * (g * shade)[..., None]


def dusk(lin: Img, rng: np.random.Generator) -> Img:
    """Dusk: much less light, warmer colour, light falling off across the sky."""
    h, w = lin.shape[:2]
    g = rng.uniform(0.08, 0.2)
    tint = np.array([0.8, 0.95, 1.1])  # BGR: less blue, more red
    slope = smooth_field(rng, (h, w), 0.75, 1.25, cells=2)
    return lin * g * slope[..., None] * tint


@dataclass(frozen=True)
class NightScene:
    """The day scene's albedo lit by a lamp on the pole, plus faint ambient light."""

    lamp_height_m: float
    lamp_power: float = 60.0  # irradiance scale: E = power * cos / r^2 (linear units)
    ambient: float = 0.004  # sky glow, relative to daylight


def night(day_lin: Img, cam: Camera, scene: NightScene, level: float = 1.0,
          mor_m: float | None = None, rng: np.random.Generator | None = None,
          glow: float = 1.0) -> Img:
    """The scene at night under the lamp at `level` (0-1); with `mor_m`, in fog.

    Light goes lamp -> ground (attenuated over the lamp distance) -> camera
    (over the camera distance); the fog's glow is the lamp light scattered
    towards the camera, strongest near the pole and uneven.
    """
    h, w = day_lin.shape[:2]
    e_unit, r, d, hit = _night_geometry(cam, (h, w), scene.lamp_height_m)
    E = np.float32(scene.lamp_power * level) * e_unit
    albedo = day_lin / max(float(np.percentile(day_lin[::4, ::4], 99)), 1e-6)
    lit = albedo * (E + np.float32(scene.ambient))[..., None]
    if mor_m is None:
        return lit
    assert rng is not None
    beta = np.float32(MOR_K / mor_m)
    t_cam = np.exp(-beta * d)
    t_lamp = np.exp(-beta * r)
    # Glow: the lamp's light scattered by the fog, about as bright as the lit
    # ground near the pole, fading away from it and uneven.
    near = float(np.percentile(lit[::4, ::4].mean(axis=2)[hit[::4, ::4]], 90))
    field = smooth_field(rng, (h, w), 0.6, 1.4).astype(np.float32)
    A = np.float32(glow * near * level) * field * np.clip(30.0 / np.minimum(d, 200.0), 0.3, 1.5)
    return lit * (t_cam * t_lamp)[..., None] + (A * (1.0 - t_cam))[..., None]


_NIGHT: dict[tuple[int, tuple[int, int], float], tuple[Img, Img, Img, Img]] = {}


def _night_geometry(cam: Camera, shape: tuple[int, int], lamp_h: float
                    ) -> tuple[Img, Img, Img, Img]:
    """Lamp irradiance per unit power (cos / r^2), lamp and camera distances, hit mask."""
    key = (id(cam), shape, lamp_h)
    if key not in _NIGHT:
        pts, hit = cam.ground(shape)
        lamp = np.array([cam.C[0], cam.C[1], lamp_h])
        v = pts - lamp
        r = np.linalg.norm(v, axis=-1)
        cos = np.clip(-v[..., 2] / np.maximum(r, 1e-6), 0, 1)
        e_unit = np.where(hit, cos / np.maximum(r, 1.0) ** 2, 0.0).astype(np.float32)
        d = depth_map(cam, shape)
        d = np.where(np.isfinite(d), d, 1e6).astype(np.float32)
        _NIGHT[key] = (e_unit, np.where(hit, r, 1e6).astype(np.float32), d, hit)
    return _NIGHT[key]
