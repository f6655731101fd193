#!/usr/bin/env python3
"""The bundled model card's "in a room" set: FSDD george's 500 clips with 0.3 s of silence
each side, then brown noise (a leaky sum of random.gauss, seed 7, coefficient 0.98) at 10 dB
below the clip's mean power, written at the clip's rate. Standard library only.

    support/bench/george_in_a_room.py ../shared/data/fsdd/recordings OUT_DIR
    audio-mnist predict --json --model support/models/digits-en.safetensors OUT_DIR
"""
import glob
import math
import os
import random
import struct
import sys
import wave


def brown(n):
    b, out = 0.0, []
    for _ in range(n):
        b = 0.98 * b + random.gauss(0, 1)
        out.append(b)
    return out


def main(src, out):
    random.seed(7)
    os.makedirs(out, exist_ok=True)
    for f in sorted(glob.glob(os.path.join(src, "*_george_*.wav"))):
        with wave.open(f) as w:
            sr, n = w.getframerate(), w.getnframes()
            x = [v / 32768 for v in struct.unpack(f"<{n}h", w.readframes(n))]
        pad = int(0.3 * sr)
        y = [0.0] * pad + x + [0.0] * pad
        noise = brown(len(y))
        px = sum(v * v for v in x) / len(x)
        pn = sum(v * v for v in noise) / len(noise)
        g = math.sqrt(px / (pn * 10 ** (10 / 10)))
        z = [s + g * v for s, v in zip(y, noise)]
        peak = max(abs(v) for v in z)
        if peak > 0.99:
            z = [v / peak * 0.9 for v in z]
        with wave.open(os.path.join(out, os.path.basename(f)), "wb") as o:
            o.setnchannels(1)
            o.setsampwidth(2)
            o.setframerate(sr)
            o.writeframes(struct.pack(f"<{len(z)}h", *[int(max(-32768, min(32767, v * 32768))) for v in z]))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
