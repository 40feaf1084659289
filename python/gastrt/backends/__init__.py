"""Backends execute plans: numpy (the oracle), native (C++ CPU), cuda (GPU executor), tensorrt.

Every backend implements :class:`~gastrt.backends.base.Backend`. This package ``__init__`` only
re-exports and chooses: modules inside ``backends/`` import ``.base`` and their siblings, never
this file, and nothing here imports ``gastrt.engine``.
"""
from __future__ import annotations

from ..errors import GastrtError
from .base import Backend, Capabilities, ModelLoader, OpenedModel, native_module

HAS_CUDA_HELP = ("this gastrt build has no CUDA support (gastrt.build_config()['cuda'] is False); "
                 "reinstall on a machine with nvcc, or use device='cpu'")


def build_config() -> dict:
    """What this install was compiled with: native CPU runtime, BLAS, CUDA and its archs."""
    from .._version import __version__

    mod = native_module()
    cfg = {"version": __version__, "native": mod is not None, "cuda": False, "cuda_archs": [],
           "blas": None, "compiler": None, "cuda_version": None, "cublaslt": False, "sanitize": None}
    if mod is not None:
        cfg.update(mod.build_config())
        cfg["cublaslt"] = bool(cfg.get("cuda")) and bool(mod.cuda_cublaslt_built())
    return cfg


def arithmetic(precision: str, device: str = "cpu") -> str:
    """What the native CPU runtime computes a ``precision`` engine's GEMMs (convs, GAST blocks) in here:
    fp32 and fp16 engines in fp32; bf16 engines in bf16 dot products where build_config()['bf16_dot']
    names a kernel ('amx', 'avx512bf16', or an emulation under GASTRT_BF16_DOT=emulate*), else in
    fp32 on their bf16 weights. Other devices: the precision itself."""
    if device != "cpu" or precision != "bf16":
        return "fp32" if device == "cpu" else precision
    cfg = build_config()
    kernel = cfg.get("bf16_dot") or "none"
    if kernel != "none" and not kernel.startswith("error"):
        return f"bf16 dot products ({kernel})"
    why = cfg.get("bf16_dot_status") or (kernel if kernel.startswith("error") else "no AVX512-BF16 kernel in use")
    return f"fp32 on bf16 weights ({why})"


def cuda_available() -> bool:
    """True when this build has CUDA kernels and at least one GPU is visible."""
    mod = native_module()
    if mod is None or not mod.has_cuda():
        return False
    try:
        return mod.cuda_device_count() > 0
    except Exception:
        return False


def make_native_backend(plans, weights, threads, precision: str = "fp32") -> Backend | None:
    """The C++ CPU backend, or None when this install has no compiled runtime."""
    if native_module() is None:
        return None
    from .native import NativeBackend
    return NativeBackend(plans, weights, threads, precision)


def make_numpy_backend(plans, weights, threads) -> Backend:
    from .numpy_backend import NumpyBackend
    return NumpyBackend(plans, weights, threads)


def make_cuda_backend(plans, weights, index, precision) -> Backend:
    mod = native_module()
    if mod is None or not mod.has_cuda():
        raise GastrtError(HAS_CUDA_HELP)
    n = mod.cuda_device_count()
    if n == 0:
        raise GastrtError("no CUDA GPU is visible (CUDA_VISIBLE_DEVICES / driver); use device='cpu'")
    if index >= n:
        raise GastrtError(f"device cuda:{index} does not exist ({n} GPU{'s' if n > 1 else ''} visible)")
    from .cuda import CudaBackend
    return CudaBackend(plans, weights, index, precision)


def model_loaders() -> tuple[ModelLoader, ...]:
    """Formats ``gastrt.load`` opens besides ``.gastrt`` files."""
    from .tensorrt_runner import LOADER as TENSORRT_LOADER
    return (TENSORRT_LOADER,)


def find_loader(path: str, backend: str | None = None) -> ModelLoader | None:
    """The loader for ``path``: the one named ``backend``, else the first whose sniff matches."""
    for loader in model_loaders():
        if backend == loader.name or (backend is None and loader.sniff(path)):
            return loader
    return None


__all__ = ["Backend", "Capabilities", "ModelLoader", "OpenedModel", "native_module", "build_config",
           "cuda_available", "make_native_backend", "make_numpy_backend", "make_cuda_backend",
           "model_loaders", "find_loader"]
