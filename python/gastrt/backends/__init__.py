"""Backends execute plans: numpy (reference), native (C++ CPU), cuda (GPU executor)."""
from __future__ import annotations

from ..errors import GastrtError


def native_module():
    """The compiled extension, or None when this install has none."""
    try:
        from .. import _native
    except ImportError:
        return None
    return _native


def make_native_backend(plans, weights, threads):
    if native_module() is None:
        return None
    from .native import NativeBackend
    return NativeBackend(plans, weights, threads)


def make_cuda_backend(plans, weights, index, precision):
    mod = native_module()
    if mod is None or not getattr(mod, "has_cuda", lambda: False)():
        raise GastrtError("this gastrt build has no CUDA support (gastrt.build_config()['cuda'] is False); "
                          "reinstall on a machine with nvcc, or use device='cpu'")
    n = mod.cuda_device_count()
    if n == 0:
        raise GastrtError("no CUDA GPU is visible (CUDA_VISIBLE_DEVICES / driver); use device='cpu'")
    if index >= n:
        raise GastrtError(f"device cuda:{index} does not exist ({n} GPU{'s' if n > 1 else ''} visible)")
    from .cuda import CudaBackend
    return CudaBackend(plans, weights, index, precision)
