#!/usr/bin/env bash
# The pretrained and oracle rows of 2D navigation built as the code behind the MAML paper built them
# (pretrained-reference.yaml, oracle-reference.yaml), beside this project's stronger recipe for pretrained
# (pretrained.yaml), seed 1; then one evaluation on the 40 held-out tasks of seed 0, with a random initialization.
#
# usage: experiments/navigation-2d/reference-baselines.sh [OUTPUT_DIR]   (default runs/nav-baselines)
set -euo pipefail
out="${1:-runs/nav-baselines}"
for config in pretrained-reference oracle-reference pretrained; do
    maml-rl train "navigation-2d/$config" --output "$out/$config" --seed 1 --no-progress
done
maml-rl evaluate "$out/pretrained-reference" --compare "$out/pretrained" "$out/oracle-reference" --random --seed 0 \
    --output "$out/evaluation"
