#!/usr/bin/env bash
# Feature-extraction throughput, ours vs the seed's librosa pipeline, same files, same machine,
# one run. Prints a Markdown table row per data set (medians).
#
#   support/bench/features_vs_librosa.sh DATA_DIR [DATA_DIR...]
#
# Needs: a release build (cargo build --release), python3 with librosa (pip install librosa),
# and ../shared/reference/seed_pytorch.py beside the checkout. Run from the repository root.
set -euo pipefail
target=${CARGO_TARGET_DIR:-target}
bin="$target/release/audio-mnist"
ref=../shared/reference/seed_pytorch.py
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -f "$ref" ] || { echo "missing $ref" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| data | files | librosa files/s (median of 3) | ours files/s, 2 threads (median of 5) | ours, 1 thread | ratio |"
echo "|---|---|---|---|---|---|"
for data in "$@"; do
  lib=()
  for _ in 1 2 3; do
    lib+=("$(python3 "$ref" features "$data" "$tmp/x.npz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["files_per_s"])')")
  done
  lmed=$(printf '%s\n' "${lib[@]}" | sort -g | sed -n 2p)
  ours=$("$bin" bench-features --data "$data" --repeat 5 --threads 2 2>/dev/null)
  one=$("$bin" bench-features --data "$data" --repeat 5 --threads 1 2>/dev/null)
  python3 - "$data" "$lmed" "$ours" "$one" <<'PY'
import json, sys
data, lmed, ours, one = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(f"| {data} | {ours['files']} | {lmed:.0f} | {ours['files_per_s']:.0f} | {one['files_per_s']:.0f} | {ours['files_per_s']/lmed:.1f}x |")
PY
done
