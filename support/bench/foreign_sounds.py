#!/usr/bin/env python3
"""Sounds that `audio-mnist negatives` never makes, to check "not a digit" on sounds the
training generator did not produce (Python stdlib only; seeded, so a set can be remade).

    python3 support/bench/foreign_sounds.py OUT_DIR [--count 20] [--seed 5]

Kinds (16 kHz mono WAVs, 0.4-1.5 s, peak -30 to -3 dBFS, `{kind}_{i}.wav`):
  siren    a tone whose pitch swings sinusoidally (600-1500 Hz, 0.5-4 swings a second)
  dtmf     telephone key tones: two sines per key, 60-150 ms keys, gaps between
  knock    2-5 knocks on a door: decaying low resonances (80-400 Hz) with a noise tap
  bark     a bark, roughly: a harmonic burst whose pitch drops (400 -> 250 Hz), rough onset
  typing   keyboard clicks: short filtered ticks at irregular 60-250 ms intervals, room hiss
  whistle  a whistled tune: 1-2.5 kHz notes with vibrato, glides between them
"""
import argparse
import math
import os
import random
import struct
import wave

RATE = 16000


def write_wav(path, x):
    peak = max(1e-9, max(abs(v) for v in x))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(struct.pack("<h", int(max(-1.0, min(1.0, v / peak * x.level)) * 32767)) for v in x))


class Sound(list):
    level = 0.5


def resonance(x, f, r):
    """Two-pole resonator at f Hz, pole radius r."""
    c, y1, y2, out = 2 * r * math.cos(2 * math.pi * f / RATE), 0.0, 0.0, []
    for v in x:
        y = v + c * y1 - r * r * y2
        out.append(y)
        y1, y2 = y, y1
    return out


def siren(rng, n):
    lo, hi, rate = rng.uniform(600, 900), rng.uniform(1000, 1500), rng.uniform(0.5, 4)
    phase, out = 0.0, []
    for i in range(n):
        f = lo + (hi - lo) * (0.5 + 0.5 * math.sin(2 * math.pi * rate * i / RATE))
        phase += 2 * math.pi * f / RATE
        out.append(math.sin(phase) + 0.3 * math.sin(3 * phase))
    return out


def dtmf(rng, n):
    rows, cols, out = [697, 770, 852, 941], [1209, 1336, 1477], []
    while len(out) < n:
        a, b = rng.choice(rows), rng.choice(cols)
        key = int(rng.uniform(0.06, 0.15) * RATE)
        out += [math.sin(2 * math.pi * a * i / RATE) + math.sin(2 * math.pi * b * i / RATE) for i in range(key)]
        out += [0.0] * int(rng.uniform(0.04, 0.12) * RATE)
    return out[:n]


def knock(rng, n):
    x = [0.0] * n
    t = int(rng.uniform(0.02, 0.1) * RATE)
    for _ in range(rng.randint(2, 5)):
        f = rng.uniform(80, 400)
        for i in range(min(int(0.15 * RATE), n - t)):
            d = math.exp(-i / (0.02 * RATE))
            x[t + i] += d * math.sin(2 * math.pi * f * i / RATE) + (rng.gauss(0, 0.5) if i < 40 else 0.0)
        t += int(rng.uniform(0.12, 0.3) * RATE)
        if t >= n:
            break
    return x


def bark(rng, n):
    f0, f1, length = rng.uniform(350, 500), rng.uniform(200, 300), min(n, int(rng.uniform(0.15, 0.35) * RATE))
    phase, out = 0.0, []
    for i in range(n):
        if i >= length:
            out.append(0.0)
            continue
        u = i / length
        phase += 2 * math.pi * (f0 + (f1 - f0) * u) / RATE
        env = min(1.0, i / 80) * (1 - u) ** 1.5
        out.append(env * (sum(math.sin(h * phase) / h for h in range(1, 8)) + rng.gauss(0, 0.3)))
    return resonance(out, rng.uniform(800, 1400), 0.8)


def typing(rng, n):
    x = [rng.gauss(0, 0.003) for _ in range(n)]
    t = int(rng.uniform(0.0, 0.1) * RATE)
    while t < n:
        f = rng.uniform(2000, 5000)
        for i in range(min(160, n - t)):
            x[t + i] += math.exp(-i / 25) * math.sin(2 * math.pi * f * i / RATE) * rng.uniform(0.5, 1)
        t += int(rng.uniform(0.06, 0.25) * RATE)
    return x


def whistle(rng, n):
    notes, phase, out, f = [rng.uniform(1000, 2500) for _ in range(rng.randint(2, 5))], 0.0, [], None
    per = n // len(notes)
    for i in range(n):
        target = notes[min(i // per, len(notes) - 1)]
        f = target if f is None else f + (target - f) * 0.002
        phase += 2 * math.pi * f * (1 + 0.01 * math.sin(2 * math.pi * 6 * i / RATE)) / RATE
        out.append(math.sin(phase) + rng.gauss(0, 0.02))
    return out


KINDS = {"siren": siren, "dtmf": dtmf, "knock": knock, "bark": bark, "typing": typing, "whistle": whistle}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for k, (name, make) in enumerate(sorted(KINDS.items())):
        for i in range(args.count):
            rng = random.Random(args.seed * 1000003 + k * 1009 + i)
            x = Sound(make(rng, int(rng.uniform(0.4, 1.5) * RATE)))
            x.level = 10 ** (rng.uniform(-30, -3) / 20)
            write_wav(os.path.join(args.out, f"{name}_{i}.wav"), x)
    print(f"{len(KINDS) * args.count} files in {args.out}")


if __name__ == "__main__":
    main()
