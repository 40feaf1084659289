#!/usr/bin/env bash
# Builds, on our own (GPU-less) machine, what the GPU machine installs without compiling:
#   .whl/gastrt-<ver>-cp312-cp312-linux_x86_64.whl   CUDA for sm_90a (SASS) + compute_90 (PTX),
#                                                    the cuBLASLt tactic compiled in
#   .whl/scipy_openblas32-*.whl                      the BLAS gastrt._native loads at import
# .whl/ is git-ignored and travels with the tree (the device tool's `carry`); the tree that
# travels is limited to 64 MiB, so the sizes are printed last. The cuBLASLt headers come from the
# nvidia-cublas wheel (benchmarks/fetch_cublas_headers.sh: once, into the ignored .cublas/).
#
#   benchmarks/build_gpu_wheel.sh            (PY312=/path/to/python3.12 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY312=${PY312:-}
if [ -z "$PY312" ]; then
  for c in python3.12 "$HOME/.pyenv/versions/3.12"*/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null; then
      PY312=$(command -v "$c")
      break
    fi
  done
fi
[ -n "$PY312" ] || { echo "build_gpu_wheel: no Python 3.12 found (set PY312)" >&2; exit 2; }
NVCC=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || { echo "build_gpu_wheel: no nvcc (set CUDACXX)" >&2; exit 2; }
echo "python: $PY312 ($("$PY312" -c 'import sys; print(sys.version.split()[0])'))"
echo "nvcc:   $NVCC ($("$NVCC" --version | tail -1))"

CUBLAS_INCLUDE=$(benchmarks/fetch_cublas_headers.sh "$PY312")
echo "cuBLASLt headers: $CUBLAS_INCLUDE"

mkdir -p .whl
rm -f .whl/gastrt-*.whl
# Hopper only: sm_90a machine code (wgmma-capable target) and compute_90 PTX for the JIT.
GASTRT_CUDA=ON GASTRT_CUDA_ARCHS="90a-real;90-virtual" GASTRT_CUBLASLT=ON \
  GASTRT_CUBLASLT_INCLUDE="$CUBLAS_INCLUDE" CUDACXX="$NVCC" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  "$PY312" -m pip wheel -q --no-deps -w .whl . 2>&1 | grep -v "^\s*$" || true
ls .whl/gastrt-*-cp312-*.whl >/dev/null 2>&1 || { echo "build_gpu_wheel: the wheel was not built" >&2; exit 1; }
OB=$("$PY312" -m pip list 2>/dev/null | awk '$1=="scipy-openblas32"{print $2}')
OB=${OB:-$(python3 -m pip list 2>/dev/null | awk '$1=="scipy-openblas32"{print $2}')}
rm -f .whl/scipy_openblas32-*.whl
"$PY312" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "scipy-openblas32${OB:+==$OB}"

# What the extension needs from the GPU machine's system libraries.
"$PY312" - .whl/gastrt-*-cp312-*.whl "$(dirname "$NVCC")/cuobjdump" <<'EOF'
import os, re, subprocess, sys, tempfile, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, tempfile.TemporaryDirectory() as d:
    so = [n for n in z.namelist() if n.endswith(".so")][0]
    p = z.extract(so, d)
    syms = subprocess.run(["objdump", "-T", p], capture_output=True, text=True).stdout
    for lib in ("GLIBC", "GLIBCXX", "CXXABI"):
        v = sorted(set(re.findall(lib + r"_([0-9.]+)", syms)), key=lambda s: tuple(map(int, s.split("."))))
        print(f"needs {lib} <= {v[-1] if v else '-'}")
    import shutil
    cuobjdump = sys.argv[2] if os.path.exists(sys.argv[2]) else shutil.which("cuobjdump")
    if cuobjdump is None:
        print("SASS / PTX: not listed (no cuobjdump here; the build asked for sm_90a SASS + compute_90 PTX)")
    else:
        sass = subprocess.run([cuobjdump, "--list-elf", p], capture_output=True, text=True).stdout
        ptx = subprocess.run([cuobjdump, "--list-ptx", p], capture_output=True, text=True).stdout
        print("SASS:", " ".join(sorted(set(re.findall(r"sm_[0-9]+a?", sass)))) or "-",
              "| PTX:", " ".join(sorted(set(re.findall(r"sm_[0-9]+a?", ptx)))) or "-")
EOF
echo
du -b .whl/*.whl | awk '{printf "%7.1f MiB  %s\n", $1 / 1048576, $2; s += $1} END {printf "%7.1f MiB  total (the travelling tree is limited to 64 MiB)\n", s / 1048576}'
