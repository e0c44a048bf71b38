"""A local frame from the pole's camera, anonymised before anything keeps it (the whole
frame coarsened, every detected person blurred), with the zones drawn: what
`polectl commission` puts in its report and `polectl calibrate` draws on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_controller.config import Config


def grab_frame(source: str, within_s: float = 10.0, skip: int = 0) -> Any:
    """One BGR frame from a camera source spec (file:PATH, v4l2:N, rtsp://...)."""
    from edge_controller.camera.source import SourceSpec, open_capture

    spec = SourceSpec.parse(source)
    cap = open_capture(spec, within_s, within_s)
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open camera source {source!r}")
        img = None
        for _ in range(skip + 1):
            ok, frame = cap.read()
            if not ok:
                break
            img = frame
        if img is None:
            raise OSError(f"camera source {source!r} gave no frame")
        return img
    finally:
        cap.release()


def detect_people(cfg: Config, image: Any) -> Any:
    """Person boxes for blurring: the pole's detector with every pass on, over several tile
    grids (a person cut by one grid's tile border is whole in another), at a lower
    threshold; the union of all of them. A false box costs a little blur, a missed person
    their privacy."""
    import numpy as np

    from edge_controller.detect import DetectionPipeline

    d = cfg.detector
    found = []
    grids = list(dict.fromkeys([(d.tiling.cols, d.tiling.rows), (4, 3), (5, 4)]))
    for cols, rows in grids:
        snap_cfg = d.model_copy(update={
            "tiling": d.tiling.model_copy(update={"whole_frame": True, "cols": cols,
                                                  "rows": rows}),
            "motion": d.motion.model_copy(update={"enabled": False}),
            "focus": d.focus.model_copy(update={"enabled": False}),
            "score_threshold": min(d.score_threshold, 0.3),
            "detect_interval": 1, "max_fps": 0.0,
        })
        boxes = DetectionPipeline(snap_cfg, zones=[z.polygon for z in cfg.zones]).process(
            0, 0.0, image)
        if boxes is not None and len(boxes):
            found.append(np.asarray(boxes, np.float32))
    return np.concatenate(found) if found else np.zeros((0, 5), np.float32)


def count_people(boxes: Any, iou: float = 0.4) -> int:
    """Distinct people among possibly overlapping boxes (greedy, best score first)."""
    kept: list[Any] = []
    for b in sorted(boxes, key=lambda b: -float(b[4])):
        if all(_iou(b, k) < iou for k in kept):
            kept.append(b)
    return len(kept)


def _iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Snapshot:
    jpeg: bytes  # anonymised, zones drawn
    clean_jpeg: bytes  # anonymised, nothing drawn (for the calibration page)
    width: int
    height: int
    people: int
    detector: str  # "ok" or why it did not run
    boxes: Any = None  # the person boxes that were blurred (x1, y1, x2, y2, score)


def make_snapshot(cfg: Config, image: Any, draw_zones: bool = True) -> Snapshot:
    import cv2

    from edge_controller.crossing.privacy import anonymise

    h, w = image.shape[:2]
    note = "ok"
    try:
        boxes = detect_people(cfg, image)
    except Exception as e:  # model missing or broken: coarsening still applies
        import numpy as np

        boxes, note = np.zeros((0, 5), np.float32), f"detector failed: {e}"
    anon = anonymise(image, boxes)
    ok, clean = cv2.imencode(".jpg", anon, [cv2.IMWRITE_JPEG_QUALITY, 85])
    drawn = anon.copy()
    if draw_zones:
        draw_zone_overlay(drawn, cfg)
    ok2, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not (ok and ok2):
        raise OSError("JPEG encoding failed")
    return Snapshot(bytes(buf), bytes(clean), w, h, count_people(boxes), note, boxes)


ZONE_COLOURS = {"carriageway": (40, 40, 230), "crosswalk": (0, 200, 255),
                "waiting": (60, 200, 60)}


def draw_zone_overlay(img: Any, cfg: Config) -> None:
    import cv2
    import numpy as np

    for z in cfg.zones:
        pts = np.asarray(z.polygon, dtype=np.int32).reshape(-1, 1, 2)
        colour = ZONE_COLOURS.get(z.kind, (255, 255, 255))
        overlay = img.copy()
        cv2.fillPoly(overlay, [pts], colour)
        cv2.addWeighted(overlay, 0.25, img, 0.75, 0, dst=img)
        cv2.polylines(img, [pts], True, colour, 2, cv2.LINE_AA)
        x, y = int(min(p[0] for p in z.polygon)), int(min(p[1] for p in z.polygon))
        cv2.putText(img, f"{z.name} ({z.kind})", (x + 4, max(14, y + 16)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(img, f"{z.name} ({z.kind})", (x + 4, max(14, y + 16)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    sig = cfg.signal.camera
    if sig is not None:
        x, y, w, h = sig.roi
        cv2.rectangle(img, (x, y), (x + w, y + h), (255, 0, 255), 2)
        cv2.putText(img, "signal", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 0, 255), 1, cv2.LINE_AA)
