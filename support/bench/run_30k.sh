#!/usr/bin/env bash
# The main job at full scale: `audio-mnist run` end to end on the 30,000-file synthetic
# AudioMNIST (espeak-ng voices, 48 kHz; for timing only, never for accuracy), with a cold
# feature cache. Prints the run's own per-stage summary, then one Markdown table row per stage
# (seconds, share, peak memory) and the whole run's wall time and peak memory.
#
#   support/bench/run_30k.sh [SYNTH_DIR] [RECIPE] [extra run flags...]
#
# SYNTH_DIR is made by ../shared/tools/synth_audiomnist.py when it has no corpus yet (needs
# espeak-ng and sox; ~5 min on 2 cores). RECIPE defaults to the default recipe (`best`).
# Needs a release build (cargo build --release). Run from the repository root.
set -euo pipefail
target=${CARGO_TARGET_DIR:-target}
bin="$target/release/audio-mnist"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
synth=${1:-${TMPDIR:-/tmp}/synth_audiomnist}
recipe=${2:-best}
shift $(( $# > 2 ? 2 : $# ))
if [ ! -f "$synth/audioMNIST_meta.txt" ]; then
  python3 ../shared/tools/synth_audiomnist.py --jobs "$(nproc)" "$synth"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s.%N)
# GNU time's -v gives the peak resident memory of the whole process.
/usr/bin/time -v -o "$work/time.txt" "$bin" run --data "$synth" --out "$work/out" \
  --cache-dir "$work/cache" --recipe "$recipe" "$@" | tee "$work/log.txt"
end=$(date +%s.%N)
python3 - "$work/out/metrics.json" "$work/time.txt" "$start" "$end" "$recipe" <<'PY'
import json, re, sys
metrics, timing, start, end, recipe = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
m = json.load(open(metrics))
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timing).read()).group(1)) / 1024
total = sum(s["seconds"] for s in m["stages"])
print(f"\nrecipe {recipe}: {m['train_files']} train / {m['val_files']} val / {m['test_files']} test files, "
      f"{m['epochs']} epochs, {m['train_samples_per_second']:.0f} train samples/s")
print("| stage | seconds | share | peak memory so far (MiB) |")
print("|---|---|---|---|")
for s in m["stages"]:
    print(f"| {s['name']} | {s['seconds']:.1f} | {100 * s['seconds'] / total:.0f}% | {s['peak_mib']:.0f} |")
print(f"| **whole process** (wall, `time -v`) | **{end - start:.1f}** | | **{peak:.0f}** |")
PY
