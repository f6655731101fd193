#!/usr/bin/env bash
# On a CUDA machine: the seed recipe's training on one FSDD fold (test theo, validation nicolas),
# ours (a `--features cuda` build) next to the seed's PyTorch model on the same GPU and the same
# features; the synthetic throughput of both (batch 64); relevance maps on the GPU against the
# same maps on the CPU. Writes JSON files into OUT_DIR.
#
#   support/bench/gpu_vs_torch.sh BIN FSDD_DIR OUT_DIR
#
# Needs python3 with torch (CUDA), numpy and safetensors, and seed_pytorch.py (../shared/reference)
# in SEED_PYTORCH_DIR or beside torch_gpu.py.
set -euo pipefail
bin=$1; data=$2; out=$3
here=$(dirname "$0")
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
"$bin" features --data "$data" --out "$w/f.safetensors" --recipe seed --cache-dir "$w/cache" >/dev/null
fold=(--test-speakers theo --val-speakers nicolas)
"$bin" train --data "$data" --recipe seed "${fold[@]}" --out "$w/ours" --cache-dir "$w/cache" >"$out/ours_train.log" 2>&1
python3 - "$w/ours/metrics.json" >"$out/ours_train.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({k: m[k] for k in ["test_accuracy", "epochs", "train_seconds", "train_samples_per_second", "device", "stages"]}))
PY
python3 "$here/torch_gpu.py" "$w/f.safetensors" "${fold[@]}" >"$out/torch_train.json"
"$bin" bench-train --steps 100 >"$out/ours_bench.json"
python3 "$here/torch_gpu.py" --synthetic >"$out/torch_bench.json"
# Relevance maps of the same model and files: GPU (Candle's ops) against CPU (fused kernels).
files=("$data"/recordings/*_theo_*.wav)
files=("${files[@]:0:20}")
"$bin" predict --json --explain "$w/gpu" --model "$w/ours/model.safetensors" "${files[@]}" >"$out/explain_gpu.jsonl"
CUDA_VISIBLE_DEVICES= "$bin" bench-train --steps 2 >"$out/cpu_check.json" # says which device that is
CUDA_VISIBLE_DEVICES= "$bin" predict --json --explain "$w/cpu" --model "$w/ours/model.safetensors" "${files[@]}" >"$out/explain_cpu.jsonl"
"$bin" bench-explain --model "$w/ours/model.safetensors" --limit 100 "$data/recordings" >"$out/explain_bench_gpu.json"
python3 - "$out/explain_gpu.jsonl" "$out/explain_cpu.jsonl" >"$out/explain_compare.json" <<'PY'
import json, sys
gpu = [json.loads(l) for l in open(sys.argv[1])]; cpu = [json.loads(l) for l in open(sys.argv[2])]
worst = 0.0
for g, c in zip(gpu, cpu):
    for key in ("per_band", "per_frame"):
        a, b = g["relevance"][key], c["relevance"][key]
        scale = max(1e-9, max(abs(v) for v in b))
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b)) / scale)
print(json.dumps({"files": len(gpu), "same_answers": all(g["label"] == c["label"] for g, c in zip(gpu, cpu)),
                  "max_relative_difference": worst}))
PY
cat "$out"/*.json
