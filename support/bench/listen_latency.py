#!/usr/bin/env python3
"""How soon `audio-mnist listen` prints a digit after its word ends, fed at real-time speed.

Usage: listen_latency.py BINARY MODEL WAV [WAV ...]
Each WAV (16-bit mono) is written to `listen - --rate R --format s16le --json` through a pipe
in 10 ms chunks at the pace of a microphone; each printed word's delay is the time it was read
minus the moment its end (`end_s`) was written. Prints every delay and the worst.
"""
import json, subprocess, sys, threading, time, wave

def run(binary, model, path):
    w = wave.open(path)
    assert w.getsampwidth() == 2 and w.getnchannels() == 1, "16-bit mono WAV"
    rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    p = subprocess.Popen([binary, "listen", "-", "--rate", str(rate), "--format", "s16le", "--json",
                          "--model", model], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    chunk = 2 * rate // 100
    t0 = []
    def write():
        start = time.monotonic()
        t0.append(start)
        for k, i in enumerate(range(0, len(pcm), chunk)):
            p.stdin.write(pcm[i:i + chunk])
            # the pace of a microphone: chunk k+1 is due (k+1) * 10 ms after the start
            time.sleep(max(0.0, start + (k + 1) * 0.01 - time.monotonic()))
        p.stdin.close()
    threading.Thread(target=write, daemon=True).start()
    delays = []
    for line in p.stdout:
        now = time.monotonic()
        e = json.loads(line)
        if "end_s" in e:
            delays.append((e["label"], e["end_s"], now - t0[0] - e["end_s"]))
    p.wait()
    return delays

if __name__ == "__main__":
    binary, model, *wavs = sys.argv[1:]
    worst = 0.0
    for path in wavs:
        for label, end, delay in run(binary, model, path):
            worst = max(worst, delay)
            print(f"{path}: {label} ending at {end:.2f} s printed {1000 * delay:.0f} ms after")
    print(f"worst: {1000 * worst:.0f} ms")
