"""Where each analysis pixel looks: the camera's distance to the road point it sees and
the lamp's distance to that point, from the camera calibration."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_controller.visibility.config import CalibrationConfig
from edge_controller.visibility.imaging import B8, F32


@dataclass(frozen=True)
class Geometry:
    """Per analysis pixel: camera distance d, lamp distance r (m), and validity."""

    d: F32
    r: F32
    valid: B8

    @staticmethod
    def build(cal: CalibrationConfig, frame_size: tuple[int, int],
              size: tuple[int, int]) -> Geometry:
        """`frame_size` and `size` (analysis) are (width, height)."""
        w, h = size
        cw, ch = cal.image_size or frame_size
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        # Pixel centres of the analysis grid in calibration pixels.
        u = (xs + 0.5) * (cw / w) - 0.5
        v = (ys + 0.5) * (ch / h) - 0.5
        height = float(cal.mounting_height_m or 0.0)
        if cal.homography is not None:
            H = np.asarray(cal.homography, dtype=np.float64)
            gx = H[0, 0] * u + H[0, 1] * v + H[0, 2]
            gy = H[1, 0] * u + H[1, 1] * v + H[1, 2]
            gw = H[2, 0] * u + H[2, 1] * v + H[2, 2]
            # Points beyond the horizon come out with the other sign of w: the
            # bottom centre of the image is on the ground.
            bu, bv = (cw - 1) / 2, ch - 1
            ref = H[2, 0] * bu + H[2, 1] * bv + H[2, 2]
            hit = np.sign(gw) == np.sign(ref)
            gw = np.where(hit, gw, 1.0)
            cx, cy = (cal.camera_xy_m or [0.0, 0.0])
            horiz = np.hypot(gx / gw - cx, gy / gw - cy)
        elif cal.complete:
            f = (ch / 2) / math.tan(math.radians(float(cal.vfov_deg or 1.0)) / 2)
            dx = (u - (cw - 1) / 2) / f
            dy = (v - (ch - 1) / 2) / f
            roll = math.radians(cal.roll_deg)
            # Undo the roll: rotate image coordinates about the optical axis.
            ca, sa = math.cos(roll), math.sin(roll)
            dxr = ca * dx + sa * dy
            dyr = -sa * dx + ca * dy
            tilt = math.radians(float(cal.tilt_deg or 0.0))
            # Camera looking along +y (ground), tilted down: world up-component of
            # the ray (x right, y down, z forward in the camera).
            up = -dyr * math.cos(tilt) - math.sin(tilt)
            fwd = math.cos(tilt) - dyr * math.sin(tilt)
            hit = up < -1e-9
            s = height / np.where(hit, -up, 1.0)  # ray parameter to the ground
            horiz = s * np.hypot(dxr, fwd)
        else:
            z = np.zeros((h, w), np.float32)
            return Geometry(z, z, np.zeros((h, w), bool))
        lamp_h = float(cal.lamp_height_m or height)
        d = np.sqrt(horiz ** 2 + height ** 2)
        r = np.sqrt(horiz ** 2 + lamp_h ** 2)
        valid = hit & np.isfinite(d) & (d >= cal.min_distance_m) & (d <= cal.max_distance_m)
        if cal.roi is not None:
            poly = np.asarray(cal.roi, dtype=np.float64)
            poly = np.round(poly * [w / cw, h / ch]).astype(np.int32)
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [poly], (1,))
            valid &= m.astype(bool)
        d = np.where(valid, d, 0.0)
        r = np.where(valid, r, 0.0)
        return Geometry(d.astype(np.float32), r.astype(np.float32), valid)


# ---- one frame ------------------------------------------------------------------

