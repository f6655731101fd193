#!/usr/bin/env python3
"""The page's live mode against `audio-mnist listen` on the same audio.

    support/bench/live_vs_listen.py AUDIO_MNIST_BIN MODEL SEQ.wav [SEQ.wav ...]

Each SEQ.wav (16-bit PCM; `listen-bench --out DIR` writes sequences, `sox in.wav -b 16 -e
signed-integer out.wav` converts them) is played by Chromium's fake microphone into the page in
live mode (`support/tests/fixtures/serve_live.js`, playwright-core from the tests' cache or
$NODE_PATH) while `listen --json` reads the file; prints both digit strings and the largest
delay between a word's end and its digit on screen.
"""
import json, subprocess, sys, wave, os
here = os.path.dirname(os.path.abspath(__file__))
binary, model, *wavs = sys.argv[1:]
node_path = os.environ.get("NODE_PATH", os.path.join(here, "../../target/tmp/playwright/node_modules"))
srv = subprocess.Popen([binary, "serve", "--model", model, "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
url = srv.stdout.readline().strip().split()[-1]
shots = os.path.join(here, "../../target/tmp/live_vs_listen")
os.makedirs(shots, exist_ok=True)
try:
    for w in wavs:
        dur = wave.open(w).getnframes() / wave.open(w).getframerate()
        cli = [json.loads(l) for l in subprocess.run([binary, "listen", "--json", "--model", model, w], capture_output=True, text=True).stdout.splitlines()]
        ev = [e for e in cli if "label" in e]
        env = dict(os.environ, NODE_PATH=node_path, LIVE_MS=str(int(dur * 1000 + 700)))
        short = os.path.join(here, "../src/bin/audio-mnist/examples/three-nine-one.wav")
        o = subprocess.run(["node", os.path.join(here, "../tests/fixtures/serve_live.js"), url, w, short, shots],
                           capture_output=True, text=True, env=env)
        live = json.loads([l for l in o.stdout.splitlines() if l.startswith("LIVE ")][0][5:])
        live = [e for e in live if e["end_s"] <= dur + 0.05]
        print(os.path.basename(w), f"{dur:.1f} s | listen:", "".join(e["label"] if e["digit"] is not None else "_" for e in ev),
              "| live:", "".join(l["label"] if l["label"] != "not a digit" else "_" for l in live),
              "| max lag %.0f ms" % (1000 * max([l["lag_s"] for l in live] or [0])))
finally:
    srv.terminate()
