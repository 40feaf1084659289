#!/usr/bin/env bash
# Puts cuBLAS's headers (cublasLt.h and what it includes) into the git-ignored .cublas/include,
# taken from the nvidia-cublas wheel: the CUDA toolkit here has no cuBLAS, and only the headers are
# needed at build time (the cuBLASLt tactic loads libcublasLt at run time). Prints the folder.
#   benchmarks/fetch_cublas_headers.sh [PYTHON]      (CUBLAS_VERSION=13.10.0.20 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python3}}
CUBLAS_VERSION=${CUBLAS_VERSION:-13.10.0.20}
if [ ! -f .cublas/include/cublasLt.h ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nvidia-cublas==$CUBLAS_VERSION" >&2
  "$PY" - "$tmp" "$tmp/x" <<'PYEOF'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/nvidia_cublas-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("nvidia/cu13/include/") and n.endswith(".h"):
            z.extract(n, sys.argv[2])
PYEOF
  rm -rf .cublas
  mkdir -p .cublas
  mv "$tmp/x/nvidia/cu13/include" .cublas/include
fi
echo "$(pwd)/.cublas/include"
