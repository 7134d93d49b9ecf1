#!/usr/bin/env bash
# Every meta-learner on HalfCheetah direction, modern preset (40 tasks x 20 episodes of 100 steps), seed 1,
# 50 meta-iterations each (docs/results.md's table); see experiments/compare-learners.sh.
set -euo pipefail
exec "$(dirname "$0")/../compare-learners.sh" halfcheetah-dir/modern "${1:-runs/hcd-learners}" train.num_iterations=50
