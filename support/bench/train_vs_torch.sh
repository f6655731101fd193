#!/usr/bin/env bash
# Training and inference throughput of the seed CNN: our fused CPU kernels, Candle's own ops,
# and PyTorch (../shared/reference/torch_bench.py), interleaved in one run on this machine.
# usage: support/bench/train_vs_torch.sh [ROUNDS=5] [THREADS=2]    (after cargo build --release)
set -euo pipefail
rounds=${1:-5}
threads=${2:-2}
bin=${CARGO_TARGET_DIR:-target}/release/audio-mnist
ref=$(dirname "$0")/../../../shared/reference/torch_bench.py
[ -x "$bin" ] || { echo "build first: cargo build --release --bin audio-mnist ($bin missing)" >&2; exit 2; }
[ -f "$ref" ] || { echo "missing $ref (../shared beside the checkout)" >&2; exit 2; }
out=$(mktemp -d)
for r in $(seq "$rounds"); do
    "$bin" bench-train --batch 64 --threads "$threads" --steps 20 --kernels fused >>"$out/fused"
    "$bin" bench-train --batch 64 --threads "$threads" --steps 5 --kernels candle >>"$out/candle"
    python3 "$ref" --threads "$threads" >>"$out/torch"
    echo "round $r/$rounds done" >&2
done
"$bin" bench-train --threads "$threads" --steps 10 --layers --kernels fused >"$out/layers_fused"
"$bin" bench-train --threads "$threads" --steps 3 --layers --kernels candle >"$out/layers_candle"
python3 - "$out" <<'PY'
import json, statistics as st, sys
d = sys.argv[1]
rows = {k: [json.loads(l) for l in open(f"{d}/{k}")] for k in ("fused", "candle", "torch")}
med = lambda k, f: st.median(r[f] for r in rows[k])
print(f"| | train samples/s (median of {len(rows['torch'])}) | inference samples/s | ms per step: forward / backward / AdamW |")
print("|---|---|---|---|")
for k, name in (("torch", "PyTorch " + rows["torch"][0]["torch"]), ("candle", "Candle ops"), ("fused", "ours (fused kernels)")):
    ms = "" if k == "torch" else " / ".join(f"{med(k, f):.1f}" for f in ("forward_ms", "backward_ms", "optimizer_ms"))
    print(f"| {name} | {med(k, 'train_samples_per_second'):.0f} | {med(k, 'infer_samples_per_second'):.0f} | {ms} |")
for k in ("train_samples_per_second", "infer_samples_per_second"):
    print(f"ours / PyTorch, {k}: {med('fused', k) / med('torch', k):.2f}x (per round: "
          + ", ".join(f"{a[k] / b[k]:.2f}" for a, b in zip(rows["fused"], rows["torch"])) + ")")
lf, lc = (json.load(open(f"{d}/layers_{k}"))["layers"] for k in ("fused", "candle"))
print("\n| layer | Candle forward ms | ours | Candle backward ms | ours |")
print("|---|---|---|---|---|")
for a, b in zip(lc, lf):
    print(f"| {a['layer']} | {a['forward_ms']:.1f} | {b['forward_ms']:.1f} | {a['backward_ms']:.1f} | {b['backward_ms']:.1f} |")
PY
echo "raw JSON lines: $out" >&2
