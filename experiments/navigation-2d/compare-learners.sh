#!/usr/bin/env bash
# Every meta-learner on 2D navigation, paper preset, seed 1, its default options, 100 meta-iterations each
# (the same tasks, episodes per task and horizon; pretrained samples one batch per iteration instead of two),
# then one evaluation of all of them on the same 40 held-out tasks, and seconds per meta-iteration.
set -euo pipefail
out="${1:-runs/nav-learners}"
for learner in maml-trpo pretrained maml-fo promp reptile; do
    maml-rl train navigation-2d/paper --output "$out/$learner" --seed 1 --set algorithm="$learner" --no-progress
done
maml-rl evaluate "$out/maml-trpo" --compare "$out/pretrained" "$out/maml-fo" "$out/promp" "$out/reptile" \
    --seed 0 --output "$out/evaluation"
for learner in maml-trpo pretrained maml-fo promp reptile; do
    python -c "import sys; from maml_rl.logging import read_metrics; rows = read_metrics(sys.argv[1]); \
print(f'{sys.argv[2]}: {sum(r[\"time/iteration\"] for r in rows) / len(rows):.2f} s per meta-iteration')" \
        "$out/$learner/metrics.csv" "$learner"
done
