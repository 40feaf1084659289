"""cuBLASLt, the library GEMM tactic beside our kernels (csrc/cuda/cublaslt.h, tactic.cu).

The extension loads libcublasLt at run time. It is looked for in ``$GASTRT_CUBLASLT_LIBRARY``,
then in the ``nvidia-cublas`` wheel of any ``sys.path`` entry (what torch's CUDA wheels install),
then by soname on the loader's path. ``GASTRT_GEMM_TACTIC`` (or the backend's ``gemm_tactic``
argument) picks the mode: ``custom`` (our kernels only), ``auto`` (per layer shape, the faster of
the two tactics that agrees with a float64 reference: the default), ``cublaslt`` (cuBLASLt
wherever it is correct).
"""
from __future__ import annotations

import os
import sys
import threading

TACTICS = {"custom": 0, "auto": 1, "cublaslt": 2}
ENV_TACTIC = "GASTRT_GEMM_TACTIC"
ENV_LIBRARY = "GASTRT_CUBLASLT_LIBRARY"
SONAME = "libcublasLt.so.13"

_lock = threading.Lock()
_status: str | None = None


def tactic_code(value: str | None = None) -> int:
    """The executor's gemm_tactic option for a mode name (None: $GASTRT_GEMM_TACTIC, else auto)."""
    name = value if value is not None else (os.environ.get(ENV_TACTIC) or "auto")
    key = str(name).strip().lower()
    if key not in TACTICS:
        src = "gemm_tactic" if value is not None else ENV_TACTIC
        raise ValueError(f"{src}={name!r}: expected one of {', '.join(TACTICS)}")
    return TACTICS[key]


def tactic_name(code: int) -> str:
    return {v: k for k, v in TACTICS.items()}[int(code)]


def library_candidates() -> list[str]:
    """Files to try, in order ('' last: the soname on the loader's path)."""
    out = []
    env = os.environ.get(ENV_LIBRARY)
    if env:
        out.append(env)
    for d in sys.path:
        for sub in (("nvidia", "cu13", "lib"), ("nvidia", "cublas", "lib")):
            p = os.path.join(d or ".", *sub, SONAME)
            if os.path.isfile(p) and p not in out:
                out.append(p)
    out.append("")
    return out


def load(mod) -> str:
    """Loads cuBLASLt into the extension (once per process: a success, or a build without it, is
    final; a failure is retried by the next call, e.g. after $GASTRT_CUBLASLT_LIBRARY is set).
    Returns the status line: "cuBLASLt 13.x.y (path)", or why it is unavailable (the custom
    kernels then run)."""
    global _status
    with _lock:
        if _status is not None:
            return _status
        if not mod.cuda_cublaslt_built():
            _status = mod.cuda_cublaslt_status()
            return _status
        errors = []
        for path in library_candidates():
            err = mod.cuda_cublaslt_load(path)
            if not err:
                _status = mod.cuda_cublaslt_status()
                return _status
            errors.append(err)
        return "; ".join(errors)
