#!/usr/bin/env bash
# 2D navigation as the code behind the MAML paper ran it (cbfinn/maml_rl): MAML-TRPO with the reference's sample
# budgets (reference.yaml: 2000 env steps per task and batch in training), the pretrained and oracle rows built with
# the reference's recipes, seed 1; then one evaluation on the 40 held-out tasks of seed 0 with the reference's
# evaluation batch (4000 env steps per task and step: reference.yaml's evaluation section) and a random
# initialization.
#
# usage: experiments/navigation-2d/reference.sh [OUTPUT_DIR]   (default runs/nav-reference)
set -euo pipefail
out="${1:-runs/nav-reference}"
maml-rl train navigation-2d/reference --output "$out/maml" --seed 1 --no-progress
for config in pretrained-reference oracle-reference; do
    maml-rl train "navigation-2d/$config" --output "$out/$config" --seed 1 --no-progress
done
maml-rl evaluate "$out/maml" --compare "$out/pretrained-reference" "$out/oracle-reference" --random --seed 0 \
    --output "$out/evaluation"
