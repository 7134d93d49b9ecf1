#!/usr/bin/env bash
# Reproduce the 2D-navigation results of docs/results.md (MAML, pretrained, oracle, random; paper preset, seed 1).
# About 11 min (MAML) + 4 min (pretrained) + 4 min (oracle) + 15 s (evaluation) on a 2-core CPU.
set -euo pipefail
out="${1:-runs/navigation-2d}"
maml-rl train navigation-2d/paper      --output "$out/maml"       --seed 1
maml-rl train navigation-2d/pretrained --output "$out/pretrained" --seed 1
maml-rl train navigation-2d/oracle     --output "$out/oracle"     --seed 1
maml-rl evaluate "$out/maml" --compare "$out/pretrained" "$out/oracle" --random --seed 0 --output "$out/evaluation"
maml-rl plot "$out/maml" --metric returns/pre_adapt_mean --metric returns/post_adapt_mean \
    --output "$out/learning-curve.png"
