#!/usr/bin/env bash
# MAML-TRPO on 2D navigation (paper preset, 100 meta-iterations) with the exact natural gradient against the
# finite-difference Fisher-vector products at the option's default fd_base_eps 1e-8 (algorithm.options.fisher), which
# collapse to the damping: a scaled-gradient step, not the reference's (it ran base_eps 1; README, Meta-learners;
# add --set algorithm.options.fd_base_eps=1.0 below for that), seeds 1-3 each; then every
# checkpoint (iterations 25, 50, 75, 100) evaluated on the same 40 held-out tasks (k = 0..3), and seconds per
# meta-iteration.
#
# usage: experiments/navigation-2d/compare-fisher.sh [OUTPUT_DIR]   (default runs/nav-fisher)
set -euo pipefail
out="${1:-runs/nav-fisher}"
# the two variants side by side, one process each (so both see the same machine load)
pids=()
for fisher in exact finite-difference; do
    (
        for seed in 1 2 3; do
            maml-rl train navigation-2d/paper --output "$out/$fisher-seed$seed" --seed "$seed" \
                --set algorithm.options.fisher="$fisher" --no-progress
        done
    ) &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid"   # a failed run fails the script
done
for fisher in exact finite-difference; do
    for seed in 1 2 3; do
        for iteration in 25 50 75 100; do
            maml-rl evaluate "$out/$fisher-seed$seed" --checkpoint "$iteration" --seed 0 \
                --output "$out/evaluation/$fisher-seed$seed-iter$iteration" > /dev/null
        done
        python -c "import sys; from maml_rl.logging import read_metrics; rows = read_metrics(sys.argv[1]); \
print(f'{sys.argv[2]}: {sum(r[\"time/iteration\"] for r in rows) / len(rows):.2f} s per meta-iteration')" \
            "$out/$fisher-seed$seed/metrics.csv" "$fisher-seed$seed"
    done
done
