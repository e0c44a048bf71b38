# Runs the shared link vectors against the product codec. The same file runs
# under CPython (imported by test_codec.py) and under the MicroPython unix
# port (as a script: micropython check_vectors.py CODEC_DIR VECTORS.json).
import json
import sys


def _expect_fields(vec, bytes_fields):
    out = {}
    for k in vec["fields"]:
        v = vec["fields"][k]
        out[k] = bytes.fromhex(v) if k in bytes_fields else v
    return out


def check(codec, doc):
    """Return a list of failure strings (empty when every vector passes)."""
    fails = []
    bf = doc["bytes_fields"]
    for vec in doc["good"]:
        name = vec["name"]
        wire = bytes.fromhex(vec["hex"])
        want = _expect_fields(vec, bf)
        # Decode: exactly one frame, same header, same fields.
        dec = codec.Decoder()
        frames = dec.feed(wire)
        if len(frames) != 1:
            fails.append(name + ": decoded %d frames" % len(frames))
            continue
        f = frames[0]
        if (f.ver, f.mtype, f.seq, f.flags) != (doc["version"], vec["type"], vec["seq"],
                                                vec["flags"]):
            fails.append(name + ": header mismatch")
        got = f.fields()
        if got != want:
            fails.append(name + f": fields {got!r} != {want!r}")
        # Encode: byte-identical to the reference.
        enc = codec.pack(vec["type"], vec["seq"], want, vec["flags"])
        if enc != wire:
            fails.append(name + ": encoded {} != {}".format(enc.hex(), vec["hex"]))
        # Byte-at-a-time feeding must give the same frame.
        dec2 = codec.Decoder()
        got2 = []
        for i in range(len(wire)):
            got2.extend(dec2.feed(wire[i:i + 1]))
        if len(got2) != 1 or got2[0] != f:
            fails.append(name + ": byte-wise decode differs")
    for vec in doc["bad"]:
        dec = codec.Decoder()
        frames = dec.feed(bytes.fromhex(vec["hex"]))
        c = dec.counters()
        if frames:
            fails.append(vec["name"] + ": decoded a frame from bad input")
        if c[vec["counter"]] != 1:
            fails.append(vec["name"] + ": counter %s=%d, want 1" % (vec["counter"],
                                                                  c[vec["counter"]]))
        # After the bad frame, a good one still decodes (resync).
        good = bytes.fromhex(doc["good"][0]["hex"])
        if len(dec.feed(good)) != 1:
            fails.append(vec["name"] + ": no resync")
    return fails


def main():
    sys.path.insert(0, sys.argv[1])
    import codec

    with open(sys.argv[2]) as fh:
        doc = json.load(fh)
    fails = check(codec, doc)
    for f in fails:
        print("FAIL " + f)
    total = len(doc["good"]) + len(doc["bad"])
    print("%d vectors, %d failures" % (total, len(fails)))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
