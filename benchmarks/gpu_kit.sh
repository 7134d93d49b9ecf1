#!/usr/bin/env bash
# The GPU check of issue 6, prepared for a session that is lent a device machine (one NVIDIA H100/H200 with
# Python 3.12 and a CUDA torch, no network, at most 64 MiB carried per call, 10 minutes per command, about
# 15 minutes of device time in all). The machine lacks mujoco, mujoco_warp, warp-lang and gymnasium, and
# warp-lang alone is 149 MB as a wheel, so the packages travel in two halves over two calls back to back
# (a warm machine keeps ignored files between calls; it goes back after 30 s idle):
#
#   benchmarks/gpu_kit.sh prepare    here: download and pack the packages into .gpukit/one and .gpukit/two
#   benchmarks/gpu_kit.sh cpu        call 1, carry [".gpukit/one"]: unpack, CPU-path figures (about 3 min)
#   benchmarks/gpu_kit.sh gpu        call 2 at once, carry [".gpukit/two"]: GPU tests and figures (under 9.5 min)
#
# Each phase writes its log to $OUT (cpu.log, gpu.log, gpu-tests.xml). Steps run in order of importance, each
# under a timeout that keeps the phase inside its limit; a failing step is reported and the next one runs.
# warp's CPU compiler (warp-clang.so, 69 MB) is left out: every GPU step uses warp's CUDA device only.
set -uo pipefail

KIT=.gpukit
SITE=$KIT/site
PYTHON_VERSION=${GPUKIT_PYTHON_VERSION:-3.12}
# the versions this project is tested with (benchmarks/README.md); the device's own torch is used as it is
PACKAGES=(warp-lang==1.19.0 mujoco-warp==4.0.0 mujoco==4.0.0 mujoco-core==4.0.0 gymnasium==1.4.0
          farama-notifications==0.0.6 glfw==2.11.0)
PART_SIZE=46M

die() { echo "gpu_kit: $*" >&2; exit 2; }

prepare() {
    command -v xz >/dev/null || die "prepare needs xz"
    local build=$KIT/build
    rm -rf "$KIT" && mkdir -p "$build/wheels" "$build/stack" "$build/warp" "$KIT/one" "$KIT/two"
    local platforms=()
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        platforms+=(--platform "$tag")
    done
    local pip=(env PIP_ROOT_USER_ACTION=ignore python3 -m pip --disable-pip-version-check -q)
    "${pip[@]}" download --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
        "${platforms[@]}" -d "$build/wheels" "${PACKAGES[@]}" || die "downloading the wheels failed"
    local install=(install --no-deps --no-index --no-compile --only-binary=:all: --python-version "$PYTHON_VERSION"
                   --implementation cp "${platforms[@]}")
    "${pip[@]}" "${install[@]}" --target "$build/warp" "$build"/wheels/warp_lang-*.whl || die "unpacking warp failed"
    "${pip[@]}" "${install[@]}" --target "$build/stack" $(ls "$build"/wheels/*.whl | grep -v warp_lang) \
        || die "unpacking the other wheels failed"
    rm -f "$build/warp/warp/bin/warp-clang.so"
    tar -C "$build/stack" -cf - . | xz -6 -T0 > "$KIT/one/stack.tar.xz"
    echo "compressing warp (a few minutes)"
    tar -C "$build/warp" -cf - . | xz -9 -T0 | split -b "$PART_SIZE" -d - "$KIT/warp.tar.xz.part"
    local parts=("$KIT"/warp.tar.xz.part*)
    [[ ${#parts[@]} -eq 2 ]] || die "warp packed into ${#parts[@]} parts of $PART_SIZE, expected 2: adjust PART_SIZE"
    mv "${parts[0]}" "$KIT/one/" && mv "${parts[1]}" "$KIT/two/"
    rm -rf "$build"
    du -sh "$KIT/one" "$KIT/two"
    echo "next: run(command='bash benchmarks/gpu_kit.sh cpu', carry=['$KIT/one'], timeout_s=300), then at once"
    echo "      run(command='bash benchmarks/gpu_kit.sh gpu', carry=['$KIT/two'], timeout_s=590)"
}

START=$SECONDS
DEADLINE=0  # seconds after START by which the phase must have finished; set by each phase
SUMMARY=()  # "name: rc=N" of every step, printed at the end of the phase

# step NAME CAP COMMAND...: run COMMAND under a timeout of CAP seconds or what is left before DEADLINE
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((DEADLINE - (SECONDS - START)))
    ((left < cap)) && cap=$left
    if ((cap < 15)); then
        echo "=== $name: skipped, $left s left" && SUMMARY+=("$name: skipped") && return
    fi
    echo "=== $name (timeout ${cap}s, t=$((SECONDS - START))s): $*"
    local begin=$SECONDS
    timeout --kill-after=5 "$cap" "$@"
    local rc=$?
    local result="rc=$rc in $((SECONDS - begin)) s$([[ $rc == 124 || $rc == 137 ]] && echo ' (timed out)')"
    echo "=== $name: $result" && SUMMARY+=("$name: $result")
}

summary() {
    echo "=== summary after $((SECONDS - START)) s"
    printf '  %s\n' "${SUMMARY[@]}"
}

environment() {
    export PYTHONPATH=$PWD/$SITE:$PWD PYTHONUNBUFFERED=1 MUJOCO_GL=disable
    echo "=== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) cores, $(uname -m)"
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    python3 - <<'PY' || die "the kit's packages do not import"
import sys, torch, numpy, mujoco, gymnasium
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      "| numpy", numpy.__version__, "| mujoco", mujoco.__version__, "from", mujoco.__path__[0],
      "| gymnasium", gymnasium.__version__)
PY
}

cpu_phase() {
    DEADLINE=280
    [[ -f $KIT/one/stack.tar.xz ]] || die "carry $KIT/one (made by 'gpu_kit.sh prepare')"
    rm -rf "$SITE" && mkdir -p "$SITE" && tar -C "$SITE" -xJf "$KIT/one/stack.tar.xz" || die "unpacking failed"
    environment
    local threads
    threads=$(nproc)
    # the figures the GPU path is compared with, on this machine's CPUs (native MuJoCo, learner on all cores)
    step meta-iteration-cpu 150 python3 benchmarks/meta_iteration.py halfcheetah-vel/paper --iterations 2 \
        --warmup 1 --threads "$threads"
    step locomotion-native 90 python3 benchmarks/locomotion_throughput.py --num-envs 800 --steps 100 --repeats 2
    # the learner's math under the device's torch (its version differs from CI's)
    step core-tests 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_trpo.py tests/test_adaptation.py \
        tests/test_advantages.py
    summary
}

gpu_phase() {
    DEADLINE=560
    [[ -d $SITE && -n $(ls "$KIT"/one/warp.tar.xz.part* 2>/dev/null) ]] \
        || die "the first half is not here: this is a fresh machine; run the cpu phase and then this one at once"
    [[ -n $(ls "$KIT"/two/warp.tar.xz.part* 2>/dev/null) ]] || die "carry $KIT/two"
    cat "$KIT"/one/warp.tar.xz.part* "$KIT"/two/warp.tar.xz.part* | xz -d | tar -C "$SITE" -xf - \
        || die "unpacking warp failed"
    environment
    python3 - <<'PY' || die "no GPU for torch and warp: nothing to measure here"
import torch, warp as wp, mujoco_warp
wp.init()
assert torch.cuda.is_available() and wp.is_cuda_available(), "torch or warp sees no CUDA device"
print("warp", wp.__version__, "| mujoco_warp", mujoco_warp.__path__[0], "|", torch.cuda.get_device_name())
PY
    # CUDA warp against native MuJoCo first: it compiles the kernels (cached in ~/.cache/warp for the steps after)
    step tests-parity 240 python3 -m pytest -q -p no:cacheprovider -m gpu -k follows_native \
        tests/envs/test_warp_backend.py
    step locomotion-warp-cuda 160 python3 benchmarks/locomotion_throughput.py --backend warp --device cuda \
        --family halfcheetah-vel ant-vel --num-envs 800 --largest --growth 4 --budget 60 --seconds 2 --repeats 2
    step meta-iteration-gpu 120 python3 benchmarks/meta_iteration.py halfcheetah-vel/paper --iterations 3 \
        --warmup 1 --device cuda --backend warp
    step tests-gpu 150 python3 -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$OUT/gpu-tests.xml" tests
    step sampler-warp-cuda 60 python3 benchmarks/sampler_throughput.py --backend warp --device cuda --repeats 2
    summary
}

case "${1:-}" in
    prepare) prepare ;;
    cpu | gpu)
        OUT=${OUT:-$KIT/out} && mkdir -p "$OUT"
        "$1_phase" 2>&1 | tee "$OUT/$1.log"
        ;;
    *) die "usage: benchmarks/gpu_kit.sh prepare | cpu | gpu" ;;
esac
