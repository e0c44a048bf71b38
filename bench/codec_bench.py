# Link codec throughput; runs on CPython and on the MicroPython unix port:
#   python bench/codec_bench.py CODEC_DIR N
#   micropython bench/codec_bench.py CODEC_DIR N
# Prints one line: "<impl> encode_fps=... decode_fps=... roundtrip_fps=..."
import sys

sys.path.insert(0, sys.argv[1])
import codec

try:
    from time import ticks_diff, ticks_us  # MicroPython

    def now_us():
        return ticks_us()

    def since_us(t0):
        return ticks_diff(ticks_us(), t0)
except ImportError:
    from time import perf_counter

    def now_us():
        return perf_counter() * 1e6

    def since_us(t0):
        return perf_counter() * 1e6 - t0


def main():
    n = int(sys.argv[2])
    # A realistic mix: commands, reports, heartbeats.
    msgs = (
        ("lamp_set", (55, 1000), codec.F_ACK_REQ),
        ("sensor_report", (12.5, 21.0, 0, 0.5, 60.0, 1234.5, 1), 0),
        ("heartbeat", (123456,), 0),
        ("lamp_state", (55, 55, 36000, 1, 0), 0),
        ("ack", (7, 0x10), 0),
    )
    t0 = now_us()
    nbytes = 0
    for i in range(n):
        m = msgs[i % len(msgs)]
        nbytes += len(codec.pack(m[0], i & 0xFF, m[1], m[2]))
    enc = since_us(t0)
    # Decode a 500-frame stream repeatedly (keeps a small MCU-like heap usable),
    # fed in 512-byte reads as a UART driver would deliver it.
    block = 500
    stream = b"".join(codec.pack(msgs[i % len(msgs)][0], i & 0xFF, msgs[i % len(msgs)][1])
                      for i in range(block))
    chunks = [stream[i:i + 512] for i in range(0, len(stream), 512)]
    dec = codec.Decoder()
    rounds = max(1, n // block)
    t0 = now_us()
    got = 0
    for _ in range(rounds):
        for c in chunks:
            for f in dec.feed(c):
                f.fields()
                got += 1
    dt = since_us(t0)
    if got != rounds * block:
        raise SystemExit("decoded %d of %d frames" % (got, rounds * block))
    if got != n:
        raise SystemExit("decoded %d of %d frames" % (got, n))
    impl = sys.implementation.name
    enc_fps = n * 1e6 / enc
    dec_fps = got * 1e6 / dt
    print("%s encode_fps=%d decode_fps=%d roundtrip_fps=%d bytes_per_frame=%.1f" % (
        impl, enc_fps, dec_fps, 1 / (1 / enc_fps + 1 / dec_fps), nbytes / n))


main()
