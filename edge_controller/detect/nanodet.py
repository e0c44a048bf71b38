"""NanoDet-m: the person detector that looks at every frame by default.

NanoDet-m (416 x 416, COCO; `models/nanodet_m_416_int8.md`) finds people where the
SSDLite pipeline cannot: in lifted night frames SSDLite takes the sensor grain for
texture (frames 0-399 at 20 % of daylight: recall 0.33 -> 0.68), in greyscale (IR) it
misses the colour it leans on, and walking pairs it merges into one box (the crossing
reference scenarios: crosswalks recall 0.83 -> 0.93). It costs about twice an SSD view
per inference, but it runs once per frame on the whole frame (tiles and focus windows
hurt it: upscaled crops of a noisy frame make it see people in the grain), so a frame
costs about what the SSD pipeline's passes do. `use_when` says in which conditions it
looks (default: all); where it does not, the SSD pipeline of `[detector]` (model,
tiles, focus windows, motion gating) does.

`NanoDet` decodes the GFL head: per stride 8, 16 and 32, class scores [1, N, 80]
(sigmoid applied in the graph; person is class 0) and box distributions [1, N, 44]
(4 sides x 11 bins): softmax over the bins, the expected bin times the stride is the
distance from the cell centre, (i + 0.5) * stride, to each side. NMS in numpy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge_controller import resources
from edge_controller.detect.boxes import Detections, empty, nms

NANODET_INT8 = resources.path(resources.NANODET_MODEL)
MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR, NanoDet's training recipe
STD = np.array([57.375, 57.12, 58.395], np.float32)
BINS = 11  # reg_max 10
STRIDES = (8, 16, 32)
Use = Literal["night", "grey", "day"]


class NanoDetConfig(BaseModel):
    """`[detector.nanodet]`: NanoDet-m, and the conditions it looks in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True, description="Use NanoDet-m in the conditions of use_when; false: the SSD "
        "pipeline of [detector] everywhere.")
    model: Path = Field(
        NANODET_INT8, description="ONNX NanoDet-m model (416 x 416, COCO, GFL head). The "
        "default is the INT8 model the package ships; a source checkout's models/ also has "
        "the fp32 original.")
    use_when: list[Use] = Field(
        ["day", "night", "grey"], description="Where NanoDet-m looks instead of the SSD "
        "pipeline: 'day' (clear and fog frames), 'night' (the enhancer's night mode), 'grey' "
        "(three equal channels: IR). [] is the SSD pipeline everywhere.")
    threads: int = Field(
        0, ge=0, le=64, description="onnxruntime intra-op threads (0: as [detector] threads).")
    score_threshold: float = Field(
        0.45, ge=0, le=1, description="Minimum score by day, in fog and on greyscale (IR) "
        "frames; tuned on frames 0-399.")
    score_threshold_night: float = Field(
        0.5, ge=0, le=1, description="Minimum score at night for any box (frames 0-399: 0.45 "
        "let precision fall to 0.84 at 10 % of daylight).")
    score_threshold_night_fg: float = Field(
        0.4, ge=0, le=1, description="At night, boxes down to this score count where at "
        "least `enhance.night_fg_share` of the box stands out from the background.")
    nms_iou: float = Field(0.6, gt=0, le=1, description="NMS IoU.")

    @property
    def floor(self) -> float:
        return min(self.score_threshold, self.score_threshold_night,
                   self.score_threshold_night_fg)


class NanoDet:
    """One onnxruntime session of a NanoDet-m export and its decoder (the pipeline's
    `Detector` protocol: `detect(image)` -> (N, 5) boxes in the image's pixels)."""

    def __init__(self, path: Path, threads: int = 1, score_floor: float = 0.2,
                 nms_iou: float = 0.6) -> None:
        # Here, not at the top: detect.config imports this module for NanoDetConfig, and
        # detect.model imports detect.config.
        from edge_controller.detect.model import cpu_session

        if not Path(path).is_file():
            raise FileNotFoundError(f"NanoDet model {path} not found")
        self.session: Any = cpu_session(Path(path), threads)
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        shape = inp.shape
        if len(shape) != 4 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise ValueError(f"{path}: a NanoDet model takes [1, 3, S, S]; it takes {shape}")
        self.size = int(shape[2])
        self.levels: list[tuple[int, str, str]] = []
        outs = {o.name: o.shape for o in self.session.get_outputs()}
        for stride in STRIDES:
            n = (self.size // stride) ** 2
            cls = [k for k, s in outs.items() if s[-2:] == [n, 80]]
            reg = [k for k, s in outs.items() if s[-2:] == [n, 4 * BINS]]
            if len(cls) != 1 or len(reg) != 1:
                raise ValueError(f"{path}: no NanoDet head for stride {stride} "
                                 f"([1, {n}, 80] and [1, {n}, {4 * BINS}]); outputs {outs}")
            self.levels.append((stride, cls[0], reg[0]))
        self.names = [x for _, c, r in self.levels for x in (c, r)]
        self.score_floor = score_floor
        self.nms_iou = nms_iou
        self.inferences = 0
        self.inference_s = 0.0

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> Detections:
        h, w = image_bgr.shape[:2]
        x = preprocess(image_bgr, self.size)
        t0 = time.perf_counter()
        outs = self.session.run(self.names, {self.input_name: x})
        self.inferences += 1
        self.inference_s += time.perf_counter() - t0
        return decode(outs, self.size, w, h, self.score_floor, self.nms_iou)


def preprocess(image_bgr: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.float32]:
    """BGR frame -> [1, 3, size, size] float, NanoDet's mean and std (stretched, not
    letterboxed: the model was exported for a square input)."""
    r = cv2.resize(image_bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    x = (r.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def decode(outs: list[Any], size: int, width: int, height: int, score_floor: float,
           nms_iou: float) -> Detections:
    """Person boxes (N, 5) in pixels of a `width` x `height` image from the six head
    outputs, in the order (cls_8, reg_8, cls_16, reg_16, cls_32, reg_32)."""
    boxes, scores = [], []
    for k, stride in enumerate(STRIDES):
        cls = np.asarray(outs[2 * k])[0]
        reg = np.asarray(outs[2 * k + 1])[0]
        s = cls[:, 0]
        keep = np.flatnonzero(s >= score_floor)
        if not len(keep):
            continue
        g = size // stride
        cx = (keep % g + 0.5) * stride
        cy = (keep // g + 0.5) * stride
        d = reg[keep].reshape(-1, 4, BINS).astype(np.float32)
        d = np.exp(d - d.max(axis=2, keepdims=True))
        d /= d.sum(axis=2, keepdims=True)
        dist = (d * np.arange(BINS, dtype=np.float32)).sum(axis=2) * stride
        boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1],
                               cx + dist[:, 2], cy + dist[:, 3]], axis=1))
        scores.append(s[keep])
    if not boxes:
        return empty()
    b = np.concatenate(boxes).astype(np.float32)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]] * (width / size), 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]] * (height / size), 0, height)
    out = np.concatenate([b, np.concatenate(scores)[:, None]], axis=1).astype(np.float32)
    order = nms(out[:, :4], out[:, 4], nms_iou)[:100]
    return out[order]
