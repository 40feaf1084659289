"""The CUDA backend: plans lowered to programs (lowering.py; records.py encodes the records of
csrc/cuda/program_records.h by name) that the native executor (csrc/cuda) runs on one GPU
(backend.py), device arrays shared with the TensorRT runner (device_arrays.py), and a Stream's
column steps on the GPU (stream_columns.py)."""
from __future__ import annotations

from .backend import CudaBackend
from .device_arrays import (CudaArray, DeviceArray, empty_device_array, is_device_array, resolve_device_array,
                            stream_context)
from .lowering import DTYPE_CODE
from .records import program_layout
from .stream_columns import CudaStreamColumns

__all__ = ["CudaBackend", "CudaStreamColumns", "CudaArray", "DeviceArray", "is_device_array", "resolve_device_array",
           "empty_device_array", "stream_context", "DTYPE_CODE", "program_layout"]
