#!/usr/bin/env bash
# `npm run check:gpu`: the whole check for a bare GPU machine, in one command, bounded in time.
# Needs a C++ compiler and CMake (>= 3.18); with the CUDA toolkit (nvcc) it builds the CUDA
# backend in; Python with PyTorch and Node.js are optional. No network, and nothing large is
# copied or downloaded: it builds in build-check/ and writes its log there.
#
#   1. builds ernie_check with CMake (-DERNIE_CHECK=ON, and -DERNIE_CUDA=ON where nvcc is found,
#      for the compute capabilities nvidia-smi reports, else sm_80 and sm_90): the engine, the CPU
#      and CUDA backends and native/check/*.cc, no N-API, no Node.js;
#   2. runs it: every backend op on cpu, checked and cuda (cuda skipped, with the reason, where
#      the build or the device is missing) against float64 references, and engine::forward on
#      the fixture checkpoints (test/fixtures) against their float64 goldens; lines ok / FAIL /
#      skip, then "N passed, N failed, N skipped", then (on a GPU) the CUDA benchmarks as JSON
#      lines (GEMM and attention TFLOP/s, the LoRA layer, peak device memory);
#   3. runs scripts/gpu_peer.py where python3 is found: PyTorch's matmul and
#      scaled_dot_product_attention at the same shapes, as JSON lines (it says why when PyTorch
#      or CUDA is missing);
#   4. runs `npm test` where node is found (and node_modules is there), with the time left.
# Exit status: 0 when the build and every check passed (and npm test, where it ran to the end);
# 1 otherwise. A step cut at the time limit says so.
#
# Environment:
#   CHECK_GPU_TIMEOUT=s     the whole run's limit (default 450: with the 5 s each step is given to
#                           end after its signal, the run ends within 8 minutes)
#   CHECK_GPU_JOBS=n        parallel build jobs (default: the number of CPUs)
#   CHECK_GPU_BUILD=dir     build directory (default build-check)
#   CHECK_GPU_CUDA=0        build without CUDA even where nvcc is found
#   CUDA_ARCHS="80;90"      the CUDA architectures to build for (default: from nvidia-smi)
#   CHECK_GPU_NPM_TEST=0    skip npm test
#   ERNIE_CHECK_ARGS=...    extra arguments to ernie_check (e.g. --only gemm,model, --no-bench)
#   PYTHON=path             the Python for the peer (default: the first python3 that imports torch)
set -uo pipefail
cd "$(dirname "$0")/.."

LIMIT=${CHECK_GPU_TIMEOUT:-450}
BUILD=${CHECK_GPU_BUILD:-build-check}
JOBS=${CHECK_GPU_JOBS:-$(nproc 2> /dev/null || echo 4)}
START=$(date +%s)
remaining() { echo $((LIMIT - ($(date +%s) - START))); }
say() { echo "check-gpu: $*"; }
# The time a step may take: what is left, less `reserve` seconds kept for the steps after it.
budget() {
  local left
  left=$(($(remaining) - $1))
  if [ "$left" -lt 1 ]; then left=1; fi
  echo "$left"
}

status=0
summary=()
mkdir -p "$BUILD"
LOG="$BUILD/check-gpu.log"
: > "$LOG"

# ---- 1. build ---------------------------------------------------------------------------------
for tool in cmake c++; do
  if ! command -v "$tool" > /dev/null; then
    if [ "$tool" = c++ ] && { command -v g++ > /dev/null || command -v clang++ > /dev/null; }; then continue; fi
    say "FAIL: $tool not found (a C++ compiler and CMake >= 3.18 are needed)"
    exit 1
  fi
done

NVCC=""
if [ "${CHECK_GPU_CUDA:-1}" != 0 ]; then
  NVCC=$(command -v nvcc || true)
  if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
fi
cmake_args=(-S . -B "$BUILD" -DERNIE_CHECK=ON -DCMAKE_BUILD_TYPE=Release)
if [ -n "$NVCC" ]; then
  archs=${CUDA_ARCHS:-}
  if [ -z "$archs" ] && command -v nvidia-smi > /dev/null; then
    # "9.0" -> 90, one per distinct device kind; the kernels need sm_80 or later.
    archs=$(timeout 20 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2> /dev/null | tr -d ' .' | awk '$1 >= 80' | sort -u | paste -sd';' -)
  fi
  archs=${archs:-80;90}
  cmake_args+=(-DERNIE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$NVCC" "-DCMAKE_CUDA_ARCHITECTURES=$archs")
  say "building ernie_check with CUDA ($("$NVCC" --version | grep -o 'release [0-9.]*' | head -1), sm ${archs//;/, sm }), $JOBS jobs"
else
  say "building ernie_check for the CPU only (no nvcc${CHECK_GPU_CUDA:+, CHECK_GPU_CUDA=$CHECK_GPU_CUDA}), $JOBS jobs"
fi

build_start=$(date +%s)
# The build may use all but ~3 minutes (the checks, the peer and some of npm test).
timeout --kill-after=5 "$(budget 180)" cmake "${cmake_args[@]}" >> "$LOG" 2>&1 &&
  timeout --kill-after=5 "$(budget 180)" cmake --build "$BUILD" --target ernie_check --parallel "$JOBS" >> "$LOG" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  grep -E 'error|Error|FAILED' "$LOG" | head -30
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "FAIL: the build did not finish in time ($(($(date +%s) - build_start)) s; log: $LOG)"
  else say "FAIL: the build failed (log: $LOG)"; fi
  exit 1
fi
summary+=("build: ok in $(($(date +%s) - build_start)) s ($([ -n "$NVCC" ] && echo "with CUDA" || echo "CPU only"))")

# ---- 2. ernie_check ---------------------------------------------------------------------------
say "running $BUILD/ernie_check"
# shellcheck disable=SC2086
timeout --kill-after=5 "$(budget 60)" "$BUILD/ernie_check" --fixtures test/fixtures ${ERNIE_CHECK_ARGS:-} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$LOG" | tail -1)
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  summary+=("ernie_check: FAIL: cut at the time limit (${counts:-no summary line})")
  status=1
elif [ $rc -ne 0 ]; then
  summary+=("ernie_check: FAIL (exit $rc): ${counts:-no summary line}")
  status=1
else
  summary+=("ernie_check: ok: $counts")
fi

# ---- 3. the PyTorch peer ----------------------------------------------------------------------
# The first Python that imports torch ($PYTHON first), else the first Python (the peer then says why).
PY=""
for c in ${PYTHON:-} python3 /usr/bin/python3 python; do
  probe=$(budget 40)  # at most 20 s an import, and never into the last 40 s
  if [ "$probe" -gt 20 ]; then probe=20; fi
  if command -v "$c" > /dev/null && timeout "$probe" "$c" -c 'import torch' > /dev/null 2>&1; then PY=$(command -v "$c"); break; fi
done
if [ -z "$PY" ]; then PY=$(command -v python3 || command -v python || true); fi
if [ -z "$PY" ]; then
  summary+=("gpu_peer.py: skipped (no python3)")
else
  say "running scripts/gpu_peer.py"
  timeout --kill-after=5 "$(budget 20)" "$PY" scripts/gpu_peer.py 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then summary+=("gpu_peer.py: cut at the time limit")
  elif [ $rc -ne 0 ]; then summary+=("gpu_peer.py: exited $rc (not counted as a failure of the engine)")
  else summary+=("gpu_peer.py: ok"); fi
fi

# ---- 4. npm test --------------------------------------------------------------------------------
if [ "${CHECK_GPU_NPM_TEST:-1}" = 0 ]; then
  summary+=("npm test: skipped (CHECK_GPU_NPM_TEST=0)")
elif ! command -v node > /dev/null; then
  summary+=("npm test: skipped (no node)")
elif ! command -v npm > /dev/null || [ ! -d node_modules ]; then
  summary+=("npm test: skipped (node is here but npm or node_modules is not: run npm ci first)")
elif [ "$(remaining)" -lt 30 ]; then
  summary+=("npm test: skipped (under 30 s left of ${LIMIT} s)")
else
  say "running npm test ($(remaining) s left; one line per test file)"
  NPM_LOG="$BUILD/npm-test.log"
  # tap prints "ok N - file" / "not ok N - file" per file at the top level.
  : > "$NPM_LOG"
  timeout --kill-after=5 "$(budget 5)" npm test > "$NPM_LOG" 2>&1 &
  npm_pid=$!
  tail -n +1 -f --pid=$npm_pid "$NPM_LOG" 2> /dev/null | grep --line-buffered -E '^(not )?ok [0-9]+ - ' &
  follow_pid=$!
  wait $npm_pid
  rc=$?
  wait $follow_pid 2> /dev/null
  cat "$NPM_LOG" >> "$LOG"
  files_ok=$(grep -cE '^ok [0-9]+ - ' "$NPM_LOG")
  files_bad=$(grep -cE '^not ok [0-9]+ - ' "$NPM_LOG")
  killed=$(grep -cE '^  signal: SIGTERM' "$NPM_LOG")
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    summary+=("npm test: cut at the time limit: $files_ok files ok, $((files_bad - killed)) not ok, $killed ended by the cut (log: $NPM_LOG)")
    if [ $((files_bad - killed)) -gt 0 ]; then status=1; fi
  elif [ $rc -ne 0 ]; then summary+=("npm test: FAIL (exit $rc): $files_ok files ok, $files_bad not ok (log: $NPM_LOG)"); status=1
  else summary+=("npm test: ok: $files_ok files"); fi
fi

echo
for s in "${summary[@]}"; do say "$s"; done
say "$([ $status -eq 0 ] && echo OK || echo FAIL) in $(($(date +%s) - START)) s (limit ${LIMIT} s; log: $LOG)"
exit $status
