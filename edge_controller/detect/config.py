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
from edge_controller.detect.nanodet import NanoDetConfig

SSD_INT8 = resources.path(resources.DETECTOR_MODEL)
# Not in the wheel (the source of the INT8 model, a benchmark baseline): only a source
# checkout has it, for tests and bench/.
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SSD_FP32 = MODELS_DIR / "ssdlite_mobilenet_v2_coco.onnx"
NANODET_FP32 = MODELS_DIR / "nanodet_m_416.onnx"

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
    noise_k: float = Field(
        4.0, ge=0, le=20, description="The change that counts as motion is at least this many "
        "times the frame's noise (a robust estimate from the difference image), so sensor "
        "noise at night or noise amplified by fog removal does not look like motion; 0: "
        "the fixed diff_threshold only.",
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


class EnhanceConfig(_Section):
    """What the detector does to a frame before it looks, when visibility is poor."""

    enabled: bool = Field(
        True, description="Undo fog, lift night frames and adapt thresholds before detection "
        "(a clear daytime frame passes unchanged).",
    )
    regime: Literal["auto", "day", "night"] = Field(
        "auto", description="Lighting regime: 'auto' takes it from the controller's dimming "
        "task when it runs, else from the frame itself (its brightness); 'day'/'night' fix it.",
    )
    bands: int = Field(
        36, ge=4, le=144, description="Horizontal bands the fog correction and the night gain "
        "are estimated in (fog and lamp light change mostly with distance, i.e. with the row).",
    )
    haze_percentile: float = Field(
        5.0, gt=0, le=50, description="Percentile of a band's darkest colour channel taken as "
        "its fog veil: the darkest real things (shadows, clothes) are near black, so what "
        "lifts them is airlight. Gives a lower bound of the transmission.",
    )
    haze_keep: float = Field(
        0.05, ge=0, le=0.5, description="Share of the estimated veil left in place (the "
        "darkest things are not quite black; removing all of it overshoots).",
    )
    fog_min_veil: float = Field(
        0.06, ge=0, le=1, description="Below this estimated veil (1 - transmission) in every "
        "band the frame counts as clear and passes unchanged.",
    )
    min_transmission: float = Field(
        0.3, gt=0.01, le=1, description="Transmission floor: where fog lets less through, the "
        "correction stops growing (it would only amplify noise).",
    )
    use_mor: bool = Field(
        True, description="With a camera calibration ([visibility.calibration]) and a fresh "
        "MOR from the visibility task, take the transmission from the fog model "
        "t = exp(-2.996 d / MOR) (never below what the frame itself shows).",
    )
    smoothing: float = Field(
        0.3, gt=0, le=1, description="Per-frame update rate of the fog and gain estimates (1: "
        "no memory); a slow estimate does not flicker, which would look like motion.",
    )
    dark_level: float = Field(
        0.06, gt=0, le=1, description="'auto' regime: a frame whose median linear brightness "
        "is below this is a night frame.",
    )
    night_noise: float = Field(
        12.0, gt=0, le=255, description="'auto' regime: a frame whose pixel noise (robust "
        "sigma, grey levels 0-255) is above this is a night frame too: the camera's "
        "auto-gain brightened it and amplified the sensor noise (a clear day is near 2).",
    )
    night_target: float = Field(
        0.18, gt=0, le=1, description="Night: each band's median linear brightness is brought "
        "to this (local exposure; the lamp's light falls off steeply with distance).",
    )
    night_max_gain: float = Field(
        40.0, ge=1, le=1000, description="Most the night exposure may multiply the light by.")
    night_denoise: float = Field(
        1.2, ge=0, le=10, description="Night: Gaussian blur sigma (px) against sensor noise "
        "before the gain (0: none).",
    )
    night_temporal: float = Field(
        0.05, ge=0, le=1, description="Night: update rate of the slow model of the static "
        "scene; where nothing stands out from it (the foreground check) the frame is "
        "replaced by it, so the background the model sees has almost no noise (0: no "
        "temporal denoising).",
    )
    night_fg_k: float = Field(
        3.0, gt=0, le=50, description="Night: a pixel of the small analysis frame stands out "
        "from the background model when it differs by this many times its band's noise.",
    )
    night_fg_rate: float = Field(
        0.05, gt=0, le=1, description="Night: update rate of the slow background model "
        "behind the foreground check (where nothing stands out).",
    )
    score_threshold_night_fg: float = Field(
        0.2, ge=0, le=1, description="Night: a box scoring below score_threshold_night is "
        "still kept from this score up when at least night_fg_share of it stands out "
        "from the background (noise rarely does).",
    )
    night_fg_share: float = Field(
        0.3, ge=0, le=1, description="Night: share of a box that must stand out from the "
        "background for a low-scoring box to count.",
    )
    night_low_iou: float = Field(
        0.15, ge=0, le=1, description="Night: a box kept only thanks to the foreground is "
        "dropped when it overlaps a better box by more than this IoU (a fragment or a "
        "shifted copy of the same person).",
    )
    night_grey: bool = Field(
        True, description="Night: hand the detector a grey image (luminance only): at low "
        "light the colour is mostly noise.",
    )
    score_threshold_night: float = Field(
        0.3, ge=0, le=1, description="Detection score threshold for night frames: people "
        "lifted out of the dark score lower than in daylight.",
    )
    score_threshold_grey: float = Field(
        0.22, ge=0, le=1, description="Detection score threshold for greyscale (IR) frames: "
        "the model was trained on colour, people in grey score lower.",
    )


class SightConfig(_Section):
    """When the pole cannot see: the checks behind the crossing function's `degraded` state."""

    enabled: bool = Field(
        True, description="Check that the camera can still see the crossing (blocked, moved, "
        "out of focus, too dark, fog too dense) and report the crossing function as degraded "
        "when it cannot.",
    )
    every_frames: int = Field(
        5, ge=1, le=1000, description="Analyse every n-th processed frame (a small grey copy).")
    reference_frames: int = Field(
        8, ge=1, le=200, description="Analyses whose median is the reference view (learnt at "
        "start, with enough light).",
    )
    reference_spread: int = Field(
        3, ge=1, le=100, description="Only every n-th analysis with enough light goes into the "
        "reference, so that its median sees people move on (it spans reference_frames x "
        "reference_spread analyses); until then the monitor reports `learning`, not a fault.",
    )
    refresh_rate: float = Field(
        0.02, ge=0, le=1, description="How fast the reference follows the view while nothing "
        "is wrong (lighting drifts through the day).",
    )
    confirm: int = Field(
        3, ge=1, le=1000, description="Analyses in a row that must show a cause before it is "
        "reported.")
    clear: int = Field(
        3, ge=1, le=1000, description="Analyses in a row without a cause before it is cleared.")
    dark_level: float = Field(
        3.0, ge=0, le=255, description="Median grey level (0-255) of the raw frame below which "
        "it is too dark to see anything.",
    )
    min_contrast: float = Field(
        4.0, ge=0, le=255, description="Spread of grey levels (5th to 95th percentile) below "
        "which the frame is too dark or too flat to see anything.",
    )
    min_transmission: float = Field(
        0.12, ge=0, le=1, description="Fog transmission where people walk below which the "
        "detector cannot find them (low detectability).",
    )
    blocked_ratio: float = Field(
        0.3, gt=0, le=1, description="A cell whose coarse structure and fine texture both fell "
        "below this share of the reference's is lost.",
    )
    blocked_share: float = Field(
        0.5, gt=0, le=1, description="Share of lost cells at which the view is blocked.")
    moved_px: float = Field(
        12.0, gt=0, description="A view shifted by more than this (frame pixels) against the "
        "reference has moved: the zones no longer lie on the road.",
    )
    moved_margin: float = Field(
        0.06, ge=0, le=1, description="A shift counts only when the view matches the reference "
        "this much better (correlation) at that shift than where it is: people walking "
        "through the view pull a weak match a few pixels aside.",
    )
    min_similarity: float = Field(
        0.5, ge=-1, le=1, description="Correlation of the coarse structure with the reference "
        "below which the view has changed (the camera turned).",
    )
    defocus_ratio: float = Field(
        0.45, gt=0, le=1, description="Fine texture relative to coarse structure, as a share "
        "of the reference's, below which the lens is out of focus.",
    )


class DetectorConfig(_Section):
    enabled: bool = Field(True, description="Run the person detector on camera frames.")
    model: Path = Field(
        SSD_INT8, description="ONNX model of the SSD pipeline (tiles, focus windows), used in "
        "the conditions [detector.nanodet] use_when leaves out. The default is the "
        "SSDLite-MobileNetV2 (COCO), INT8-quantised, that the package ships; a source "
        "checkout's models/ also has the fp32 original.",
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
    enhance: EnhanceConfig = Field(
        default_factory=EnhanceConfig, description="Fog, night and greyscale handling.")
    sight: SightConfig = Field(
        default_factory=SightConfig, description="Whether the camera can see (health checks).")
    nanodet: NanoDetConfig = Field(
        default_factory=NanoDetConfig,
        description="NanoDet-m, the detector by default, and where it looks.")

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
