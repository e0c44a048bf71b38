"""`[detector]` section of the pole config: the person detector and how it saves CPU.

Every knob has a default and a description (the config reference is generated
from them). Paths are relative to the working directory of the controller
unless absolute; the default model is package data (`edge_controller/models/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_controller import resources

SSD_INT8 = resources.path(resources.DETECTOR_MODEL)
# Not in the wheel (the source of the INT8 model, a benchmark baseline): only a source
# checkout has it, for tests and bench/.
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SSD_FP32 = MODELS_DIR / "ssdlite_mobilenet_v2_coco.onnx"

Point = Annotated[list[float], Field(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Field(min_length=3)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TilingConfig(_Section):
    whole_frame: bool = Field(
        False, description="Run the model on the whole frame (finds large, near people and "
        "people cut by tile borders).",
    )
    cols: int = Field(
        3, ge=1, le=8, description="Tile columns (1 with rows = 1: no tiles). Tiles see small, "
        "far people at a higher resolution.",
    )
    rows: int = Field(2, ge=1, le=8, description="Tile rows.")
    overlap: float = Field(
        0.2, ge=0, lt=0.9,
        description="Overlap of neighbouring tiles as a fraction of the tile size.",
    )
    top: float = Field(
        0.0, ge=0, lt=1,
        description="Fraction of the frame height at the top that the tiles skip (sky, "
        "facades: nobody walks there). The whole-frame pass still sees it.",
    )
    merge_iou: float = Field(
        0.45, gt=0, le=1, description="IoU above which two boxes from different passes are "
        "the same person (NMS across tiles).",
    )
    contain: float = Field(
        0.7, gt=0, le=1,
        description="A box whose area lies at least this much inside a better box is a "
        "fragment of it (a person cut at a tile border) and is dropped.",
    )
    edge_px: int = Field(
        4, ge=0, le=64, description="A box within this many pixels of an inner tile border "
        "counts as cut there and loses against an uncut box of the same person.",
    )

    @property
    def tiled(self) -> bool:
        return self.cols * self.rows > 1


class CropConfig(_Section):
    enabled: bool = Field(
        False, description="Also run the model on crops around the zones (polygons of the "
        "image, given here or by the caller): the zones are seen at a higher resolution.",
    )
    zones: list[Polygon] = Field(
        [], description="Zones of interest as image polygons, each a list "
        "of [x, y] pixel points (at least 3).",
    )
    margin_px: int = Field(
        24, ge=0, le=512, description="Margin added around each zone's bounding box.")
    only: bool = Field(
        False, description="Run only the zone crops (no whole frame, no tiles): people outside "
        "every zone are not looked for.",
    )


class MotionConfig(_Section):
    enabled: bool = Field(
        True, description="Gate inference on motion: tiles without motion keep their last "
        "boxes instead of running the model.",
    )
    width: int = Field(
        160, ge=32, le=1920, description="Width of the grey image motion is measured on "
        "(height follows the aspect ratio).",
    )
    diff_threshold: int = Field(
        14, ge=1, le=255, description="Grey-level change (0-255) that counts as motion.")
    min_fraction: float = Field(
        0.0015, ge=0, le=1, description="Share of a region's pixels that must move for the "
        "region to need a new inference.",
    )
    background_alpha: float = Field(
        0.5, gt=0, le=1, description="Learning rate of the running-average background (1: "
        "plain difference to the previous processed frame).")
    refresh_frames: int = Field(
        20, ge=1, le=10000, description="Run every region at least every this many processed "
        "frames, moving or not, so a person standing still is found and kept.",
    )


class FocusConfig(_Section):
    enabled: bool = Field(
        True, description="Between full passes, run the model only on windows around what "
        "moved and around the last detections that moved; still boxes are kept as they are. "
        "Needs motion.enabled.",
    )
    window: tuple[int, int] = Field(
        (280, 260), description="Window [width, height] in frame pixels (a little under the "
        "model input: people are seen at their own size or slightly larger).",
    )
    margin_px: int = Field(
        8, ge=0, le=256, description="Margin kept around each moving blob or box in a window.")
    min_blob_px: int = Field(
        300, ge=0, description="Moving blobs smaller than this (frame pixels) are noise.")
    box_motion: float = Field(
        0.02, ge=0, le=1, description="A kept box with at least this share of moving pixels "
        "is looked at again; below it the person stands still and the box is kept.",
    )
    max_windows: int = Field(
        4, ge=1, le=64, description="More windows than this: run the full pass instead.")

    @field_validator("window")
    @classmethod
    def _window(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 32:
            raise ValueError("window must be [width, height], each at least 32")
        return v


class DetectorConfig(_Section):
    enabled: bool = Field(True, description="Run the person detector on camera frames.")
    model: Path = Field(
        SSD_INT8, description="ONNX model file. The default is the SSDLite-MobileNetV2 (COCO), "
        "INT8-quantised, that the package ships; a source checkout's models/ also has the "
        "fp32 original.",
    )
    kind: Literal["ssd", "yolo"] = Field(
        "ssd", description="Model family: 'ssd' (TF Object Detection API export, NMS inside) "
        "or 'yolo' (Ultralytics YOLOv8/YOLO11 export, output [1, 4+nc, N]).",
    )
    input_size: tuple[int, int] = Field(
        (300, 300), description="Model input [width, height]: SSD crops are resized to it, "
        "YOLO crops letterboxed (use the export's imgsz, e.g. [640, 640]).",
    )
    person_class_ids: list[int] = Field(
        [1], min_length=1,
        description="Class id(s) that mean 'person': 1 for COCO SSD exports, 0 for YOLO.",
    )
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads.")
    score_threshold: float = Field(
        0.4, ge=0, le=1, description="Minimum detection score.")
    nms_iou: float = Field(
        0.45, gt=0, le=1, description="NMS IoU inside one pass (YOLO models; SSD does its own).")
    max_fps: float = Field(
        0.0, ge=0, le=120, description="Most frames per second to process (0: every frame the "
        "camera task hands on); frames in between are skipped.",
    )
    detect_interval: int = Field(
        1, ge=1, le=100, description="Process every n-th frame (1: all).")
    tiling: TilingConfig = Field(
        default_factory=TilingConfig, description="Whole frame and tiles.")
    crops: CropConfig = Field(default_factory=CropConfig, description="Crops around zones.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion gating.")
    focus: FocusConfig = Field(
        default_factory=FocusConfig, description="Windows around motion between full passes.")

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 32 or max(v) > 4096:
            raise ValueError("input_size must be [width, height] between 32 and 4096")
        return v

    @model_validator(mode="after")
    def _some_pass(self) -> DetectorConfig:
        if self.crops.only and not self.crops.enabled:
            raise ValueError("crops.only needs crops.enabled")
        if not (self.tiling.whole_frame or self.tiling.tiled or self.crops.enabled):
            raise ValueError("nothing to run: enable tiling.whole_frame, tiles or crops")
        return self
