"""`polectl replay`: the live crossing pipeline over a recorded video, as fast as the CPU
allows, in video time. Writes events as JSON lines; optionally an annotated video with
every person blurred."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from rich.progress import Progress

from edge_controller.config import Config
from edge_controller.crossing.engine import CrossingEngine, Step, zones_from_config
from edge_controller.crossing.privacy import anonymise
from edge_controller.crossing.zones import Zone

Image = np.ndarray[Any, np.dtype[np.uint8]]
COLOURS = {"red": (0, 0, 255), "green": (0, 200, 0), "unknown": (160, 160, 160)}


def parse_start(s: str | None) -> float:
    """Replay clock origin: an ISO time (the plan then runs on that date) or epoch seconds."""
    if s is None:
        return 0.0
    try:
        return float(s)
    except ValueError:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def draw(image: np.ndarray[Any, np.dtype[np.uint8]], zones: list[Zone], step: Step,
         dets: np.ndarray[Any, np.dtype[Any]], t: float) -> np.ndarray[Any, np.dtype[np.uint8]]:
    people = np.vstack([dets[:, :4]] + [tr.box[None, :4] for tr in step.tracks]) \
        if len(dets) or step.tracks else np.zeros((0, 4))
    out = anonymise(image, people)
    for z in zones:
        colour = (0, 0, 255) if z.is_road else (255, 200, 0)
        cv2.polylines(out, [z.contour.astype(np.int32)], True, colour, 2)
        cv2.putText(out, z.name, tuple(int(v) for v in z.polygon[0]), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, colour, 1)
    violators = {v.track_id for v in step.violations}
    for tr in step.tracks:
        x1, y1, x2, y2 = (int(v) for v in tr.box[:4])
        c = (0, 0, 255) if tr.id in violators else (0, 255, 255)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, 2)
        cv2.putText(out, str(tr.id), (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1)
        fx, fy = tr.foot
        cv2.circle(out, (int(fx), int(fy)), 3, c, -1)
    sig = step.signal
    cv2.rectangle(out, (8, 8), (200, 34), (0, 0, 0), -1)
    cv2.putText(out, f"{sig.colour} ({sig.source}) t={t:.1f}s", (12, 27),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, COLOURS[sig.colour], 1)
    return out


# Long: the frame loop shares the detector, the engine, the writers and the progress bar.
def replay(
    video: Path,
    cfg: Config,
    events_out: Path,
    annotate: Path | None = None,
    start: float = 0.0,
    max_frames: int | None = None,
    progress: bool = True,
    save_detections: Path | None = None,
    detections: Path | None = None,
    regime: str | None = None,
    mor_m: float | None = None,
) -> dict[str, Any]:
    """`save_detections` writes the detector's boxes per analysed frame (.npz);
    `detections` replays such a file instead of running the detector, so zones, plans
    and tracker settings can be tried on the same video in seconds. `regime` (day,
    night, auto) overrides `[detector.enhance] regime`; `mor_m` is the MOR the fog model
    assumes with the config's `[visibility.calibration]`, as the live controller feeds."""
    from edge_controller.detect import DetectionPipeline  # heavy: onnxruntime
    from edge_controller.visibility.service import band_distances_for
    from polectl.detect import with_regime

    if not video.is_file():
        raise FileNotFoundError(f"video {video} not found")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"cannot decode {video} (is it a video file?)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    zones = zones_from_config(cfg.zones)
    engine = CrossingEngine(zones, cfg.crossing, cfg.signal, cfg.pole.timezone)
    recorded: dict[str, np.ndarray[Any, np.dtype[Any]]] | None = None
    if detections is not None:
        if not detections.is_file():
            raise FileNotFoundError(f"detections {detections} not found")
        with np.load(detections) as z:
            recorded = {k: z[k] for k in z.files}
        pipeline = None
    else:
        det = with_regime(cfg.detector, regime)
        pipeline = DetectionPipeline(
            det, zones=[list(z.polygon) for z in zones],
            distances=band_distances_for(cfg.visibility.calibration, det.enhance.bands))
        if mor_m is not None:
            pipeline.set_conditions(None, mor_m)
    saved: dict[str, np.ndarray[Any, np.dtype[Any]]] = {}
    writer = None
    counts = {"frames": 0, "processed": 0, "violations": 0, "crossings": 0}
    t0 = time.perf_counter()
    events_out.parent.mkdir(parents=True, exist_ok=True)
    with open(events_out, "w") as out, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"replay {video.name}", total=total or None)
        i = 0
        last_step: Step | None = None
        while max_frames is None or i < max_frames:
            ok, raw = cap.read()
            if not ok:
                break
            img = cast(Image, raw)
            tv = i / fps
            if recorded is not None:
                dets = recorded.get(f"f{i}")
            else:
                assert pipeline is not None
                dets = pipeline.process(i, tv, img)
            if dets is not None:
                saved[f"f{i}"] = dets
                counts["processed"] += 1
                last_step = engine.step(i, start + tv, dets, img)
                for c in last_step.crossings:
                    counts["crossings"] += 1
                    out.write(json.dumps({"type": "crossing", "t": round(tv, 3), "frame": i,
                                          "track_id": c.track_id, "zone": c.zone}) + "\n")
                for v in last_step.violations:
                    counts["violations"] += 1
                    # In video time: t when the person crossed the edge, confirmed_t when
                    # the pole was sure (this frame).
                    rec = {"type": "violation", **v.as_dict(),
                           "t": round(v.t - start, 3), "confirmed_t": round(tv, 3)}
                    out.write(json.dumps(rec) + "\n")
            if annotate is not None:
                if writer is None:
                    annotate.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(annotate), cv2.VideoWriter.fourcc(*"mp4v"),
                                             fps, (img.shape[1], img.shape[0]))
                if last_step is not None:
                    d = dets if dets is not None else np.zeros((0, 5))
                    writer.write(draw(img, zones, last_step, d, tv))
                else:
                    writer.write(anonymise(img, dets if dets is not None else np.zeros((0, 5))))
            i += 1
            counts["frames"] = i
            bar.advance(task)
    cap.release()
    if writer is not None:
        writer.release()
    if save_detections is not None:
        save_detections.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(save_detections, **saved)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    return {**counts, "seconds": round(wall, 2),
            "x_realtime": round(counts["frames"] / fps / wall, 2) if wall > 0 else None,
            "events": str(events_out), "annotated": str(annotate) if annotate else None}
