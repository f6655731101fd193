#!/usr/bin/env bash
# The bundled model, from scratch: support/models/digits-en.safetensors (its card: README.md
# beside this script). Redistributable data only: the Free Spoken Digit Dataset (CC BY-SA 4.0)
# and 200 synthetic voices made here by the distribution's text-to-speech engines (espeak-ng,
# flite, festival). Three networks of the `best` recipe, FSDD's george held out for testing and
# jackson for validation; one temperature for the three fitted on speech-commands-digits' 118
# strangers (`calibrate`: confidences only, no weight changes); weights stored in half
# precision (`shrink`).
#
#   support/models/make_default.sh [WORK_DIR]      (run from the repository root)
#
# Needs a release build, ../shared/data/fsdd and the engines (.ci/run installs them).
# ~10 min on 2 cores. Then run the card's checks: cargo test --test bundled.
set -euo pipefail
bin=${CARGO_TARGET_DIR:-target}/release/audio-mnist
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=${1:-target/bundled}
"$bin" synth --out "$work/synth200" --voices 200 --count 1 --seed 11
"$bin" train --data ../shared/data/fsdd --train-data "$work/synth200" --recipe best --ensemble 3 \
  --test-speakers fsdd/george --val-speakers fsdd/jackson --out "$work/out" --cache-dir "$work/cache"
"$bin" calibrate --model "$work/out/model.safetensors" --out "$work/out/calibrated.safetensors" \
  ../shared/data/speech-commands-digits/recordings
"$bin" shrink --model "$work/out/calibrated.safetensors" --out support/models/digits-en.safetensors
