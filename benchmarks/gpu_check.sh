#!/usr/bin/env bash
# One-call GPU check for a bare GPU machine holding this tree (Python 3.12, torch, CuPy,
# pybind11, scikit-build-core, CMake, ninja preinstalled; no network):
#   build + install (GASTRT_CUDA=ON, GASTRT_CUDA_ARCHS=90 unless set) -> tests/cuda -> parity
#   tests -> compute-sanitizer memcheck on a small run -> benchmarks/bench_gpu.py ->
#   benchmarks/bench_stream.py --device cuda; the summary table comes last.
#
#   benchmarks/gpu_check.sh                   everything
#   benchmarks/gpu_check.sh build test        only these steps (build test parity sanitize bench stream cli;
#                                             'compile' = opt-in torch.compile max-autotune at batch 4096)
#   QUICK=1 benchmarks/gpu_check.sh           shorter benchmark (20000-frame sequence, fewer runs)
#
# Logs and results go to $OUT (the device tool's output folder) or ./gpu_check_out.
# Each step has a time limit (STEP_TIMEOUT_<STEP>, seconds). Exit status: 0 if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

STEPS=${*:-build test parity sanitize bench stream cli}
export PATH="$PATH:/usr/local/cuda/bin"
export GASTRT_CUDA=${GASTRT_CUDA:-ON}
export GASTRT_CUDA_ARCHS=${GASTRT_CUDA_ARCHS:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
PY=${PYTHON:-python3}
STATUS=()
FAILED=0

run_step() {  # name timeout command...
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== $name ($(date +%T), limit ${limit}s)"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=30 "$limit" "$@"
  local rc=$?
  STATUS+=("$(printf '%-10s %s (%ds)' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc=$rc")" $((SECONDS - t0)))")
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

has() { [[ " $STEPS " == *" $1 "* ]]; }

echo "gpu_check: $(date) in $ROOT; steps: $STEPS"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
nvcc --version 2>/dev/null | tail -1 || echo "nvcc: not on PATH"
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>/dev/null || true

# gastrt._native loads OpenBLAS from the scipy-openblas32 package at import time (or from
# $GASTRT_BLAS_LIBRARY); `pip install --no-deps` does not bring it. Without it _native does not
# import and every CUDA test skips. Best effort offline install from a local wheel folder. To
# carry one with the device tool: `echo /.whl/ >> .git/info/exclude; python3 -m pip download
# --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform
# manylinux2014_x86_64 -d .whl scipy-openblas32` here, then name `.whl` in the run's carry list.
if ! $PY -c "import scipy_openblas32" 2>/dev/null && [ -z "${GASTRT_BLAS_LIBRARY:-}" ]; then
  echo "scipy-openblas32 is not installed (gastrt._native needs it at import)"
  for d in "$ROOT/.whl" "$ROOT/shared/wheels" "$ROOT/../shared/wheels" "${WHEELS:-}"; do
    [ -n "$d" ] && [ -d "$d" ] && $PY -m pip install --no-index --find-links "$d" scipy-openblas32 && break
  done
  $PY -c "import scipy_openblas32" 2>/dev/null || echo "WARNING: still missing: carry a scipy_openblas32 wheel in .whl (see above) or set GASTRT_BLAS_LIBRARY"
fi

if has build; then
  run_step build "${STEP_TIMEOUT_BUILD:-900}" bash -c \
    "$PY -m pip install --no-build-isolation --no-deps -v . > '$OUT/build.log' 2>&1 || { tail -60 '$OUT/build.log'; exit 1; }; grep -E 'gastrt: CUDA|warning|error' '$OUT/build.log' | grep -v -E '^\s*$' | tail -20"
fi

# Run from outside the tree so `import gastrt` is the installed package (with _native).
run_step config 120 bash -c "cd /tmp && $PY -c \"
import gastrt, json
try:
    import gastrt._native
except Exception as e:
    raise SystemExit('import gastrt._native failed: %r' % (e,))
cfg = gastrt.build_config()
print(gastrt.__file__); print(json.dumps({k: cfg[k] for k in ('version', 'native', 'cuda', 'cuda_archs', 'cuda_version')}))
from gastrt.backends import native_module
m = native_module()
print('devices:', m.cuda_device_count(), '|', m.cuda_device_name(0) if m.cuda_device_count() else '-')
assert gastrt.cuda_available(), 'gastrt.cuda_available() is False'
\""

if has test; then
  run_step tests-cuda "${STEP_TIMEOUT_TEST:-900}" $PY -m pytest -q -rs tests/cuda -p no:cacheprovider \
    --junitxml="$OUT/tests_cuda.xml"
fi

if has parity; then
  PARITY=$(ls tests/test_parity.py tests/test_engine_api.py 2>/dev/null | tr '\n' ' ')
  if [ -n "$PARITY" ]; then
    run_step parity "${STEP_TIMEOUT_PARITY:-900}" $PY -m pytest -q -rs $PARITY -p no:cacheprovider \
      --junitxml="$OUT/tests_parity.xml"
  fi
fi

if has sanitize; then
  if command -v compute-sanitizer >/dev/null 2>&1; then
    # memcheck: out-of-bounds / misaligned accesses in every kernel family on a small run
    run_step memcheck "${STEP_TIMEOUT_SANITIZE:-900}" compute-sanitizer --tool memcheck --error-exitcode 3 \
      --leak-check no $PY tests/cuda/sanitizer_smoke.py
  else
    echo "compute-sanitizer not found: memcheck skipped"
    STATUS+=("memcheck   skipped (no compute-sanitizer)")
  fi
fi

if has bench; then
  BARGS=(--json "$OUT/bench.json" --cache /tmp/gastrt-bench-cache)
  [ "${QUICK:-0}" = "1" ] && BARGS+=(--quick)
  run_step bench "${STEP_TIMEOUT_BENCH:-1200}" bash -o pipefail -c "$PY benchmarks/bench_gpu.py ${BARGS[*]} | tee '$OUT/bench.txt'"
fi

if has stream; then
  SARGS=(--device cuda --precision fp32 fp16 --pushes "$([ "${QUICK:-0}" = "1" ] && echo 50 || echo 300)")
  run_step stream "${STEP_TIMEOUT_STREAM:-600}" bash -o pipefail -c "cd /tmp && $PY '$ROOT/benchmarks/bench_stream.py' ${SARGS[*]} --blas-threads 0 | tee '$OUT/stream.txt'"
fi

if has cli; then  # `gastrt bench` itself on the GPU: CUDA events, device tensors, stream mode, RIE chunks
  run_step cli-bench "${STEP_TIMEOUT_CLI:-600}" bash -o pipefail -c "cd /tmp && \
    $PY -m gastrt bench gast-27 --device cuda --precision fp16 --batch 1,64 --compare eager --repeat 20 \
      --json '$OUT/cli_bench_gast27.json' && \
    $PY -m gastrt bench gast-27 --device cuda --mode stream --batch 1,64 --compare eager --repeat 20 && \
    $PY -m gastrt bench rie-243 --device cuda --mode sequence --batch 1 --seq-len 300 --compare eager --repeat 5 \
    | tee '$OUT/cli_bench.txt'"
fi
if has compile; then  # opt-in (minutes): torch.compile max-autotune, the issue's batch-4096 comparison
  run_step compile "${STEP_TIMEOUT_COMPILE:-600}" bash -o pipefail -c "cd /tmp && \
    $PY -m gastrt bench gast-27 --device cuda --precision fp16 --batch 4096 --compare eager,compile --repeat 20 \
      --json '$OUT/compile_bench.json' | tee '$OUT/compile_bench.txt'"
fi

echo
echo "=== steps"
printf '%s\n' "${STATUS[@]}"
if [ -f "$OUT/bench.txt" ] && grep -q "== summary" "$OUT/bench.txt"; then
  echo
  sed -n '/== summary/,$p' "$OUT/bench.txt"
fi
if [ -f "$OUT/stream.txt" ]; then
  echo
  echo "== streaming (host-to-host push latency)"
  grep "slots=" "$OUT/stream.txt" | sed -E 's/ \| window\/frame.*\[/ [/'
fi
exit $FAILED
