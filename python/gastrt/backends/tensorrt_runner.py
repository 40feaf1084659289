"""TensorRT plans behind the gastrt Engine API (``gastrt.load("model.plan", device="cuda")``).

The ``.plan`` container (written by ``gastrt build --backend tensorrt``, see
:mod:`gastrt.tensorrt_builder`)::

    8 bytes   magic b"GASTRTRT"
    8 bytes   u64 little-endian length L of the JSON header
    L bytes   JSON header (UTF-8), padded with spaces so the first engine starts 256-aligned
    ...       serialized TensorRT engines, each at header["engines"][key]["offset"] (relative to
              the end of the header) with its "size" and "sha256"

The header carries gastrt's engine metadata (family, receptive field, joints, causal shift, flip
symmetry kps_left/right and joints_left/right, the plans without weights, the weight shapes) plus
what a TensorRT engine is tied to: the TensorRT version and the GPU's compute capability, both
checked at load time with a clear error. Engine keys are ``"<plan>/<mode>"`` ("pos/window",
"pos/sequence", "traj/window", ...): one engine per network and form, each with one optimization
profile (the batch for windows; people and frames for sequences).

Execution: named I/O tensors (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``)
on a private CUDA stream, device buffers from cuda-python (``cuda.bindings.runtime`` in
cuda-python >= 12.6 / 13, ``cuda.cudart`` before). Batches past the profile's maximum run in
chunks; batches under its minimum are padded; sequences longer than the profile's maximum run in
overlapping chunks (exact: an output frame depends only on its receptive field).

Written against the TensorRT 10 / 11 Python documentation; it could not be run where it was
written (no GPU, no TensorRT): tests/test_tensorrt.py exercises it where both exist.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import threading

import numpy as np

from ..argtypes import parse_device
from ..engine_file import METADATA_ERRORS, atomic_write, check_metadata, map_readonly
from ..errors import EngineFileError, GastrtError
from ..plan import Plan
from .base import Backend, Capabilities, ModelLoader, OpenedModel

MAGIC = b"GASTRTRT"
FORMAT_NAME = "gastrt-tensorrt"
FORMAT_VERSION = 1
ALIGN = 256
INPUT_NAME = "keypoints"
OUTPUT_NAME = "poses"
_MAX_HEADER = 64 << 20
TENSORRT_MISSING = "TensorRT is not installed: pip install 'gastrt[tensorrt]'"


# ---- optional imports ---------------------------------------------------------------------------
def require_tensorrt():
    """The tensorrt module, or GastrtError with the one-line install hint."""
    try:
        import tensorrt as trt
    except ImportError:
        raise GastrtError(TENSORRT_MISSING) from None
    except OSError as e:  # the bindings wheel without its libraries
        raise GastrtError(f"{TENSORRT_MISSING} (its libraries failed to load: {e})") from None
    return trt


def require_cudart():
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (new) or ``cuda.cudart`` (old)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise GastrtError("TensorRT plans need cuda-python: pip install 'gastrt[tensorrt]'") from None
    return cudart


def native_handle(obj) -> int:
    """The address behind a cuda-python object (a cudaStream_t): cuda-python 13 deprecates
    ``int(obj)`` for ``cuda.bindings.utils.get_cuda_native_handle``."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


def _cuda_check(cudart, result, what: str):
    """cuda-python calls return (err, *values); raise on an error, return the value(s)."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            msg = cudart.cudaGetErrorString(err)[1]
            msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        except Exception:
            msg = str(err)
        raise GastrtError(f"CUDA error in {what}: {msg}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def device_properties(index: int) -> dict:
    """{'name', 'compute_capability': [major, minor]} of GPU ``index`` (cuda-python)."""
    cudart = require_cudart()
    n = _cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if n == 0:
        raise GastrtError("no CUDA GPU is visible (CUDA_VISIBLE_DEVICES / driver)")
    if index >= n:
        raise GastrtError(f"device cuda:{index} does not exist ({n} GPU{'s' if n > 1 else ''} visible)")
    prop = _cuda_check(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return {"name": str(name), "compute_capability": [int(prop.major), int(prop.minor)]}


# ---- the container --------------------------------------------------------------------------------
def is_tensorrt_plan(path) -> bool:
    """True when ``path`` starts with the .plan container's magic (cheap: reads 8 bytes)."""
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def write_plan(path: str, header: dict, engines: dict[str, bytes]) -> None:
    """Write the container atomically. ``header`` gets format fields and the engines' table."""
    table, off = {}, 0
    for key in sorted(engines):
        blob = engines[key]
        off = (off + ALIGN - 1) // ALIGN * ALIGN
        table[key] = dict(header.get("engines", {}).get(key, {}), offset=off, size=len(blob),
                          sha256=hashlib.sha256(blob).hexdigest())
        off += len(blob)
    header = dict(header, format=FORMAT_NAME, format_version=FORMAT_VERSION, engines=table)
    hb = json.dumps(header, sort_keys=True).encode()
    hb += b" " * (-(len(MAGIC) + 8 + len(hb)) % ALIGN)

    def write(f):
        f.write(MAGIC)
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        pos = 0
        for key in sorted(engines):
            f.write(b"\0" * (table[key]["offset"] - pos))
            f.write(engines[key])
            pos = table[key]["offset"] + table[key]["size"]

    atomic_write(path, write)


def read_plan(path: str, verify: bool = True) -> tuple[dict, dict[str, memoryview]]:
    """-> (header, key -> serialized engine bytes as a read-only memoryview)."""
    def bad(why: str) -> EngineFileError:
        return EngineFileError(f"{path}: {why}")

    mm = map_readonly(path, "a TensorRT .plan file", len(MAGIC) + 8, "not a gastrt TensorRT plan (file too short)")
    size = len(mm)
    if mm[:len(MAGIC)] != MAGIC:
        raise bad("not a gastrt TensorRT plan (bad magic; build one with `gastrt build --backend tensorrt`)")
    (hlen,) = struct.unpack("<Q", mm[len(MAGIC):len(MAGIC) + 8])
    base = len(MAGIC) + 8 + hlen
    if hlen > min(size - len(MAGIC) - 8, _MAX_HEADER):
        raise bad("truncated or corrupted (header length out of range)")
    try:
        header = json.loads(bytes(mm[len(MAGIC) + 8:base]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad("corrupted header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise bad("not a gastrt TensorRT plan (format tag missing)")
    ver = header.get("format_version")
    if not isinstance(ver, int) or ver > FORMAT_VERSION:
        raise bad(f"plan format version {ver} is newer than this gastrt reads ({FORMAT_VERSION}); upgrade gastrt")
    blobs = {}
    view = memoryview(mm)
    for key, e in header.get("engines", {}).items():
        try:
            b, n = int(e["offset"]), int(e["size"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"corrupted engine table entry {key!r}") from None
        if base + b + n > size:
            raise bad(f"truncated ({size} bytes; engine {key!r} ends at {base + b + n})")
        blob = view[base + b:base + b + n]
        if verify and hashlib.sha256(blob).hexdigest() != e.get("sha256"):
            raise bad(f"corrupted: checksum mismatch in engine {key!r}")
        blobs[key] = blob
    if not blobs:
        raise bad("contains no TensorRT engine")
    return header, blobs


def plan_metadata(path: str, meta) -> tuple[dict, dict]:
    """A plan file's engine metadata checked as an engine file's is (engine_file.check_metadata):
    -> (plans, zero weights of the recorded shapes); anything off is one EngineFileError."""
    try:
        plans = {name: Plan.from_json(p) for name, p in meta["plans"].items()}
        shapes = {name: tuple(int(s) for s in shape) for name, shape in meta["weight_shapes"].items()}
        check_metadata(meta, plans, shapes)
        weights = {name: np.broadcast_to(np.zeros((), np.float32), shape) for name, shape in shapes.items()}
    except METADATA_ERRORS as e:
        raise EngineFileError(f"{path}: corrupted plan metadata ({type(e).__name__}: {str(e)[:160]})") from None
    return plans, weights


# ---- execution ------------------------------------------------------------------------------------
def device_view(x):
    """-> (view, alloc) of a torch / CuPy CUDA array: ``view`` has ptr, shape, device, stream (the
    library's current stream) and holds the array (a float32 contiguous copy when ``x`` is not:
    keep ``view`` alive until the work is enqueued); ``alloc(shape) -> (new array of the same
    kind, its pointer)``."""
    from .cuda.device_arrays import empty_device_array, resolve_device_array

    d = resolve_device_array(x, "x")
    if d.kind not in ("torch", "cupy"):
        raise GastrtError("TensorRT run_device takes torch or CuPy CUDA arrays")

    def alloc(shape):
        y = empty_device_array(d, tuple(shape), d.device, None)
        return y, resolve_device_array(y, "out", writable=True).ptr
    return d, alloc


class _DeviceBuffer:
    def __init__(self, cudart):
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(_cuda_check(self.cudart, self.cudart.cudaMalloc(max(nbytes, 256)), "cudaMalloc"))
            self.nbytes = max(nbytes, 256)
        return self.ptr

    def free(self):
        if self.ptr:
            try:
                self.cudart.cudaFree(self.ptr)
            except Exception:
                pass
            self.ptr, self.nbytes = 0, 0


class _TrtNetwork:
    """One deserialized engine + its execution context and I/O buffers."""

    def __init__(self, backend, key: str, blob, info: dict):
        trt, cudart = backend.trt, backend.cudart
        self.key = key
        self.backend = backend
        self.engine = backend.runtime.deserialize_cuda_engine(bytes(blob))
        if self.engine is None:
            raise GastrtError(f"{backend.path}: TensorRT could not deserialize engine {key!r} (built by "
                              f"TensorRT {backend.header.get('tensorrt_version')} for "
                              f"{backend.header.get('device_name')}); rebuild the plan on this machine")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, OUTPUT_NAME]):
            raise GastrtError(f"{backend.path}: engine {key!r} has I/O tensors {names}, expected "
                              f"{INPUT_NAME!r} and {OUTPUT_NAME!r}")
        for name, want in ((INPUT_NAME, trt.TensorIOMode.INPUT), (OUTPUT_NAME, trt.TensorIOMode.OUTPUT)):
            if self.engine.get_tensor_mode(name) != want:
                raise GastrtError(f"{backend.path}: engine {key!r}: {name!r} is not an {want}")
            if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise GastrtError(f"{backend.path}: engine {key!r}: {name!r} is not float32")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise GastrtError(f"{backend.path}: TensorRT could not create an execution context for {key!r} "
                              "(out of GPU memory?)")
        prof = info["profile"]
        self.min_shape, self.max_shape = list(prof["min"]), list(prof["max"])
        self.inp = _DeviceBuffer(cudart)
        self.out = _DeviceBuffer(cudart)

    def prepare(self, shape) -> tuple:
        """Set the input shape (inside the profile); -> the output shape."""
        shape = tuple(int(s) for s in shape)
        if not self.context.set_input_shape(INPUT_NAME, shape):
            raise GastrtError(f"TensorRT rejected input shape {shape} for {self.key!r} "
                              f"(profile {self.min_shape} .. {self.max_shape})")
        out_shape = tuple(int(s) for s in self.context.get_tensor_shape(OUTPUT_NAME))
        if any(s < 0 for s in out_shape):
            raise GastrtError(f"TensorRT could not infer the output shape of {self.key!r} for input {shape}")
        return out_shape

    def enqueue(self, in_ptr: int, out_ptr: int, stream_handle: int) -> None:
        """Run on device buffers (after :meth:`prepare`), ordered on ``stream_handle``."""
        if not (self.context.set_tensor_address(INPUT_NAME, int(in_ptr)) and
                self.context.set_tensor_address(OUTPUT_NAME, int(out_ptr))):
            raise GastrtError(f"TensorRT rejected the device buffers of {self.key!r}")
        if not self.context.execute_async_v3(int(stream_handle)):
            raise GastrtError(f"TensorRT execution of {self.key!r} failed (see the TensorRT log above)")

    def execute(self, x: np.ndarray) -> np.ndarray:
        """x float32 within the profile -> output as a new float32 array (host to host)."""
        be = self.backend
        cudart = be.cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.empty(self.prepare(x.shape), dtype=np.float32)
        pin = self.inp.ensure(x.nbytes)
        pout = self.out.ensure(y.nbytes)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_check(cudart, cudart.cudaMemcpyAsync(pin, x.ctypes.data, x.nbytes, h2d, be.stream), "cudaMemcpyAsync")
        self.enqueue(pin, pout, be.stream_handle)
        _cuda_check(cudart, cudart.cudaMemcpyAsync(y.ctypes.data, pout, y.nbytes, d2h, be.stream), "cudaMemcpyAsync")
        _cuda_check(cudart, cudart.cudaStreamSynchronize(be.stream), "cudaStreamSynchronize")
        return y

    def in_profile(self, shape) -> bool:
        return len(shape) == len(self.min_shape) and \
            all(a <= s <= b for a, s, b in zip(self.min_shape, shape, self.max_shape))

    def free(self):
        self.inp.free()
        self.out.free()
        self.context = None
        self.engine = None


class TensorRTBackend(Backend):
    """Executes a .plan's engines; ``run(plan_name, x, mode)`` like every gastrt backend:
    x [N, T, J, F] float32 -> [N, T_out, J_out, 3]."""
    name = "tensorrt"

    @property
    def capabilities(self) -> Capabilities:
        modes = frozenset(k.split("/", 1)[1] for k in self.nets)
        return Capabilities(modes=modes, device_arrays=True, stream="engine",
                            device=f"cuda:{self.device_index}", threads=None)

    def is_device_array(self, x) -> bool:
        # run_device takes torch / CuPy CUDA arrays explicitly; Engine.lift sends host arrays
        # through run() (chunked and padded to the profiles), as before
        return False

    def __init__(self, path: str, header: dict, blobs: dict, device_index: int = 0):
        self.path = path
        self.header = header
        self.device_index = int(device_index)
        self.trt = trt = require_tensorrt()
        self.cudart = cudart = require_cudart()
        built_ver, here_ver = header.get("tensorrt_version"), getattr(trt, "__version__", "?")
        if built_ver != here_ver:
            raise GastrtError(f"{path}: built with TensorRT {built_ver}, this is TensorRT {here_ver}: TensorRT "
                              "engines load only in the version that built them; rebuild with "
                              "`gastrt build --backend tensorrt`")
        props = device_properties(self.device_index)
        built_cc = header.get("compute_capability")
        if built_cc is not None and list(built_cc) != props["compute_capability"]:
            cc = ".".join(map(str, built_cc))
            here = ".".join(map(str, props["compute_capability"]))
            raise GastrtError(f"{path}: built for compute capability {cc} ({header.get('device_name')}), "
                              f"cuda:{self.device_index} is {here} ({props['name']}): TensorRT engines run only "
                              "on the GPU architecture they were built for; rebuild on this GPU")
        _cuda_check(cudart, cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        try:   # the bindings raise when TensorRT returns no runtime
            self.runtime = trt.Runtime(self._logger)
        except (TypeError, RuntimeError) as e:
            raise GastrtError(f"TensorRT could not create a runtime (is a CUDA GPU visible?): {e}") from None
        self.stream = _cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = native_handle(self.stream)
        self._lock = threading.Lock()
        self.nets: dict[str, _TrtNetwork] = {}
        for key, blob in blobs.items():
            self.nets[key] = _TrtNetwork(self, key, blob, header["engines"][key])

    # -- chunking -------------------------------------------------------------------------------
    def _window(self, net: _TrtNetwork, x: np.ndarray) -> np.ndarray:
        lo, hi = int(net.min_shape[0]), int(net.max_shape[0])
        outs = []
        for i in range(0, x.shape[0], hi):
            xb = x[i:i + hi]
            n = xb.shape[0]
            if n < lo:  # pad up to the profile's minimum batch with copies of the last window
                xb = np.concatenate([xb, np.repeat(xb[-1:], lo - n, axis=0)])
            outs.append(net.execute(xb)[:n])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _sequence(self, net: _TrtNetwork, x: np.ndarray, rf: int) -> np.ndarray:
        hi_p, hi_t = int(net.max_shape[0]), int(net.max_shape[1])
        lo_p = int(net.min_shape[0])
        t_out = x.shape[1] - rf + 1
        chunk = hi_t - rf + 1   # output frames per call
        rows = []
        for p in range(0, x.shape[0], hi_p):
            xp = x[p:p + hi_p]
            n = xp.shape[0]
            if n < lo_p:
                xp = np.concatenate([xp, np.repeat(xp[-1:], lo_p - n, axis=0)])
            parts = [net.execute(xp[:, a:min(a + chunk, t_out) + rf - 1])[:n] for a in range(0, t_out, chunk)]
            rows.append(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])
        return np.concatenate(rows) if len(rows) > 1 else rows[0]

    def _net(self, plan_name: str, mode: str) -> _TrtNetwork:
        net = self.nets.get(f"{plan_name}/{mode}")
        if net is None:
            raise GastrtError(f"{self.path}: no TensorRT engine for {plan_name!r} in {mode} form "
                              f"(it has {', '.join(sorted(self.nets))})")
        return net

    def run(self, plan_name: str, x: np.ndarray, mode: str) -> np.ndarray:
        net = self._net(plan_name, mode)
        with self._lock:
            _cuda_check(self.cudart, self.cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
            if mode == "window":
                y = self._window(net, x)
                return y[:, None]                      # [N, J, 3] -> [N, 1, J, 3]
            rf = int(self.header["meta"]["plans"][plan_name]["receptive_field"])
            return self._sequence(net, x, rf)

    def run_device(self, plan_name: str, x, mode: str, out=None, stream: int | None = None):
        """x: a contiguous float32 CUDA tensor (torch / CuPy) [N, T, J, F] whose shape lies inside
        the engine's optimization profile -> a new device array of the same kind [N, T_out,
        J_out, 3] (window: T_out = 1), enqueued on the caller's stream (the array library's
        current stream, or ``stream``) with no host sync. No chunking or padding, unlike
        :meth:`run`: build the plan with a profile that covers the shapes (``gastrt bench``
        does)."""
        from .cuda.device_arrays import stream_context

        if out is not None:
            raise GastrtError("TensorRT run_device allocates its output (out= is for CUDA engines)")
        net = self._net(plan_name, mode)
        with stream_context(x, stream):   # a conversion copy and the output belong to that stream
            return self._run_device(net, x, mode, stream)

    def _run_device(self, net: _TrtNetwork, x, mode: str, stream):
        view, alloc = device_view(x)
        shape, dev = tuple(view.shape), view.device
        if view.ptr % 256:   # TensorRT's I/O addresses must be 256-byte aligned (a slice may not be)
            xa, _ = alloc(shape)
            xa[...] = view.obj
            view, alloc = device_view(xa)
        if dev != self.device_index:
            raise GastrtError(f"x is on cuda:{dev} but the TensorRT engine is on cuda:{self.device_index}")
        if not net.in_profile(shape):
            raise GastrtError(f"input shape {tuple(shape)} is outside the optimization profile of {net.key!r} "
                              f"({net.min_shape} .. {net.max_shape}); run() chunks and pads, run_device() "
                              "does not")
        handle = int(stream if stream is not None else (view.stream or 0))
        with self._lock:
            _cuda_check(self.cudart, self.cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
            y, y_ptr = alloc(net.prepare(shape))
            net.enqueue(view.ptr, y_ptr, handle)
        if mode == "window":
            y = y.reshape((y.shape[0], 1) + tuple(y.shape[1:]))
        return y

    def device_bytes(self) -> int:
        """GPU memory the engines hold beyond their I/O: each context's activation memory plus
        the serialized engines (a proxy for the weights TensorRT keeps on the device)."""
        total = 0
        for key, net in self.nets.items():
            eng = net.engine
            act = getattr(eng, "device_memory_size_v2", None)
            if act is None:
                act = getattr(eng, "device_memory_size", 0)
            total += int(act or 0) + int(self.header["engines"][key].get("size", 0))
        return total

    def close(self):
        for net in self.nets.values():
            net.free()
        self.nets = {}
        if getattr(self, "stream", None) is not None:
            try:
                self.cudart.cudaStreamDestroy(self.stream)
            except Exception:
                pass
            self.stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def open_tensorrt(path, device=None, verify: bool = True) -> OpenedModel:
    """Open a ``.plan`` container for ``gastrt.load`` (family, receptive_field, num_joints,
    causal, precision; lift / lift_sequence / flip) on a GPU. ``device``: "cuda", "cuda:N" or N
    (default "cuda")."""
    path = os.fspath(path)
    if device is None:
        device = "cuda"
    if isinstance(device, int) and not isinstance(device, bool):
        index = device
    else:
        dev, index = parse_device(device)
        if dev != "cuda":
            raise GastrtError(f"{path} is a TensorRT plan: it runs on a GPU (device='cuda' or 'cuda:N'), "
                              f"not on {device!r}")
    header, blobs = read_plan(path, verify=verify)
    meta = header.get("meta")
    plans, weights = plan_metadata(path, meta)
    backend = TensorRTBackend(path, header, blobs, index)
    return OpenedModel(meta, plans, weights, backend, f"cuda:{index}")


LOADER = ModelLoader("tensorrt", is_tensorrt_plan, open_tensorrt)
