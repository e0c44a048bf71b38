"""Person detection on camera frames (the `detector` task's engine).

`DetectionPipeline(cfg, zones).process(index, t, image)` returns float32 (N, 5)
`[x1, y1, x2, y2, score]` boxes in pixels of the original frame, or None for a
skipped frame. See docs in each module: `config` (the `[detector]` section),
`model` (onnxruntime session, SSD and YOLO decoders), `tiling` (whole frame,
tiles, zone crops, merge), `motion` (motion gating), `pipeline`.
"""

from edge_controller.detect.boxes import Detections
from edge_controller.detect.config import (
    CropConfig,
    DetectorConfig,
    MotionConfig,
    TilingConfig,
)
from edge_controller.detect.model import Model, decode_ssd, decode_yolo
from edge_controller.detect.motion import MotionGate
from edge_controller.detect.pipeline import DetectionPipeline, DetectorStats
from edge_controller.detect.tiling import grid_regions, merge, zone_regions

__all__ = [
    "CropConfig",
    "DetectionPipeline",
    "Detections",
    "DetectorConfig",
    "DetectorStats",
    "Model",
    "MotionConfig",
    "MotionGate",
    "TilingConfig",
    "decode_ssd",
    "decode_yolo",
    "grid_regions",
    "merge",
    "zone_regions",
]
