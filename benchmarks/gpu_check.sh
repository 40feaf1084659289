#!/usr/bin/env bash
# The GPU check: everything our CUDA code does, proven on a bare GPU machine inside a 15-minute
# lease (benchmarks/GPU_RUNBOOK.md says how to run it and what to fix first).
#
#   command 1 (<= 6 min):  benchmarks/gpu_check.sh
#       install (the prebuilt wheels in .whl/, no compile) -> config -> CUDA tests -> parity table
#       -> compute-sanitizer memcheck smoke -> headline benchmarks (each printed when measured,
#       with the per-layer tactic table) -> summary table
#   command 2 (optional):  benchmarks/gpu_check.sh extra
#       the CUDA backend against the eager models (tests/test_parity.py -k cuda), torch.compile
#       max-autotune at batch 4096, per-layer timings (bench_gpu.py), ncu of one run
#
#   --build      compile here instead of installing .whl/ (also taken by itself when the wheel
#                does not import); the summary says which path ran
#   --dry-run    no GPU needed: every GPU step is skipped and the script still finishes
#   STEP...      only these steps: install config tests parity memcheck headline | eager compile layers ncu
#
# Limits: the whole command stops starting steps at DEADLINE_S (default 345 s, command 2: 540 s);
# each step has its own cap (STEP_TIMEOUT_<STEP>) and never runs past the deadline. Logs go to
# $OUT (the device tool's output folder) or ./gpu_check_out; the summary table prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

BUILD=0
DRY=0
STEPS=()
for a in "$@"; do
  case "$a" in
    --build) BUILD=1 ;;
    --dry-run) DRY=1 ;;
    extra) STEPS+=(install config eager compile layers ncu) ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) STEPS+=("$a") ;;
  esac
done
[ ${#STEPS[@]} -gt 0 ] || STEPS=(install config tests parity memcheck headline)
if [[ " ${STEPS[*]} " == *" compile "* ]]; then DEADLINE_S=${DEADLINE_S:-540}; else DEADLINE_S=${DEADLINE_S:-345}; fi
export PATH="$PATH:/usr/local/cuda/bin"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SITE=${GASTRT_SITE:-/tmp/gastrt-site}
START=$SECONDS
STATUS=()
FAILED=0
INSTALL_PATH="-"

has() { [[ " ${STEPS[*]} " == *" $1 "* ]]; }
left() { echo $((DEADLINE_S - (SECONDS - START))); }

# run_step NAME CAP GPU(0|1) command...: skipped without a GPU when GPU=1 (dry run), capped by
# the deadline, recorded in the summary.
run_step() {
  local name=$1 cap=$2 gpu=$3
  shift 3
  local var="STEP_TIMEOUT_${name^^}"
  var=${var//-/_}
  cap=${!var:-$cap}
  if [ "$gpu" = 1 ] && [ "$HAVE_GPU" = 0 ]; then
    STATUS+=("$(printf '%-10s skipped (no GPU)' "$name")")
    echo "=== $name: skipped (no GPU)"
    return 0
  fi
  local rem
  rem=$(left)
  if [ "$rem" -lt 15 ]; then
    STATUS+=("$(printf '%-10s NOT RUN (deadline %ss reached)' "$name" "$DEADLINE_S")")
    echo "=== $name: not run, the ${DEADLINE_S}s deadline is reached"
    FAILED=1
    return 1
  fi
  [ "$cap" -gt $((rem - 10)) ] && cap=$((rem - 10))
  echo
  echo "=== $name ($(date +%T), cap ${cap}s, $((SECONDS - START))s elapsed)"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$cap" "$@"
  local rc=$?
  local what="ok"
  [ $rc -eq 124 ] && what="TIMED OUT at ${cap}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && what="FAILED rc=$rc"
  STATUS+=("$(printf '%-10s %s (%ds)' "$name" "$what" $((SECONDS - t0)))")
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

echo "gpu_check: $(date) in $ROOT; steps: ${STEPS[*]}; deadline ${DEADLINE_S}s$([ $DRY = 1 ] && echo '; DRY RUN')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
$PY -c "import sys; print('python', sys.version.split()[0])"
HAVE_GPU=0
if [ $DRY = 0 ] && $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  HAVE_GPU=1
elif [ $DRY = 0 ] && nvidia-smi -L >/dev/null 2>&1; then
  HAVE_GPU=1
fi
echo "GPU: $([ $HAVE_GPU = 1 ] && echo yes || echo 'no: GPU steps are skipped')"

# ---- install -------------------------------------------------------------------------------------
install_wheel() {  # the prebuilt wheels: no compile
  local w
  w=$(ls "$ROOT"/.whl/gastrt-*-cp312-*.whl 2>/dev/null | head -1)
  [ -n "$w" ] || { echo "no prebuilt wheel in .whl/ (benchmarks/build_gpu_wheel.sh makes it)"; return 1; }
  rm -rf "$SITE"
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$w" "$ROOT"/.whl/scipy_openblas32-*.whl \
    || return 1
  echo "installed $(basename "$w") into $SITE"
}
install_build() {  # compile on this machine: sm_90, the cuBLASLt headers of its nvidia-cublas wheel
  local inc
  inc=$($PY -c "import nvidia, os, sys; print(next((os.path.join(p, 'cu13', 'include') for p in nvidia.__path__ if os.path.exists(os.path.join(p, 'cu13', 'include', 'cublasLt.h'))), ''))" 2>/dev/null)
  rm -rf "$SITE"
  GASTRT_CUDA=ON GASTRT_CUDA_ARCHS=${GASTRT_CUDA_ARCHS:-90} GASTRT_CUBLASLT_INCLUDE="$inc" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    $PY -m pip install --no-build-isolation --no-deps --target "$SITE" -v "$ROOT" > "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; return 1; }
  grep -E "gastrt: (CUDA|cuBLASLt)" "$OUT/build.log" | tail -3
  if ! $PY -c "import scipy_openblas32" 2>/dev/null; then
    ls "$ROOT"/.whl/scipy_openblas32-*.whl >/dev/null 2>&1 && \
      $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$ROOT"/.whl/scipy_openblas32-*.whl
  fi
}
imports() { PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" $PY -c "import gastrt._native" 2>&1; }
export -f install_wheel install_build   # run by `timeout` in a child bash
export ROOT SITE PY OUT

if has install; then
  if [ $BUILD = 0 ] && run_step install 60 0 bash -c install_wheel && err=$(cd /tmp && imports); then
    INSTALL_PATH="prebuilt wheel (.whl/)"
  else
    [ $BUILD = 0 ] && echo "the prebuilt wheel did not install or import (${err:-see above}): compiling here instead"
    if run_step build 300 0 bash -c install_build && err=$(cd /tmp && imports); then
      INSTALL_PATH="compiled here ($([ $BUILD = 1 ] && echo --build || echo fallback))"
    else
      INSTALL_PATH="FAILED: ${err:-build failed}"
    fi
  fi
  echo "install path: $INSTALL_PATH"
fi
# what the install step put in $SITE (this run's or an earlier one's) comes first
if has install || [ -d "$SITE/gastrt" ]; then export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"; fi

# ---- checks ----------------------------------------------------------------------------------------
# From outside the tree, so `import gastrt` is the installed package.
if has config; then
  run_step config 60 0 bash -c "cd /tmp && $PY -c \"
import gastrt, json
import gastrt._native
cfg = gastrt.build_config()
print(gastrt.__file__)
print(json.dumps({k: cfg.get(k) for k in ('version', 'native', 'cuda', 'cuda_archs', 'cuda_version', 'cublaslt', 'blas')}))
from gastrt.backends import native_module
from gastrt.backends.cuda import cublaslt
m = native_module()
n = m.cuda_device_count() if cfg['cuda'] else 0
print('devices:', n, '|', m.cuda_device_name(0) if n else '-')
print('cuBLASLt:', cublaslt.load(m) if cfg['cuda'] else '-')
assert gastrt.cuda_available() or $HAVE_GPU == 0, 'gastrt.cuda_available() is False on a GPU machine'
\""
fi
if has tests; then
  # without a CUDA-enabled gastrt every CUDA test would skip and the step would pass: refuse that
  run_step tests 100 1 bash -c "cd /tmp && $PY -c 'import gastrt, sys; sys.exit(0 if gastrt.cuda_available() else 3)' \
    || { echo 'gastrt.cuda_available() is False: the CUDA tests would only skip (run the install step)'; exit 3; }; \
    cd '$ROOT' && $PY -m pytest -q -rs -p no:cacheprovider tests/cuda --junitxml='$OUT/tests_cuda.xml'"
fi
if has parity; then
  run_step parity 70 1 bash -o pipefail -c "$PY benchmarks/gpu_parity.py --cache /tmp/gastrt-gpu-cache | tee '$OUT/parity.txt'"
fi
if has memcheck; then
  if command -v compute-sanitizer >/dev/null 2>&1 || [ "$HAVE_GPU" = 0 ]; then
    run_step memcheck 60 1 compute-sanitizer --tool memcheck --error-exitcode 3 --leak-check no \
      $PY tests/cuda/sanitizer_smoke.py
  else
    STATUS+=("memcheck   skipped (no compute-sanitizer)")
  fi
fi
if has headline; then
  run_step headline 100 1 bash -o pipefail -c "$PY benchmarks/gpu_headline.py --cache /tmp/gastrt-gpu-cache \
    --json '$OUT/headline.json' | tee '$OUT/headline.txt'"
fi
# ---- command 2 -------------------------------------------------------------------------------------
if has eager; then  # the CUDA backend against the eager PyTorch models, every shipped configuration
  run_step eager 150 1 $PY -m pytest -q -p no:cacheprovider tests/test_parity.py -k cuda --junitxml="$OUT/tests_parity.xml"
fi
if has compile; then
  run_step compile 300 1 bash -o pipefail -c "cd /tmp && $PY -m gastrt bench gast-27 --device cuda --precision fp16 \
    --batch 4096 --compare eager,compile --repeat 20 --json '$OUT/compile_bench.json' | tee '$OUT/compile_bench.txt'"
fi
if has layers; then
  run_step layers 150 1 bash -o pipefail -c "$PY benchmarks/bench_gpu.py --quick --skip gast,vp3d,rie \
    --cache /tmp/gastrt-gpu-cache --json '$OUT/layers.json' | tee '$OUT/layers.txt'"
fi
if has ncu; then
  if command -v ncu >/dev/null 2>&1; then
    run_step ncu 90 1 bash -c "ncu --clock-control none --launch-count 40 --section SpeedOfLight \
      -o '$OUT/ncu_gast27' $PY tests/cuda/sanitizer_smoke.py > '$OUT/ncu.txt' 2>&1; tail -30 '$OUT/ncu.txt'"
  else
    STATUS+=("ncu        skipped (no ncu)")
  fi
fi

echo
echo "=== summary ($((SECONDS - START))s of ${DEADLINE_S}s; install: $INSTALL_PATH$([ $DRY = 1 ] && echo '; DRY RUN'))"
printf '%s\n' "${STATUS[@]}"
if [ -f "$OUT/parity.txt" ]; then
  echo
  echo "== parity (max rel error vs the NumPy oracle)"
  cat "$OUT/parity.txt"
fi
if [ -f "$OUT/headline.txt" ] && grep -q "== headline summary" "$OUT/headline.txt"; then
  echo
  sed -n '/== headline summary/,$p' "$OUT/headline.txt"
fi
exit $FAILED
