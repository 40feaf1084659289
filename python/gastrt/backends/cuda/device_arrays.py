"""Device arrays: torch / CuPy / ``__cuda_array_interface__`` / DLPack CUDA arrays resolved to a
pointer, shape, device and stream; new output arrays of the same kind; CudaArray (a minimal
owning device array when neither torch nor CuPy is installed). Shared by the CUDA backend and
the TensorRT runner."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from ...errors import GastrtError


def is_device_array(x) -> bool:
    """A CUDA array this backend takes without a host copy (torch / CuPy / CAI / DLPack on GPU)."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return int(dev()[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
        except Exception:
            return False
    return False


class CudaArray:
    """A minimal owning fp32 C-contiguous device array (what run_device returns when neither
    torch nor CuPy is installed). Exposes ``__cuda_array_interface__``; ``get()`` copies to host."""

    def __init__(self, shape, device: int, mod):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.device = int(device)
        self._mod = mod
        self.nbytes = math.prod(self.shape) * 4
        self.ptr = int(mod.cuda_malloc(self.device, self.nbytes))

    @classmethod
    def from_numpy(cls, a: np.ndarray, device: int, mod) -> "CudaArray":
        a = np.ascontiguousarray(a, dtype=np.float32)
        d = cls(a.shape, device, mod)
        mod.cuda_memcpy_htod(device, d.ptr, a.reshape(-1).view(np.uint8))
        return d

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}

    def get(self) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        self._mod.cuda_memcpy_dtoh(self.device, out.reshape(-1).view(np.uint8), self.ptr)
        return out

    def __del__(self):
        ptr, self.ptr = getattr(self, "ptr", 0), 0
        if ptr:
            try:
                self._mod.cuda_free(self.device, ptr)
            except Exception:
                pass


@dataclass
class DeviceArray:
    """A resolved float32 C-contiguous device array (what the executor needs of it)."""
    ptr: int
    shape: tuple
    device: int
    stream: int | None    # the producer's / consumer's stream handle to order with
    kind: str             # "torch", "cupy", "cai"
    obj: object           # keeps a converted copy alive during the call


def resolve_device_array(x, what: str, writable: bool = False) -> DeviceArray:
    """Pointer, shape, device and stream of a float32 C-contiguous device array."""
    mod_name = type(x).__module__.split(".")[0]
    if mod_name == "torch":
        import torch
        if not x.is_cuda:
            raise GastrtError(f"{what}: a CPU torch tensor; pass a NumPy array or a CUDA tensor")
        if x.dtype != torch.float32 or not x.is_contiguous():
            if writable:
                raise GastrtError(f"{what}: expected a contiguous float32 CUDA tensor, got {x.dtype}")
            x = x.to(torch.float32).contiguous()
        dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
        return DeviceArray(int(x.data_ptr()), tuple(x.shape), int(dev), int(torch.cuda.current_stream(dev).cuda_stream),
                    "torch", x)
    if mod_name == "cupy":
        import cupy
        if x.dtype != cupy.float32 or not x.flags.c_contiguous:
            if writable:
                raise GastrtError(f"{what}: expected a C-contiguous float32 CuPy array, got {x.dtype}")
            with x.device:
                x = cupy.ascontiguousarray(x, dtype=cupy.float32)
        with x.device:   # the current stream is per device: x's, not the current device's
            stream = int(cupy.cuda.get_current_stream().ptr)
        return DeviceArray(int(x.data.ptr), tuple(x.shape), int(x.device.id), stream, "cupy", x)
    if hasattr(x, "__cuda_array_interface__"):
        cai = x.__cuda_array_interface__
        shape = tuple(int(s) for s in cai["shape"])
        if cai.get("typestr") not in ("<f4", "=f4", "f4"):
            raise GastrtError(f"{what}: expected float32 (typestr <f4), got {cai.get('typestr')}")
        strides = cai.get("strides")
        if strides is not None:
            want, acc = [], 4
            for s in reversed(shape):
                want.append(acc)
                acc *= s
            if tuple(strides) != tuple(reversed(want)) and math.prod(shape) > 1:
                raise GastrtError(f"{what}: expected a C-contiguous array")
        ptr = int(cai["data"][0])
        if writable and cai["data"][1]:
            raise GastrtError(f"{what}: the array is read-only")
        dev = getattr(x, "device", None)
        dev = dev if isinstance(dev, int) else None
        return DeviceArray(ptr, shape, -1 if dev is None else dev, cai.get("stream"), "cai", x)
    if hasattr(x, "__dlpack__"):  # DLPack-only producers (JAX, ...): view through torch / CuPy, no copy
        try:
            import torch
            return resolve_device_array(torch.from_dlpack(x), what, writable)
        except ImportError:
            pass
        try:
            import cupy
            return resolve_device_array(cupy.from_dlpack(x), what, writable)
        except ImportError:
            raise GastrtError(f"{what}: DLPack input needs torch or CuPy installed") from None
    raise GastrtError(f"{what}: not a CUDA array (expected torch / CuPy / __cuda_array_interface__ / DLPack)")


def stream_context(x, stream):
    """While active, ``stream`` (a CUDA stream handle, or None: no-op) is the current stream of
    ``x``'s array library, so a float32 / contiguous conversion of ``x`` and a newly allocated
    output are made on (and belong to the memory pool of) the stream the work is ordered on."""
    if stream is None:
        return contextlib.nullcontext()
    mod_name = type(x).__module__.split(".")[0]
    if mod_name == "torch" and getattr(x, "is_cuda", False):
        import torch
        return torch.cuda.stream(torch.cuda.ExternalStream(int(stream), device=x.device))
    if mod_name == "cupy":
        import cupy
        return cupy.cuda.ExternalStream(int(stream), x.device.id)
    return contextlib.nullcontext()


def empty_device_array(like: DeviceArray, shape, device: int, mod):
    """A new float32 array ``shape`` on cuda:``device`` of the same kind as ``like`` (torch, CuPy;
    a CudaArray over ``mod``'s raw device memory otherwise)."""
    if like.kind == "torch":
        import torch
        return torch.empty(shape, dtype=torch.float32, device=f"cuda:{device}")
    if like.kind == "cupy":
        import cupy
        with cupy.cuda.Device(device):
            return cupy.empty(shape, dtype=cupy.float32)
    return CudaArray(shape, device, mod)
