"""Type stubs of the compiled extension gastrt._native (csrc/bindings/*.cpp).

Arrays are float32; inputs of any float dtype / memory layout are converted (copied) to
C-contiguous float32 when needed. ``out`` arrays must be C-contiguous, writeable float32 of
the exact shape. ``threads`` <= 0 means the available cores. Every call releases the GIL.
Bad arguments (shapes, plans, weights) raise ValueError / TypeError; failures inside the runtime
raise gastrt.errors.NativeError, exhausted memory gastrt.errors.OutOfMemoryError (both
RuntimeError subclasses).
"""
from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

def build_config() -> dict[str, Any]:
    """native, cuda, cuda_archs, cuda_version, compiler, blas, blas_core, blas_core_note,
    blas_library, openmp, threading, cpu_isa, default_threads."""

def has_cuda() -> bool: ...
def cuda_device_count() -> int:
    """0 without a CUDA build / driver / GPU; never raises."""

def available_cpus() -> int: ...

def conv(
    x: npt.ArrayLike,                 # [N, G, T, Ci]
    w: npt.ArrayLike,                 # [k*Ci, Co]   row tau*Ci + ci
    b: npt.ArrayLike,                 # [Co]
    res: Optional[npt.ArrayLike] = None,  # [N, G, Tr, Co]
    *,
    k: int,
    stride: int,
    dilation: int = 1,
    res_offset: int = 0,
    res_stride: int = 1,
    act: str = "none",                # none | relu | lrelu (0.2)
    out: Optional[FloatArray] = None,  # [N, G, To, Co]
    threads: int = 0,
    algo: str = "auto",               # direct | winograd (k=3, stride 1: F(4,3); F(2,3) on bf16_dot) | auto
    small_panels: bool = False,       # pack w for the small-M GEMM first (as the engine does)
    panel_dtype: str = "fp32",        # fp32 | fp16 | bf16 panels (16-bit: w must hold exact such values)
    bf16_dot: str = "none",           # none | emulated | emulated-amx | avx512bf16 | amx | auto: a bf16 engine's GEMM
) -> FloatArray:                      # [N, G, To, Co], To = (T - (k-1)*dilation - 1) // stride + 1
    ...

def gemm_bf16_dot(
    a: npt.ArrayLike,                 # [M, L]: row r, tap t at a[r, t*tap_stride : t*tap_stride + ci]
    w: npt.ArrayLike,                 # [taps*ci, N] exact bf16 values
    *,
    taps: int = 1,
    tap_stride: int = -1,             # default ci
    n0: int = 0,
    ncols: int = -1,                  # default N - n0
    kernel: str = "emulated",         # emulated | emulated-amx | avx512bf16 | amx | auto (the engines' kernel here)
    out: Optional[FloatArray] = None,  # [M, ncols]
) -> FloatArray:                      # [M, ncols]: bf16(a) pairs x w pairs, fp32 sums (vdpbf16ps / tdpbf16ps order)
    ...

def bf16_dot_kernels() -> list[str]: ...   # the kernels this CPU and OS run (the emulations always)

def stream_linear(
    x: npt.ArrayLike,                 # [M, K]
    w: npt.NDArray[Any],              # [K, N] float32, float16, or uint16 bfloat16 bits (C-contiguous)
    b: npt.ArrayLike,                 # [N]
    res: Optional[npt.ArrayLike] = None,  # [M, N]
    *,
    act: str = "none",                # none | relu | lrelu (0.2)
    out: Optional[FloatArray] = None,  # [M, N]
    threads: int = 0,
) -> FloatArray:                      # [M, N] fp32: weights converted exactly, fp32 sums
    ...

def gast_block(
    x: npt.ArrayLike,                 # [N, J, T, C]
    weights: dict[str, npt.ArrayLike],  # plan.py gast_block roles (loc_w [C, 4C] ... cat_b [2C])
    *,
    heads: int,
    head_channels: int,
    out: Optional[FloatArray] = None,  # [N, J, T, 2C]
    threads: int = 0,
) -> FloatArray:                      # [N, J, T, 2C]
    ...

class GastBlockKernel:
    """gast_block with its weights prepared once (not thread-safe: one per thread)."""
    def __init__(self, weights: dict[str, npt.ArrayLike], *, heads: int, head_channels: int) -> None: ...
    def __call__(
        self,
        x: npt.ArrayLike,                 # [N, J, T, C]
        *,
        out: Optional[FloatArray] = None,  # [N, J, T, 2C]
        threads: int = 0,
    ) -> FloatArray: ...                  # [N, J, T, 2C]

def rie_encode(
    x: npt.ArrayLike,                 # [N, T, J, F]
    groups: Sequence[Sequence[int]],  # 1..5 groups of flattened channels (c = j*F + f)
    *,
    outs: Optional[Sequence[FloatArray]] = None,
    threads: int = 0,
) -> list[FloatArray]:                # [N, 1, T, 3*len(g)] per group, + centre [N, 1, 1, J*F]
    ...

def sgemm(
    a: npt.ArrayLike,                 # [M, K]
    b: npt.ArrayLike,                 # [K, N]
    *,
    out: Optional[FloatArray] = None,  # [M, N]
    threads: int = 0,
) -> FloatArray:                      # a @ b through the runtime's BLAS + thread pool
    ...

class Engine:
    """One plan compiled for the CPU (thread-safe; workspaces cached per input shape)."""

    def __init__(self, plan: dict[str, Any], weights: dict[str, npt.ArrayLike], threads: int = 0,
                 precision: str = "fp32") -> None:
        """plan: Plan.to_json(); weights: name -> array (copied). precision: the engine file's;
        fp16 / bf16: the weights must be exact such values (NativeError otherwise, checked on the
        conv ops, and on the GAST blocks' GEMM weights where bf16_dot names a kernel), and the convs
        on the small-M kernel read them as 16-bit panels (the engine also keeps the fp32 copy, which
        GAST blocks, Winograd and OpenBLAS convs read); a bf16 engine on a bf16 dot-product kernel
        reads its convs' and GAST blocks' GEMM weights as bf16 pairs instead."""
    @property
    def weight_panels(self) -> str: ...   # fp32 | fp16 | bf16 | bf16-pairs | none: what the conv panels hold
    @property
    def panel_bytes(self) -> dict[str, int]: ...   # {"fp32": n, "16bit": n, "bf16_pairs": n (GAST blocks' too)} packed so far
    @property
    def bf16_dot(self) -> str: ...   # amx | avx512bf16 | emulated(-amx) | none: the bf16 GEMM kernel of the convs and GAST blocks
    def run(
        self,
        x: npt.ArrayLike,             # [N, T, J, F]
        mode: str = "window",         # window | sequence
        out: Optional[FloatArray] = None,
    ) -> FloatArray:                  # [N, T_out, J_out, 3]
        ...
    def profile(self, x: npt.ArrayLike, mode: str = "window") -> list[tuple[str, float]]:
        """One forward with the wall time of every op (plan order)."""
    def output_shape(self, n: int, t: int, mode: str = "window") -> list[int]: ...
    def schedule_shapes(self, n: int, t: int, mode: str = "window") -> dict[str, tuple[int, ...]]:
        """{plan value name: shape} of the C++ schedule for an input [n, t, J, F]."""
    def workspace_bytes(self, n: int, t: int, mode: str = "window") -> int: ...
    def budget_bytes(self, n: int, t: int, mode: str = "window") -> int:
        """workspace_bytes for a one-thread team (thread-invariant: chunk sizes are planned from it)"""
    def cache_stats(self) -> tuple[int, int]:
        """(cached input shapes, idle cached workspaces)"""
    def clear_cache(self) -> None: ...
    @property
    def threads(self) -> int: ...
    @property
    def name(self) -> str: ...

class ArenaAllocator:
    """First-fit arena offsets (the CPU executor's planner, csrc/common/arena.h): sizes rounded up
    to ``alignment`` (at least one unit); the lowest free block that fits, else the free block
    ending at ``top`` is extended, else the block starts at ``top``; freed blocks merge."""

    def __init__(self, alignment: int) -> None: ...   # ValueError below 1
    @property
    def alignment(self) -> int: ...
    def alloc(self, size: int) -> int: ...
    def release(self, offset: int, size: int) -> None:
        """ValueError for a block outside [0, top) or overlapping a free block (double release)."""
    @property
    def top(self) -> int:
        """High-water mark: the arena size the allocations so far need."""
    @property
    def free(self) -> list[tuple[int, int]]:
        """Free blocks (offset, size), by offset."""

# ---- CUDA program bytecode (every build); see csrc/cuda/program_records.h --------------------------
def cuda_program_layout() -> dict[str, dict[str, Any]]:
    """{record name: {"opcode": int, "nfields": int, "grouped": bool,
    "fields": {field: (word offset, count)}}}; a grouped record is [count, count x fields]."""
def cuda_program_constants() -> dict[str, int]:
    """ref_none, ref_input, ref_output (buffer references), stream_table_cols, max_conv_group."""

def cuda_lt_conv_calls(fields: dict[str, int], dtype: int = 0) -> tuple[list[dict[str, int]], str | None]:
    """The cuBLASLt matmuls of one conv record given by field name, for an engine of dtype
    (0 fp32, 1 fp16, 2 bf16; csrc/cuda/gemm_tactic.h):
    ([{m, n, k, a_offset, lda, b_offset, ldb, b_batch_stride, ldd, d_batch_stride, batch,
    accumulate, epilogue}, ...], None), or ([], why) when the custom kernel must run it."""

# ---- CUDA builds only (build_config()["cuda"] is True); see csrc/cuda/cuda_ops.h -------------------
# Device pointers and stream handles are Python ints.

def cuda_device_name(device: int) -> str: ...
def cuda_runtime_version() -> str: ...
def cuda_malloc(device: int, bytes: int) -> int: ...
def cuda_free(device: int, ptr: int) -> None: ...
def cuda_memcpy_htod(device: int, dst: int, src: npt.NDArray[np.uint8]) -> None: ...
def cuda_memcpy_dtoh(device: int, dst: npt.NDArray[np.uint8], src: int) -> None: ...
def cuda_cublaslt_load(path: str = "") -> str:
    """Loads libcublasLt once per process (a file, or '' for the soname): '' on success, else why not."""
def cuda_cublaslt_status() -> str: ...   # "cuBLASLt 13.x.y (path)" or why unavailable
def cuda_cublaslt_built() -> bool: ...   # compiled with the cuBLASLt headers

class CudaEngine:
    """GPU executor: weights, one device arena, programs (bytecode lowered by backends/cuda),
    CUDA graphs. One call at a time per engine."""

    def __init__(self, device: int, dtype: int) -> None: ...   # dtype 0 fp32, 1 fp16, 2 bf16
    def device(self) -> int: ...
    def dtype(self) -> int: ...
    def device_name(self) -> str: ...
    def stream(self) -> int: ...
    def synchronize(self) -> None: ...
    def add_weight(self, data: npt.ArrayLike, engine_dtype: bool) -> int: ...
    def weight_count(self) -> int: ...
    def create_program(self, code: npt.ArrayLike, arena_bytes: int, max_n: int, in_per_n: int,
                       out_per_n: int) -> int: ...
    def destroy_program(self, id: int) -> None: ...
    def describe_program(self, id: int) -> str: ...
    def run_host(self, id: int, x: npt.ArrayLike, y: FloatArray, n: int, use_graph: bool = True) -> None: ...
    def run_device(self, id: int, x: int, y: int, n: int, ext_stream: int, has_ext: bool,
                   use_graph: bool = True) -> None: ...
    def run_arena(self, id: int, use_graph: bool = False) -> None: ...
    def time_program(self, id: int, iters: int, warmup: int, use_graph: bool = True) -> list[float]: ...
    def reserve_arena(self, bytes: int) -> None: ...
    def arena_bytes(self) -> int: ...
    def arena_write(self, offset: int, data: npt.NDArray[np.uint8]) -> None: ...
    def arena_read(self, offset: int, out: npt.NDArray[np.uint8]) -> None: ...
    def arena_fill(self, offset: int, bytes: int, byte_value: int) -> None: ...
    def gast_scratch_bytes(self, n: int, j: int, t: int, c: int, heads: int, gc: int) -> int: ...
    def gast_fused(self, j: int, c: int, heads: int, gc: int) -> bool: ...
    def set_option(self, name: str, value: int) -> None: ...
    def get_option(self, name: str) -> int: ...   # gast_fused, gast_scratch_budget, arena_limit, gemm_tactic
    def gemm_tactics(self) -> list[dict[str, Any]]:
        """Per distinct conv problem: shape, chosen ('custom' | 'cublaslt'), note, custom_us,
        cublaslt_us, custom_err, cublaslt_err (-1: not measured)."""
