#!/usr/bin/env bash
# The main job, on the bundled data and models (no downloads): a guided DDIM sample grid, an inpainting,
# a hundred digits from the distilled student, and a short training run. Run after `bash tools/setup.sh`. Outputs go to outputs/ (or the folder given); a rerun
# replaces them (--force, and a fresh training folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
OUT=${1:-outputs}
mkdir -p "$OUT"
echo "== 1. forty digits from the bundled model: DDIM, 50 steps, guidance scale 3"
diffnb_sample --sampler ddim --steps 50 --guidance 3 -n 40 --no-progress --force --out "$OUT/samples.png"
echo "== 2. the bottom half of a digit filled in with RePaint, eight different completions"
diffnb_sample --image bundled:2503 --mask bottom -n 8 --classes 5 --guidance 2 --no-progress --force --out "$OUT/inpainting.png"
echo "== 3. a hundred digits from the distilled student (mnist-fast), four network calls"
diffnb_sample --model mnist-fast -n 100 --no-progress --force --out "$OUT/fast.png"
echo "== 4. a two-minute training run of the default model on the bundled digits"
rm -rf "$OUT/train"
diffnb_train --minutes 2 --out "$OUT/train" --no-progress --samples 40
echo
echo "outputs:"
echo "  $OUT/samples.png     guided samples, one column per digit (raw tensors: $OUT/samples.pt)"
echo "  $OUT/inpainting.png  the known half, then eight completions (raw tensors: $OUT/inpainting.pt)"
echo "  $OUT/fast.png        a hundred digits from the few-step student (raw tensors: $OUT/fast.pt)"
echo "  $OUT/train/          checkpoint.pt, samples.png and summary.json of the training run"
