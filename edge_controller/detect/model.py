"""The detector model: an onnxruntime session plus pure-numpy pre- and post-processing.

Two kinds of model are understood:

- `ssd`: TensorFlow Object Detection API exports (the shipped SSDLite-MobileNetV2):
  input uint8 NHWC RGB of any size, outputs `detection_boxes` (normalised ymin,
  xmin, ymax, xmax), `detection_scores`, `detection_classes` (COCO ids, 1 = person)
  and `num_detections`; NMS is inside the graph.
- `yolo`: Ultralytics YOLOv8 / YOLO11 exports: input float32 NCHW RGB in [0, 1]
  (letterboxed to a fixed size), one output [1, 4 + nc, N] of cx, cy, w, h in
  input pixels and per-class scores, no NMS inside (done here).

`Model.detect(crop)` takes a BGR uint8 image (a whole frame or a tile) and returns
detections in that image's pixels; the decoders are plain functions tests call
directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge_controller.detect.boxes import Detections, as_detections, clip_to, empty, nms
from edge_controller.detect.config import DetectorConfig

UInt8Image = npt.NDArray[np.uint8]


# --- SSD (TF Object Detection API) -------------------------------------------------------


def ssd_preprocess(image_bgr: UInt8Image, size: tuple[int, int]) -> UInt8Image:
    """BGR image -> (1, h, w, 3) uint8 RGB at the model's input size (w, h)."""
    w, h = size
    img: UInt8Image = image_bgr
    if img.shape[1] != w or img.shape[0] != h:
        img = np.asarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)
    rgb = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), np.uint8)
    return np.ascontiguousarray(rgb[None])


def decode_ssd(
    boxes: npt.NDArray[Any],
    scores: npt.NDArray[Any],
    classes: npt.NDArray[Any],
    *,
    width: int,
    height: int,
    class_ids: tuple[int, ...] | list[int],
    score_threshold: float,
    num: npt.NDArray[Any] | None = None,
) -> Detections:
    """SSD outputs of one image -> detections in pixels of an image `width` x `height`.

    `boxes` (1, K, 4) or (K, 4) normalised ymin, xmin, ymax, xmax; `scores` and
    `classes` (1, K) or (K,); `num` (1,) the number of valid rows (all if None).
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    c = np.asarray(classes).reshape(-1)
    if num is not None:
        k = int(np.asarray(num).reshape(-1)[0])
        b, s, c = b[:k], s[:k], c[:k]
    keep = np.isin(np.rint(c).astype(np.int64), np.asarray(class_ids, dtype=np.int64))
    keep &= s >= score_threshold
    if not keep.any():
        return empty()
    b, s = b[keep], s[keep]
    out = np.empty((len(b), 5), dtype=np.float32)
    out[:, 0] = b[:, 1] * width
    out[:, 1] = b[:, 0] * height
    out[:, 2] = b[:, 3] * width
    out[:, 3] = b[:, 2] * height
    out[:, 4] = s
    return clip_to(out, width, height)


SSD_BOX_SCALES = np.asarray([10.0, 10.0, 5.0, 5.0], dtype=np.float32)  # ty, tx, th, tw
SSD_NMS_IOU = 0.6  # the TF Object Detection API config of SSDLite-MobileNetV2 (COCO)
SSD_MAX_DETECTIONS = 100


def decode_ssd_raw(
    raw_boxes: npt.NDArray[Any],
    raw_scores: npt.NDArray[Any],
    anchors: npt.NDArray[Any],
    *,
    width: int,
    height: int,
    class_ids: tuple[int, ...] | list[int],
    score_threshold: float,
    iou_threshold: float = SSD_NMS_IOU,
    max_detections: int = SSD_MAX_DETECTIONS,
) -> Detections:
    """Network outputs of the stripped SSD (no decoding or NMS in the graph) -> detections.

    `raw_boxes` (1, A, 4) box encodings ty, tx, th, tw; `raw_scores` (1, A, C) class
    logits (column 0 = background); `anchors` (A, 4) normalised ymin, xmin, ymax, xmax.
    Decodes like the TF Object Detection API (scales 10, 10, 5, 5; sigmoid scores)
    but only for `class_ids`, then NMS.
    """
    enc = np.asarray(raw_boxes, dtype=np.float32).reshape(-1, 4)
    logits = np.asarray(raw_scores, dtype=np.float32)
    logits = logits.reshape(-1, logits.shape[-1])
    anc = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    ids = [i for i in class_ids if 0 <= i < logits.shape[1]]
    if not ids:
        raise ValueError(f"class ids {list(class_ids)} out of range for {logits.shape[1]} classes")
    best = logits[:, ids].max(axis=1)
    s = 1.0 / (1.0 + np.exp(-best))
    keep = np.flatnonzero(s >= score_threshold)
    if len(keep) == 0:
        return empty()
    t = enc[keep] / SSD_BOX_SCALES
    a = anc[keep]
    ha, wa = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    yc, xc = a[:, 0] + ha / 2 + t[:, 0] * ha, a[:, 1] + wa / 2 + t[:, 1] * wa
    h, w = np.exp(t[:, 2]) * ha, np.exp(t[:, 3]) * wa
    out = np.empty((len(keep), 5), dtype=np.float32)
    out[:, 0] = np.clip(xc - w / 2, 0, 1) * width
    out[:, 1] = np.clip(yc - h / 2, 0, 1) * height
    out[:, 2] = np.clip(xc + w / 2, 0, 1) * width
    out[:, 3] = np.clip(yc + h / 2, 0, 1) * height
    out[:, 4] = s[keep]
    order = nms(out[:, :4], out[:, 4], iou_threshold)[:max_detections]
    return out[order]


# --- YOLOv8 / YOLO11 ---------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: input = image * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # original image size
    height: int


def letterbox_params(width: int, height: int, size: tuple[int, int]) -> Letterbox:
    """Ultralytics-style letterbox of a `width` x `height` image into `size` (w, h)."""
    tw, th = size
    scale = min(tw / width, th / height)
    nw, nh = round(width * scale), round(height * scale)
    return Letterbox(scale, (tw - nw) / 2, (th - nh) / 2, width, height)


def letterbox(image_bgr: UInt8Image, size: tuple[int, int],
              fill: int = 114) -> tuple[UInt8Image, Letterbox]:
    """Resize keeping the aspect ratio and pad to `size` (w, h) with grey."""
    h, w = image_bgr.shape[:2]
    lb = letterbox_params(w, h, size)
    nw, nh = round(w * lb.scale), round(h * lb.scale)
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((size[1], size[0], 3), fill, dtype=np.uint8)
    left, top = round(lb.pad_x - 0.1), round(lb.pad_y - 0.1)
    out[top:top + nh, left:left + nw] = resized
    return out, Letterbox(lb.scale, float(left), float(top), w, h)


def yolo_preprocess(image_bgr: UInt8Image,
                    size: tuple[int, int]) -> tuple[npt.NDArray[np.float32], Letterbox]:
    """BGR image -> (1, 3, h, w) float32 RGB in [0, 1], letterboxed, and the letterbox."""
    boxed, lb = letterbox(image_bgr, size)
    rgb = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB)
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
    return x, lb


def decode_yolo(
    output: npt.NDArray[Any],
    lb: Letterbox,
    *,
    class_ids: tuple[int, ...] | list[int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = 300,
    transposed: bool = False,
) -> Detections:
    """YOLOv8/YOLO11 head output -> detections in pixels of the original image.

    `output` is (1, 4 + nc, N) (the Ultralytics export) or, with `transposed`,
    (1, N, 4 + nc); rows
    cx, cy, w, h in model-input pixels followed by nc class scores (already
    sigmoid). Keeps the classes in `class_ids` (score = best of them), applies the
    threshold and NMS, and undoes the letterbox.
    """
    a = np.asarray(output, dtype=np.float32)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"YOLO output must be [1, 4+nc, N], got shape {np.shape(output)}")
    if transposed:
        a = a.T
    nc = a.shape[0] - 4
    ids = [i for i in class_ids if 0 <= i < nc]
    if nc <= 0 or not ids:
        raise ValueError(f"YOLO output has {max(nc, 0)} classes; class ids {list(class_ids)} "
                         "are out of range")
    scores = a[4 + np.asarray(ids)].max(axis=0)
    keep = scores >= score_threshold
    if not keep.any():
        return empty()
    cx, cy, w, h = a[0, keep], a[1, keep], a[2, keep], a[3, keep]
    s = scores[keep]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    order = nms(xyxy, s, iou_threshold)[:max_detections]
    xyxy, s = xyxy[order], s[order]
    xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - lb.pad_x) / lb.scale
    xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - lb.pad_y) / lb.scale
    out = as_detections(np.concatenate([xyxy, s[:, None]], axis=1))
    return clip_to(out, lb.width, lb.height)


# --- the interface ---------------------------------------------------------------------


class Detector(Protocol):
    """What the pipeline needs of a model (tests pass fakes)."""

    inference_s: float

    def detect(self, image_bgr: UInt8Image) -> Detections: ...


# --- onnxruntime -------------------------------------------------------------------------


def cpu_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session: `threads` intra-op threads, sequential, quiet."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])


class Model:
    """One onnxruntime session and the decoder its kind needs."""

    def __init__(self, cfg: DetectorConfig) -> None:
        path = Path(cfg.model)
        if not path.is_file():
            raise FileNotFoundError(f"detector model {path} not found")
        self.cfg = cfg
        self.session: Any = cpu_session(path, cfg.threads)
        self.input_name: str = self.session.get_inputs()[0].name
        outs = [o.name for o in self.session.get_outputs()]
        self.size = cfg.input_size
        self.class_ids = tuple(cfg.person_class_ids)
        self.raw = False
        self.transposed = False
        self.anchors: npt.NDArray[np.float32] | None = None
        if cfg.kind == "ssd":
            self.raw = "raw_boxes" in outs
            want = (["raw_boxes", "raw_scores"] if self.raw else
                    ["detection_boxes", "detection_scores", "detection_classes"])
            names = {}
            for w in want:
                hits = [o for o in outs if o.split(":")[0] == w]
                if not hits:
                    raise ValueError(f"{path}: an SSD model needs outputs {want} (or "
                                     f"raw_boxes, raw_scores, anchors); it has {outs}")
                names[w] = hits[0]
            self.output_names = [names[w] for w in want]
            if self.raw:
                if "anchors" not in outs:
                    raise ValueError(f"{path}: raw SSD outputs need an 'anchors' output")
                shape = self.session.get_inputs()[0].shape
                if isinstance(shape[1], int) and isinstance(shape[2], int):
                    self.size = (shape[2], shape[1])  # the stripped net has a fixed input
                x = np.zeros((1, self.size[1], self.size[0], 3), dtype=np.uint8)
                (anchors,) = self.session.run(["anchors"], {self.input_name: x})
                self.anchors = np.asarray(anchors, dtype=np.float32)
        else:
            self.output_names = [outs[0]]
            shape = self.session.get_outputs()[0].shape
            # [1, 4 + nc, N] normally; a static [1, N, 4 + nc] (N > 4 + nc) is transposed.
            self.transposed = (len(shape) == 3 and isinstance(shape[1], int)
                               and isinstance(shape[2], int) and shape[1] > shape[2])
        self.inferences = 0
        self.inference_s = 0.0

    def detect(self, image_bgr: UInt8Image) -> Detections:
        """Detections (persons only, above the score threshold) in `image_bgr`'s pixels."""
        h, w = image_bgr.shape[:2]
        thr = self.cfg.score_threshold
        if self.cfg.kind == "ssd":
            x = ssd_preprocess(image_bgr, self.size)
            t0 = time.perf_counter()
            if self.raw:
                assert self.anchors is not None
                rb, rs = self.session.run(self.output_names, {self.input_name: x})
                self._count(t0)
                return decode_ssd_raw(rb, rs, self.anchors, width=w, height=h,
                                      class_ids=self.class_ids, score_threshold=thr)
            boxes, scores, classes = self.session.run(self.output_names, {self.input_name: x})
            self._count(t0)
            return decode_ssd(boxes, scores, classes, width=w, height=h,
                              class_ids=self.class_ids, score_threshold=thr)
        xf, lb = yolo_preprocess(image_bgr, self.size)
        t0 = time.perf_counter()
        (out,) = self.session.run(self.output_names, {self.input_name: xf})
        self._count(t0)
        return decode_yolo(out, lb, class_ids=self.class_ids, score_threshold=thr,
                           iou_threshold=self.cfg.nms_iou, transposed=self.transposed)

    def _count(self, t0: float) -> None:
        self.inferences += 1
        self.inference_s += time.perf_counter() - t0
