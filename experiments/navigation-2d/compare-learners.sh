#!/usr/bin/env bash
# Every meta-learner on 2D navigation, paper preset, seed 1, 100 meta-iterations each (docs/results.md's table);
# see experiments/compare-learners.sh.
set -euo pipefail
exec "$(dirname "$0")/../compare-learners.sh" navigation-2d/paper "${1:-runs/nav-learners}"
