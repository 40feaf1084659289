"""A strict CPU stand-in for the parts of TensorRT's and cuda-python's Python APIs that gastrt uses,
so that ``gastrt build --backend tensorrt`` and the ``.plan`` runner run end to end on a machine
with neither (these CI machines). It checks what the real libraries would reject, as documented in
TensorRT's Python API (8.6 / 10 / 11) and cuda-python's runtime bindings:

* versions: TensorRT 8.6 needs EXPLICIT_BATCH and is weakly typed (fp16 via BuilderFlag.FP16, no
  bf16); TensorRT 10 has STRONGLY_TYPED (no precision flags with it); TensorRT 11 is always strongly
  typed and has no EXPLICIT_BATCH;
* the build: one optimization profile that sets every dynamic input, min <= opt <= max, static
  dims matching the network; TF32 is on by default, as in TensorRT;
* execution: named I/O tensors; ``set_input_shape`` inside the profile (False outside it);
  addresses must be live device allocations large enough for the tensor; ``execute_async_v3``
  on a live stream handle; memcpy directions checked against which side is device memory.

What it cannot check: TensorRT's kernels, its ONNX parser's op coverage, timing, real device
memory. The "engine" is the ONNX graph, run by onnxruntime (bf16 graphs build but cannot run).
Device memory is host memory the emulator hands out and tracks.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types

import numpy as np

_BLOB_MAGIC = b"EMUTRT01"


class _Dims(tuple):
    """TensorRT's Dims: iterable ints (-1 for dynamic)."""


class Emulator:
    """``cuda_python``: "13" (``cuda.bindings.runtime`` + ``cuda.bindings.utils.get_cuda_native_handle``;
    ``int(stream)`` is deprecated there), "12" (``cuda.bindings.runtime``, 12.6.1+) or "12-old"
    (``cuda.cudart`` only, before 12.6.1)."""

    def __init__(self, version: str = "10.9.0", cc=(9, 0), name: str = "Emulated H200", devices: int = 1,
                 cuda_python: str = "12"):
        self.version, self.cc, self.name, self.devices = version, tuple(cc), name, devices
        self.major = int(version.split(".")[0])
        self.cuda_python = cuda_python
        self.builds: list[dict] = []        # one record per build_serialized_network
        self.executions: list[tuple] = []   # (engine key, input shape, stream handle)
        self.allocs: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self.device = 0
        self.trt = self._make_tensorrt()
        self.cudart = self._make_cudart()

    # ---- installation ----------------------------------------------------------------------
    def install(self, monkeypatch) -> "Emulator":
        cuda = types.ModuleType("cuda")
        mods = {"tensorrt": self.trt, "cuda": cuda}
        if self.cuda_python == "12-old":
            cuda.cudart = self.cudart
            mods["cuda.cudart"] = self.cudart
            mods["cuda.bindings"] = None          # import cuda.bindings -> ImportError
        else:
            bindings = types.ModuleType("cuda.bindings")
            bindings.runtime = self.cudart
            cuda.bindings = bindings
            mods.update({"cuda.bindings": bindings, "cuda.bindings.runtime": self.cudart})
            if self.cuda_python == "13":
                utils = types.ModuleType("cuda.bindings.utils")
                utils.get_cuda_native_handle = lambda obj: obj._h
                bindings.utils = utils
                mods["cuda.bindings.utils"] = utils
            else:
                mods["cuda.bindings.utils"] = None
        for name, mod in mods.items():
            monkeypatch.setitem(sys.modules, name, mod)
        return self

    # ---- emulated device memory ------------------------------------------------------------
    def adopt(self, array) -> int:
        """Treat a host array's memory (NumPy, or a CPU torch tensor) as device memory: the
        stand-in for a CUDA tensor handed to ``run_device``. Returns its address."""
        if hasattr(array, "data_ptr"):
            ptr, n = int(array.data_ptr()), int(array.numel() * array.element_size())
        else:
            ptr, n = int(array.ctypes.data), int(array.nbytes)
        self.allocs[ptr] = np.ctypeslib.as_array((ctypes.c_uint8 * max(n, 1)).from_address(ptr))
        return ptr

    def empty_tensor(self, torch, shape):
        """A float32 CPU torch tensor in emulated device memory (256-byte aligned, like a CUDA
        caching-allocator block): the stand-in for ``torch.empty(shape, device="cuda")``."""
        n = int(np.prod(shape))
        raw = np.empty(n * 4 + 256, np.uint8)
        off = -raw.ctypes.data % 256
        buf = raw[off:off + n * 4]
        t = torch.from_numpy(buf.view(np.float32)).reshape(tuple(shape))
        self.allocs[int(buf.ctypes.data)] = buf
        return t

    def device_view(self, torch):
        """A stand-in for ``tensorrt_runner.device_view`` over CPU torch tensors (monkeypatch it
        in): the input is adopted as device memory, outputs come from :meth:`empty_tensor`."""
        import types as _types

        def view(x):
            x = x.to(torch.float32).contiguous()
            self.adopt(x)

            def alloc(shape):
                y = self.empty_tensor(torch, shape)
                return y, int(y.data_ptr())
            return _types.SimpleNamespace(ptr=int(x.data_ptr()), shape=tuple(x.shape), device=0, stream=None,
                                          obj=x), alloc
        return view

    def device_region(self, ptr: int, nbytes: int) -> bool:
        for base, buf in self.allocs.items():
            if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                return True
        return False

    def _need_device(self, ptr, nbytes, what):
        if not isinstance(ptr, int):
            raise TypeError(f"{what}: device pointer must be an int, got {type(ptr).__name__}")
        if not self.device_region(ptr, nbytes):
            raise RuntimeError(f"{what}: [{ptr:#x}, +{nbytes}) is not inside a live device allocation")

    # ---- tensorrt ----------------------------------------------------------------------------
    def _make_tensorrt(self):
        emu = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.version

        class Logger:
            VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = 4, 3, 2, 1, 0

            def __init__(self, min_severity=2):
                self.min_severity = min_severity
                self.messages = []

            def log(self, severity, msg):
                self.messages.append((severity, msg))

        if self.major >= 11:   # FP16 / BF16 / INT8 builder flags are gone: every network is strongly typed
            Flag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2})
            bflags = {"DEBUG": 2, "TF32": 6}
        elif self.major == 10:
            Flag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1,
                                                                  "PREFER_AOT_PYTHON_PLUGINS": 2,
                                                                  "PREFER_JIT_PYTHON_PLUGINS": 3})
            bflags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "TF32": 6, "BF16": 17}
        else:
            Flag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1})
            bflags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "TF32": 7}
        BuilderFlag = enum.IntEnum("BuilderFlag", bflags)
        MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
        TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
        dtypes = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4}
        if self.major >= 10:
            dtypes["BF16"] = 7
        DataType = enum.IntEnum("DataType", dtypes)

        def strongly_typed(flags: int) -> bool:
            if emu.major >= 11:
                return True
            return emu.major == 10 and bool(flags & (1 << int(Flag.STRONGLY_TYPED)))

        class INetworkDefinition:
            def __init__(self, flags):
                self.flags = flags
                self.model = None
                self.inputs = []           # (name, [dims])

            @property
            def num_inputs(self):
                return len(self.inputs)

        class OnnxParser:
            def __init__(self, network, logger):
                if not isinstance(network, INetworkDefinition) or not isinstance(logger, Logger):
                    raise TypeError("OnnxParser(network: INetworkDefinition, logger: ILogger)")
                self.network, self.errors = network, []

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

            def parse(self, model, path=None):
                import onnx
                if not isinstance(model, (bytes, bytearray, memoryview)):
                    raise TypeError("parse(model: buffer)")
                if emu.major < 10 and not self.network.flags & (1 << int(Flag.EXPLICIT_BATCH)):
                    self.errors.append("the ONNX parser supports explicit-batch networks only")
                    return False
                try:
                    m = onnx.load_from_string(bytes(model))
                    onnx.checker.check_model(m)
                except Exception as e:
                    self.errors.append(f"invalid ONNX model: {e}")
                    return False
                types_used = {t.data_type for t in m.graph.initializer}
                if onnx.TensorProto.BFLOAT16 in types_used and emu.major < 10:
                    self.errors.append("BFLOAT16 is not supported before TensorRT 10")
                    return False
                inits = {t.name for t in m.graph.initializer}
                self.network.inputs = [(v.name, [d.dim_value if d.HasField("dim_value") else -1
                                                 for d in v.type.tensor_type.shape.dim])
                                       for v in m.graph.input if v.name not in inits]
                self.network.model = m
                return True

        class IOptimizationProfile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, input, min, opt, max):
                dims = [tuple(min), tuple(opt), tuple(max)]
                if not isinstance(input, str) or not all(all(isinstance(v, int) for v in d) for d in dims):
                    raise TypeError("set_shape(input: str, min: Dims, opt: Dims, max: Dims)")
                if not len(dims[0]) == len(dims[1]) == len(dims[2]) or not all(
                        0 <= a <= b <= c for a, b, c in zip(*dims)):
                    raise RuntimeError(f"set_shape: inconsistent min / opt / max {dims}")   # as the bindings
                self.shapes[input] = dims

        class IBuilderConfig:
            def __init__(self):
                self.flags = {BuilderFlag.TF32} if hasattr(BuilderFlag, "TF32") else set()
                self.profiles, self.pools = [], {}

            def set_flag(self, f):
                self.flags.add(BuilderFlag(f))

            def clear_flag(self, f):
                self.flags.discard(BuilderFlag(f))

            def get_flag(self, f):
                return BuilderFlag(f) in self.flags

            def set_memory_pool_limit(self, pool, size):
                self.pools[MemoryPoolType(pool)] = int(size)

            def add_optimization_profile(self, profile):
                if not isinstance(profile, IOptimizationProfile):
                    raise TypeError("add_optimization_profile(profile: IOptimizationProfile)")
                self.profiles.append(profile)
                return len(self.profiles) - 1

        class HostMemory(bytes):
            """IHostMemory: the buffer protocol (bytes(), memoryview()) and nbytes."""
            @property
            def nbytes(self):
                return len(self)

        class Builder:
            def __init__(self, logger):
                if not isinstance(logger, Logger):
                    raise TypeError("Builder(logger: ILogger)")
                self.logger = logger

            def create_network(self, flags=0):
                if not isinstance(flags, int):
                    raise TypeError("create_network(flags: int)")
                if flags >> len(Flag):
                    raise ValueError(f"unknown network creation flags {flags:#x}")
                return INetworkDefinition(flags)

            def create_builder_config(self):
                return IBuilderConfig()

            def create_optimization_profile(self):
                return IOptimizationProfile()

            def build_serialized_network(self, network, config):
                def fail(msg):
                    self.logger.log(Logger.ERROR, msg)
                    return None
                if network.model is None:
                    return fail("empty network")
                if len(config.profiles) != 1:
                    return fail(f"expected one optimization profile, got {len(config.profiles)}")
                prof = config.profiles[0]
                for name, dims in network.inputs:
                    if name not in prof.shapes:
                        return fail(f"the profile sets no shape for input {name!r}")
                    lo, opt, hi = prof.shapes[name]
                    if not len(lo) == len(opt) == len(hi) == len(dims):
                        return fail(f"profile rank for {name!r} does not match the network {dims}")
                    for d, a, b, c in zip(dims, lo, opt, hi):
                        if not 0 <= a <= b <= c or (d >= 0 and not a == b == c == d):
                            return fail(f"bad profile for {name!r}: {lo} / {opt} / {hi} vs {dims}")
                st = strongly_typed(network.flags)
                prec_flags = {f.name for f in config.flags} & {"FP16", "BF16", "INT8"}
                if st and prec_flags:
                    return fail(f"precision flags {sorted(prec_flags)} are not allowed on a strongly typed network")
                rec = {"flags": network.flags, "strongly_typed": st, "builder_flags": sorted(f.name for f in config.flags),
                       "profile": {n: [list(d) for d in s] for n, s in prof.shapes.items()},
                       "workspace": config.pools.get(MemoryPoolType.WORKSPACE)}
                emu.builds.append(rec)
                head = json.dumps({"version": emu.version, "cc": list(emu.cc), **rec}).encode()
                return HostMemory(_BLOB_MAGIC + len(head).to_bytes(8, "little") + head +
                                  network.model.SerializeToString())

        class ICudaEngine:
            def __init__(self, head, model_bytes):
                import onnx
                self.head = head
                self.model_bytes = model_bytes
                m = onnx.load_from_string(model_bytes)
                self.io = [(v.name, TensorIOMode.INPUT) for v in m.graph.input] + \
                          [(v.name, TensorIOMode.OUTPUT) for v in m.graph.output]
                to_trt = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF",
                          onnx.TensorProto.BFLOAT16: "BF16"}
                self.dtypes = {v.name: DataType[to_trt[v.type.tensor_type.elem_type]]
                               for v in list(m.graph.input) + list(m.graph.output)}
                self.num_io_tensors = len(self.io)
                if emu.major <= 10:
                    self.device_memory_size = 1 << 20      # removed in TensorRT 11
                if emu.major >= 10:
                    self.device_memory_size_v2 = 1 << 20
                self._session = None

            def get_tensor_name(self, i):
                return self.io[i][0]

            def get_tensor_mode(self, name):
                return dict(self.io).get(name, TensorIOMode.NONE)

            def get_tensor_dtype(self, name):
                return self.dtypes[name]

            def session(self):
                if self._session is None:
                    import onnxruntime as ort
                    so = ort.SessionOptions()
                    so.intra_op_num_threads = 1
                    self._session = ort.InferenceSession(self.model_bytes, so, providers=["CPUExecutionProvider"])
                return self._session

            def create_execution_context(self):
                return IExecutionContext(self)

        class IExecutionContext:
            def __init__(self, engine):
                self.engine = engine
                self.shapes, self.addresses, self._out_shapes = {}, {}, {}

            def _names(self):
                ins = [n for n, m in self.engine.io if m == TensorIOMode.INPUT]
                outs = [n for n, m in self.engine.io if m == TensorIOMode.OUTPUT]
                return ins, outs

            def set_input_shape(self, name, shape):
                shape = tuple(shape)
                if not all(isinstance(v, int) for v in shape):
                    raise TypeError("set_input_shape(name: str, shape: Dims)")
                if name not in self.engine.head["profile"]:
                    return False
                lo, _, hi = (tuple(d) for d in self.engine.head["profile"][name])
                if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                    return False
                self.shapes[name] = shape
                return True

            def _infer_out(self):
                ins, outs = self._names()
                key = tuple(self.shapes[n] for n in ins)
                if key not in self._out_shapes:
                    feeds = {n: np.zeros(self.shapes[n], np.float32) for n in ins}
                    ys = self.engine.session().run(outs, feeds)
                    self._out_shapes[key] = {n: y.shape for n, y in zip(outs, ys)}
                return self._out_shapes[key]

            def get_tensor_shape(self, name):
                ins, outs = self._names()
                if name in ins:
                    return _Dims(self.shapes.get(name, ()))
                if not all(n in self.shapes for n in ins):
                    return _Dims((-1,) * 3)
                return _Dims(self._infer_out()[name])

            def set_tensor_address(self, name, memory):
                if not isinstance(memory, int):
                    raise TypeError("set_tensor_address(name: str, memory: int)")
                if self.engine.get_tensor_mode(name) == TensorIOMode.NONE or memory % 256:
                    return False          # unknown tensor, or not 256-byte aligned (setTensorAddress)
                self.addresses[name] = memory
                return True

            def execute_async_v3(self, stream_handle):
                if not isinstance(stream_handle, int):
                    raise TypeError("execute_async_v3(stream_handle: int)")
                if stream_handle != 0 and stream_handle not in emu.streams:
                    raise RuntimeError(f"execute_async_v3: {stream_handle:#x} is not a live stream")
                ins, outs = self._names()
                if not all(n in self.shapes for n in ins) or not all(n in self.addresses for n in ins + outs):
                    return False
                feeds = {}
                for n in ins:
                    nbytes = int(np.prod(self.shapes[n])) * 4
                    emu._need_device(self.addresses[n], nbytes, f"input {n!r}")
                    feeds[n] = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(self.addresses[n]),
                                             np.float32).reshape(self.shapes[n]).copy()
                ys = self.engine.session().run(outs, feeds)
                for n, y in zip(outs, ys):
                    y = np.ascontiguousarray(y, np.float32)
                    emu._need_device(self.addresses[n], y.nbytes, f"output {n!r}")
                    ctypes.memmove(self.addresses[n], y.ctypes.data, y.nbytes)
                emu.executions.append((self.engine.head["profile"], tuple(self.shapes[ins[0]]), stream_handle))
                return True

        class Runtime:
            def __init__(self, logger):
                if not isinstance(logger, Logger):
                    raise TypeError("Runtime(logger: ILogger)")
                self.logger = logger

            def deserialize_cuda_engine(self, serialized_engine):
                data = bytes(serialized_engine)
                if data[:len(_BLOB_MAGIC)] != _BLOB_MAGIC:
                    self.logger.log(Logger.ERROR, "not a serialized engine")
                    return None
                n = int.from_bytes(data[8:16], "little")
                head = json.loads(data[16:16 + n])
                if head["version"] != emu.version or tuple(head["cc"]) != emu.cc:
                    self.logger.log(Logger.ERROR, "engine built by another TensorRT / for another GPU")
                    return None
                return ICudaEngine(head, data[16 + n:])

        for name, obj in dict(Logger=Logger, NetworkDefinitionCreationFlag=Flag, BuilderFlag=BuilderFlag,
                              MemoryPoolType=MemoryPoolType, TensorIOMode=TensorIOMode, DataType=DataType,
                              Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime).items():
            setattr(trt, name, obj)
        return trt

    # ---- cuda.bindings.runtime ---------------------------------------------------------------
    def _make_cudart(self):
        emu = self
        rt = types.ModuleType("cuda.bindings.runtime")
        Err = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                           "cudaErrorMemoryAllocation": 2, "cudaErrorInvalidDevice": 101})
        Kind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToHost": 0, "cudaMemcpyHostToDevice": 1,
                                               "cudaMemcpyDeviceToHost": 2, "cudaMemcpyDeviceToDevice": 3})
        ok = Err.cudaSuccess

        class cudaStream_t:
            _next = 0x5000

            def __init__(self):
                cudaStream_t._next += 0x10
                self._h = cudaStream_t._next

            def __int__(self):
                if emu.cuda_python == "13":
                    raise AssertionError("int(cuda object) is deprecated in cuda-python 13: "
                                         "cuda.bindings.utils.get_cuda_native_handle")
                return self._h

        class cudaDeviceProp:
            def __init__(self):
                self.name = emu.name.encode() + b"\0" * (256 - len(emu.name))
                self.major, self.minor = emu.cc

        def _stream(s):
            h = s._h if isinstance(s, cudaStream_t) else int(s or 0)
            if h != 0 and h not in emu.streams:
                raise RuntimeError(f"stream {h:#x} is not live")

        def cudaGetDeviceCount():
            return ok, emu.devices

        def cudaGetDeviceProperties(device):
            if not 0 <= device < emu.devices:
                return Err.cudaErrorInvalidDevice, None
            return ok, cudaDeviceProp()

        def cudaSetDevice(device):
            if not 0 <= device < emu.devices:
                return (Err.cudaErrorInvalidDevice,)
            emu.device = device
            return (ok,)

        def cudaGetErrorString(err):
            return ok, Err(err).name.encode()

        def cudaMalloc(size):
            if not isinstance(size, int) or size <= 0:
                return Err.cudaErrorInvalidValue, None
            raw = np.empty(size + 256, np.uint8)
            off = -raw.ctypes.data % 256     # cudaMalloc memory is 256-byte aligned
            buf = raw[off:off + size]
            buf[:] = 0xCD                    # never zero: reads of unwritten memory show
            emu.allocs[int(buf.ctypes.data)] = buf
            return ok, int(buf.ctypes.data)

        def cudaFree(ptr):
            if emu.allocs.pop(int(ptr), None) is None:
                return (Err.cudaErrorInvalidValue,)
            return (ok,)

        def cudaMemcpyAsync(dst, src, count, kind, stream):
            _stream(stream)
            kind = Kind(kind)
            if not all(isinstance(v, int) for v in (dst, src, count)):
                raise TypeError("cudaMemcpyAsync(dst: int, src: int, count: int, kind, stream)")
            d_dev, s_dev = emu.device_region(dst, count), emu.device_region(src, count)
            want = {Kind.cudaMemcpyHostToDevice: (True, False), Kind.cudaMemcpyDeviceToHost: (False, True),
                    Kind.cudaMemcpyDeviceToDevice: (True, True), Kind.cudaMemcpyHostToHost: (False, False)}[kind]
            if (d_dev, s_dev) != want:
                return (Err.cudaErrorInvalidValue,)
            ctypes.memmove(dst, src, count)
            return (ok,)

        def cudaStreamCreate():
            s = cudaStream_t()
            emu.streams.add(s._h)
            return ok, s

        def cudaStreamSynchronize(stream):
            _stream(stream)
            return (ok,)

        def cudaStreamDestroy(stream):
            emu.streams.discard(stream._h)
            return (ok,)

        for name, obj in dict(cudaError_t=Err, cudaMemcpyKind=Kind, cudaStream_t=cudaStream_t,
                              cudaGetDeviceCount=cudaGetDeviceCount,
                              cudaGetDeviceProperties=cudaGetDeviceProperties, cudaSetDevice=cudaSetDevice,
                              cudaGetErrorString=cudaGetErrorString, cudaMalloc=cudaMalloc, cudaFree=cudaFree,
                              cudaMemcpyAsync=cudaMemcpyAsync, cudaStreamCreate=cudaStreamCreate,
                              cudaStreamSynchronize=cudaStreamSynchronize,
                              cudaStreamDestroy=cudaStreamDestroy).items():
            setattr(rt, name, obj)
        return rt
