#!/usr/bin/env bash
# Every meta-learner (maml-trpo, pretrained, maml-fo, promp, reptile) with its default options on one config and
# seed 1, the same tasks, episodes per task and horizon (pretrained samples one batch per iteration instead of two),
# then one evaluation of all of them on the same 40 held-out tasks (k = 0..3, --random added), and the mean
# seconds per meta-iteration of each run.
#
# usage: experiments/compare-learners.sh CONFIG OUTPUT_DIR [KEY=VALUE ...]
#   CONFIG       a config name or path, e.g. navigation-2d/paper
#   OUTPUT_DIR   one run directory per learner goes under it, the evaluation in OUTPUT_DIR/evaluation
#   KEY=VALUE    extra --set overrides applied to every learner, e.g. train.num_iterations=50
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG OUTPUT_DIR [KEY=VALUE ...]" >&2
    exit 2
fi
config="$1"
out="$2"
shift 2
overrides=()
for kv in "$@"; do
    overrides+=(--set "$kv")
done
learners=(maml-trpo pretrained maml-fo promp reptile)
for learner in "${learners[@]}"; do
    maml-rl train "$config" --output "$out/$learner" --seed 1 --set algorithm="$learner" "${overrides[@]}" --no-progress
done
maml-rl evaluate "$out/maml-trpo" --compare "$out/pretrained" "$out/maml-fo" "$out/promp" "$out/reptile" --random \
    --seed 0 --output "$out/evaluation"
for learner in "${learners[@]}"; do
    python -c "import sys; from maml_rl.logging import read_metrics; rows = read_metrics(sys.argv[1]); \
print(f'{sys.argv[2]}: {sum(r[\"time/iteration\"] for r in rows) / len(rows):.2f} s per meta-iteration')" \
        "$out/$learner/metrics.csv" "$learner"
done
