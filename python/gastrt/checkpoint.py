"""Read PyTorch checkpoint files without torch and without running pickle code.

Checkpoints are untrusted input: the pickle stream is read by a restricted
unpickler whose ``find_class`` only hands out a small allow-list of harmless
stand-ins (tensor rebuild functions, storage/dtype markers, ``OrderedDict``,
plain numpy arrays).  Every tensor comes back as a C-contiguous numpy copy.

Both container formats written by ``torch.save`` are supported:

* zip (torch >= 1.6 default): ``<prefix>/data.pkl`` plus one raw record per
  storage at ``<prefix>/data/<key>``, byte order from ``<prefix>/byteorder``;
* legacy (``_use_new_zipfile_serialization=False``, and the released
  GAST-Net / VideoPose3D / RIE checkpoints): consecutive pickles (magic number,
  protocol version, sys_info, the object, the sorted storage keys) followed by,
  for every key, an int64 element count and the raw little-endian bytes.

Every pickle is scanned with ``pickletools`` before the C unpickler sees it, so a
corrupt length or memo index fails cleanly instead of allocating gigabytes.
"""

from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

from .errors import GastrtError

__all__ = ["CheckpointError", "read_torch_file", "load_state_dicts", "scan_pickle"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_NOT_TORCH = "not a PyTorch checkpoint (expected a torch.save file: zip archive or legacy pickle)"


class CheckpointError(GastrtError):
    """A checkpoint file could not be read; the message names the file and the problem."""


class _Problem(Exception):
    """Internal: a problem found while parsing; turned into CheckpointError with the path."""


def _corrupt(detail):
    return _Problem(f"truncated or corrupted torch checkpoint ({detail})")


# --------------------------------------------------------------------------- dtypes


class _Marker:
    """Base of every stand-in object the unpickler hands out.

    ``__setstate__`` refuses the BUILD opcode so a crafted pickle cannot
    overwrite the fields of a stand-in after it was validated.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise _Problem(f"pickle tries to set state on {self!r}")


class _DType(_Marker):
    """A torch dtype: its numpy equivalent (None when numpy has none)."""

    __slots__ = ("name", "np", "bf16", "itemsize")

    def __init__(self, name, np_dtype, bf16=False, itemsize=None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "np", None if np_dtype is None else np.dtype(np_dtype))
        object.__setattr__(self, "bf16", bf16)
        object.__setattr__(self, "itemsize", itemsize or self.np.itemsize)

    def __setattr__(self, key, value):
        raise AttributeError("read-only")

    def __repr__(self):
        return f"torch.{self.name}"


# torch dtype name -> numpy dtype (little-endian as stored; byte order fixed per file).
_TORCH_DTYPES = {}
for _names, _np in [
    (("float32", "float"), "<f4"), (("float64", "double"), "<f8"), (("float16", "half"), "<f2"),
    (("int64", "long"), "<i8"), (("int32", "int"), "<i4"), (("int16", "short"), "<i2"),
    (("int8",), "i1"), (("uint8",), "u1"), (("bool",), "?"),
    (("uint16",), "<u2"), (("uint32",), "<u4"), (("uint64",), "<u8"),
    (("complex64", "cfloat"), "<c8"), (("complex128", "cdouble"), "<c16"),
]:
    for _n in _names:
        _TORCH_DTYPES[_n] = _DType(_names[0], _np)
_TORCH_DTYPES["bfloat16"] = _DType("bfloat16", "<u2", bf16=True)
# Known torch dtypes numpy cannot represent: recognised so the error says "unsupported dtype".
for _names, _size in [
    (("complex32", "chalf"), 4), (("qint32",), 4),
    (("float8_e4m3fn",), 1), (("float8_e5m2",), 1), (("float8_e4m3fnuz",), 1),
    (("float8_e5m2fnuz",), 1), (("float8_e8m0fnu",), 1),
    (("qint8",), 1), (("quint8",), 1), (("quint4x2",), 1),
]:
    for _n in _names:
        _TORCH_DTYPES[_n] = _DType(_names[0], None, itemsize=_size)

# Legacy typed-storage class name -> dtype of its elements.
_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
}


class _StorageType(_Marker):
    """Marker for ``torch.FloatStorage`` & co; ``UntypedStorage`` holds raw bytes."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, key, value):
        raise AttributeError("read-only")

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {n: _StorageType(n, _TORCH_DTYPES[d]) for n, d in _STORAGE_DTYPES.items()}
_STORAGE_TYPES["UntypedStorage"] = _StorageType("UntypedStorage", _TORCH_DTYPES["uint8"])


# --------------------------------------------------------------------------- storages & tensors


class _Storage(_Marker):
    """One storage: raw bytes (filled in when read) or a legacy element-range view of another."""

    __slots__ = ("key", "dtype", "numel", "raw", "base", "view_offset")

    def __init__(self, key, dtype, numel, base=None, view_offset=0):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "numel", numel)
        object.__setattr__(self, "raw", None)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "view_offset", view_offset)

    def __setattr__(self, key, value):
        raise AttributeError("read-only")

    def set_raw(self, raw):
        object.__setattr__(self, "raw", raw)

    def bytes(self):
        """The storage's bytes as a 1-D uint8 array."""
        if self.base is not None:
            raw, size = self.base.bytes(), self.dtype.itemsize
            start, stop = self.view_offset * size, (self.view_offset + self.numel) * size
            if stop > raw.size:
                raise _corrupt(f"storage view {self.key!r} runs past the end of its storage")
            return raw[start:stop]
        if self.raw is None:
            raise _corrupt(f"data of storage {self.key!r} is missing")
        return self.raw

    def __repr__(self):
        return f"<storage {self.key!r} {self.dtype!r}>"


class _LazyTensor(_Marker):
    """A tensor whose storage bytes may not have been read yet (legacy files store them last)."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")
    __hash__ = None  # never let a placeholder hide in a dict key or a set

    def __init__(self, storage, offset, size, stride, dtype):
        for name, value in zip(self.__slots__, (storage, offset, size, stride, dtype)):
            object.__setattr__(self, name, value)

    def __setattr__(self, key, value):
        raise AttributeError("read-only")

    def __repr__(self):
        return f"<tensor {self.dtype!r} {tuple(self.size)}>"


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _corrupt(f"tensor {what} is not a tuple of ints: {value!r}")
    return tuple(value)


def _rebuild(storage, storage_offset, size, stride, dtype=None):
    if not isinstance(storage, _Storage):
        raise _corrupt(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, _DType):
        raise _corrupt(f"tensor dtype is {dtype!r}, expected a torch dtype")
    if not isinstance(storage_offset, int):
        raise _corrupt(f"tensor storage offset is {storage_offset!r}")
    return _LazyTensor(storage, storage_offset, _int_tuple(size, "size"),
                       _int_tuple(stride, "stride"), dtype)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    return _rebuild(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # A Parameter is just its data here; attributes set on it (state) are irrelevant.
    if not isinstance(data, _LazyTensor):
        raise _corrupt(f"parameter wraps {type(data).__name__}, expected a tensor")
    return data


class _Context:
    """Per-file settings for materializing tensors."""

    def __init__(self, big_endian, file_size):
        self.big_endian = big_endian
        # Zero or overlapping strides let a few stored bytes describe a huge tensor: cap the
        # total we create. Real checkpoints copy about their own size (views add a little).
        self.budget = 4 * file_size + (1 << 30)
        self.tensors = {}  # id(array) -> array, for the arrays that were tensors


def _materialize(t: _LazyTensor, ctx: _Context) -> np.ndarray:
    """Storage bytes + offset/size/stride -> C-contiguous native-endian numpy copy."""
    dt = t.dtype
    if dt.np is None:
        raise _Problem(f"tensor dtype torch.{dt.name} is not supported (numpy has no equivalent)")
    np_dt = dt.np.newbyteorder(">") if ctx.big_endian else dt.np
    size, stride, offset = t.size, t.stride, t.offset
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise _corrupt(f"invalid tensor geometry: size {size}, stride {stride}, offset {offset}")
    nbytes = int(np.prod(size, dtype=object)) * (4 if dt.bf16 else np_dt.itemsize)
    ctx.budget -= nbytes
    if ctx.budget < 0:
        raise _corrupt(f"tensor of size {size} (stride {stride}) expands to {nbytes} bytes, "
                       "far more than the file holds")
    if 0 in size:
        out = np.empty(size, dtype=np_dt)
    else:
        raw = t.storage.bytes()
        n = raw.size // np_dt.itemsize
        # Bounds check before as_strided: it would otherwise read outside the buffer.
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= n:
            raise _corrupt(f"tensor of size {size} (stride {stride}, offset {offset}) "
                           f"needs {last + 1} elements, storage {t.storage.key!r} has {n}")
        arr = raw[: n * np_dt.itemsize].view(np_dt)[offset:]
        view = np.lib.stride_tricks.as_strided(
            arr, shape=size, strides=tuple(s * np_dt.itemsize for s in stride), writeable=False)
        out = np.array(view, order="C", copy=True)
    if dt.bf16:
        # bfloat16 is the top half of a float32: widen by bit shift (exact).
        wide = out.astype(np.uint32)
        wide <<= 16  # in place, so 0-d arrays stay arrays
        return wide.view(np.float32)
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    return out


# --------------------------------------------------------------------------- numpy (e.g. RandomState)
# VideoPose3D-style training scripts also save 'random_state': RandomState.get_state(),
# a tuple holding a uint32 ndarray, so plain numeric numpy arrays and scalars are allowed.
# numpy's own __setstate__ is never called: dtype and array state are parsed here, and only
# simple numeric dtypes (no object, structured or datetime dtypes) are accepted.


class _NDArrayType(_Marker):
    __slots__ = ()

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NDArrayType()


class _NPDType(_Marker):
    """``numpy.dtype(spec, align, copy)`` followed by BUILD with its byte order."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, key, value):
        raise AttributeError("read-only")

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(x is not None for x in state[2:5]):
            raise _Problem("only plain numeric numpy dtypes are allowed")
        order = state[1]
        if order not in ("<", ">", "=", "|"):
            raise _corrupt(f"numpy dtype byte order {order!r}")
        if order in "<>":
            object.__setattr__(self, "dtype", self.dtype.newbyteorder(order))

    def __repr__(self):
        return f"numpy.dtype({self.dtype.str!r})"


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise _Problem(f"numpy dtype {spec!r} is refused: only plain numeric dtypes are allowed")
    try:
        dt = np.dtype(spec)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
        raise _Problem(f"numpy dtype {spec!r} is refused: only plain numeric dtypes are allowed")
    return _NPDType(dt)


class _NPArray(_Marker):
    """``numpy.core.multiarray._reconstruct(ndarray, ...)`` followed by BUILD with the data."""

    __slots__ = ("array",)

    def __init__(self):
        object.__setattr__(self, "array", None)

    def __setattr__(self, key, value):
        raise AttributeError("read-only")

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, rawdata); version 0 files omit the version.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise _corrupt("numpy array state is not (shape, dtype, is_fortran, data)")
        shape, dtype, is_fortran, data = state
        if not isinstance(dtype, _NPDType):
            raise _Problem("numpy array with a non-numeric dtype is refused")
        shape = _int_tuple(shape, "shape")
        if isinstance(data, str):  # Python 2 pickles decoded as latin1
            data = data.encode("latin1")
        if not isinstance(data, bytes) or any(n < 0 for n in shape):
            raise _Problem("numpy array data must be raw bytes (object arrays are refused)")
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize:
            raise _corrupt(f"numpy array of shape {shape} has {len(data)} bytes of data")
        arr = np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order="F" if is_fortran else "C")
        object.__setattr__(self, "array", arr.astype(arr.dtype.newbyteorder("=")))  # native copy

    def __repr__(self):
        return "<numpy array>"


def _np_reconstruct(subtype, shape, dtype_code):
    if subtype is not _NDARRAY:
        raise _Problem(f"numpy array of type {subtype!r} is refused")
    return _NPArray()


def _np_scalar(dtype, data):
    if not isinstance(dtype, _NPDType):
        raise _Problem(f"numpy scalar of dtype {dtype!r} is refused")
    if isinstance(data, str):  # Python 2 pickles decoded as latin1
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise _corrupt("numpy scalar data does not match its dtype")
    return np.frombuffer(data, dtype=dtype.dtype, count=1)[0]


def _codecs_encode(obj, encoding="utf-8"):
    # Protocol-2 pickles spell a bytes object as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _Problem("only _codecs.encode(str, 'latin1') (pickled bytes) is allowed")
    return obj.encode("latin1")


# --------------------------------------------------------------------------- unpickler

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("torch.storage", "UntypedStorage"): _STORAGE_TYPES["UntypedStorage"],
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _np_dtype,
}
for _mod in ("builtins", "__builtin__"):
    for _name, _obj in (("set", set), ("frozenset", frozenset), ("slice", slice), ("complex", complex)):
        _ALLOWED[(_mod, _name)] = _obj
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_mod, "scalar")] = _np_scalar
for _name, _st in _STORAGE_TYPES.items():
    _ALLOWED[("torch", _name)] = _st
    _ALLOWED[("torch.cuda", _name)] = _st  # very old files name the CUDA storage class
for _name, _dt in _TORCH_DTYPES.items():
    _ALLOWED[("torch", _name)] = _dt


class _Unpickler(pickle.Unpickler):
    """Unpickler that only resolves allow-listed globals; storages come from ``storages``."""

    def __init__(self, file, load_storage=None):
        # latin1: Python-2 str objects (old checkpoints) decode without error, and numpy
        # accepts latin1-decoded array data.
        super().__init__(file, encoding="latin1")
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            pass
        raise _Problem(f"refuses to load global {module}.{name}: "
                       "checkpoints must contain only tensors and plain data")

    def persistent_load(self, pid):
        if self._load_storage is None:
            raise _corrupt("unexpected persistent id outside the object pickle")
        if not isinstance(pid, tuple) or not pid:
            raise _corrupt(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise _Problem(f"unsupported persistent id type {kind!r} (whole pickled modules are "
                           "not supported; save model.state_dict())")
        return self._load_storage(pid[1:])


_MEMO_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
# A state dict nests 3-6 levels (checkpoint dict -> state dict -> tensor rebuild args -> size
# tuples); anything near this is hostile: the C unpickler, hashing and freeing recurse on the C
# stack, and a few hundred thousand levels crash the process.
MAX_PICKLE_DEPTH = 100
MAX_PICKLE_OPS = 20_000_000  # ~30 opcodes per tensor: far above any real checkpoint
MAX_PICKLE_BYTES = 256 << 20  # an object pickle (data.pkl) is kilobytes to a few megabytes


# opcodes that add items to the container below them on the stack (and push it back)
_FILL_OPS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})


class _DepthScan:
    """Nesting depth of the objects a pickle builds, from its opcodes alone (the stack effects
    pickletools documents): each value is tracked by the depth of the deepest container in it."""

    def __init__(self):
        self.stack: list = []   # depths, or None for a MARK
        self.memo: dict = {}

    def _pop_to_mark(self) -> list:
        out = []
        while self.stack and self.stack[-1] is not None:
            out.append(self.stack.pop())
        if self.stack:
            self.stack.pop()  # the mark
        return out

    def step(self, op, arg) -> int:
        """Applies one opcode; returns the depth of what it pushed (0: nothing)."""
        if op.name in _MEMO_PUT or op.name == "MEMOIZE":
            key = len(self.memo) if op.name == "MEMOIZE" else arg
            self.memo[key] = self.stack[-1] if self.stack and self.stack[-1] is not None else 1
            return 0
        if op.name in _MEMO_GET:
            d = self.memo.get(arg, 1)
            self.stack.append(d)
            return d
        popped: list = []
        before = list(op.stack_before)
        while before:
            item = before.pop()
            if item is pickletools.stackslice:
                continue  # with the markobject before it: everything down to the mark
            if item is pickletools.markobject:
                popped += self._pop_to_mark()
            elif self.stack:
                v = self.stack.pop()
                popped.append(1 if v is None else v)
        depth = 0
        for item in op.stack_after:
            if item is pickletools.markobject:
                self.stack.append(None)
                continue
            if op.name in _FILL_OPS and popped:
                # fills the container under the items in place: a 100k-item list appended in
                # batches of 1,000 is one level deeper than its items, not one per batch
                items = popped[:-1]
                depth = max(popped[-1], 1 + max(items)) if items else popped[-1]
            else:
                depth = 1 + max(popped) if popped else 1
            self.stack.append(depth)
        return depth


def _scan(stream) -> None:
    """The opcode pre-scan of one pickle from ``stream``'s position (raises _Problem)."""
    n_ops = 0
    scan = _DepthScan()
    for op, arg, pos in pickletools.genops(stream):
        n_ops += 1
        if n_ops > MAX_PICKLE_OPS:
            raise _corrupt(f"pickle has more than {MAX_PICKLE_OPS:,} opcodes")
        if op.name in _MEMO_OPS and not 0 <= int(arg) < n_ops:
            raise _corrupt(f"pickle memo index {arg} at byte {pos}")
        if op.name in ("NEXT_BUFFER", "READONLY_BUFFER"):  # out-of-band buffers: never written by torch
            raise _corrupt(f"unexpected pickle opcode {op.name} at byte {pos}")
        if scan.step(op, arg) > MAX_PICKLE_DEPTH:
            raise _Problem(f"objects nested more than {MAX_PICKLE_DEPTH} levels deep (at byte {pos})")


def scan_pickle(stream, what: str) -> None:
    """Checks a pickle before any unpickler sees it (other readers of untrusted pickles use it
    too): nesting depth, opcode count and memo indices bounded. Raises GastrtError naming
    ``what``."""
    try:
        _scan(stream)
    except _Problem as e:
        raise GastrtError(f"{what}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a malformed opcode stream
        raise GastrtError(f"{what}: malformed pickle ({type(e).__name__}: {e})") from None


def _unpickle(src, start, load_storage=None):
    """Unpickle the pickle at ``src[start:]`` (bytes or mmap) -> (object, end offset).

    The opcodes are scanned first (pure Python, bounded reads) because the C unpickler
    trusts the stream: a corrupt LONG_BINPUT index makes it allocate and zero a memo
    table of up to 2**32 entries, and length fields make it pre-allocate buffers.
    Scanning also tells where the pickle ends, so only its own bytes are copied.
    """
    stream = io.BytesIO(src) if isinstance(src, bytes) else src
    stream.seek(start)
    _scan(stream)
    end = stream.tell()
    obj = _Unpickler(io.BytesIO(src[start:end]), load_storage).load()
    return obj, end


def _check_storage_args(storage_type, key, numel):
    if not isinstance(storage_type, _StorageType):
        raise _corrupt(f"storage type is {storage_type!r}, expected a torch storage class")
    if isinstance(key, bytes):
        key = key.decode("ascii")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise _corrupt(f"invalid storage record key={key!r} numel={numel!r}")
    return key


# --------------------------------------------------------------------------- containers


def _zip_member(zf, name, limit, what):
    """A zip member read whole, after checking the size it declares: a small archive must not
    inflate to gigabytes. Read in 1 MiB steps: zipfile keeps to the declared size, but one
    ``read()`` would let zlib inflate a member whose header lies about its size all at once."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise _corrupt(f"{name} declares {info.file_size:,} bytes, more than {what} can hold ({limit:,})")
    # grown as the data arrives (never allocated from the declared size, which a 1 kB file can
    # set to gigabytes); zipfile stops at the declared size and checks the CRC at the end
    parts, got = [], 0
    with zf.open(name) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    if got != info.file_size:
        raise _corrupt(f"{name} ends after {got:,} of the {info.file_size:,} bytes it declares")
    return b"".join(parts)


def _zip_record(zf, buf, name, nbytes):
    """A zip member's bytes as a uint8 array; stored members are viewed in place (no copy).
    ``nbytes``: what the storage record says it holds; a member declaring more (beyond a page of
    slack) is refused before it is inflated."""
    info = zf.getinfo(name)
    if info.file_size > nbytes + 4096:
        raise _corrupt(f"{name} declares {info.file_size:,} bytes for a storage of {nbytes:,} bytes")
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
        start = info.header_offset
        if buf[start:start + 4] == b"PK\x03\x04":
            name_len, extra_len = struct.unpack_from("<HH", buf, start + 26)
            start += 30 + name_len + extra_len  # torch pads the extra field to align data
            if start + info.file_size <= len(buf):
                return np.frombuffer(buf, dtype=np.uint8, count=info.file_size, offset=start)
    return np.frombuffer(_zip_member(zf, name, nbytes + 4096, "its storage"), dtype=np.uint8)


def _read_zip(fh, buf):
    zf = zipfile.ZipFile(fh)
    names = zf.namelist()
    pkls = sorted((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), key=len)
    if not pkls:
        raise _Problem("zip archive has no data.pkl: not a torch.save file (TorchScript or other zip?)")
    prefix = pkls[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
        order = _zip_member(zf, prefix + "byteorder", 64, "a byteorder record").strip()
        if order not in (b"little", b"big"):
            raise _corrupt(f"unknown byteorder record {order[:20]!r}")
        big_endian = order == b"big"
    storages = {}

    def load_storage(args):
        if len(args) < 4:
            raise _corrupt(f"storage record has {len(args)} fields, expected 4")
        storage_type, key, _location, numel = args[:4]
        key = _check_storage_args(storage_type, key, numel)
        if key not in storages:
            try:
                raw = _zip_record(zf, buf, f"{prefix}data/{key}", numel * storage_type.dtype.itemsize)
            except KeyError:
                raise _corrupt(f"storage record {prefix}data/{key} is missing") from None
            st = _Storage(key, storage_type.dtype, numel)
            st.set_raw(raw)
            storages[key] = st
        return storages[key]

    obj, _ = _unpickle(_zip_member(zf, pkls[0], MAX_PICKLE_BYTES, "an object pickle"), 0, load_storage)
    return obj, big_endian


def _read_legacy(buf):
    magic, pos = _unpickle(buf, 0)
    if not isinstance(magic, int) or magic != _LEGACY_MAGIC:
        raise _Problem(_NOT_TORCH + "; a pickle without the torch magic number")
    version, pos = _unpickle(buf, pos)
    if version != _LEGACY_PROTOCOL:
        raise _Problem(f"legacy protocol version {version!r}, expected {_LEGACY_PROTOCOL}")
    sys_info, pos = _unpickle(buf, pos)
    if not isinstance(sys_info, dict):
        raise _corrupt("legacy sys_info record is not a dict")
    # Storage data in legacy files is always little-endian (torch converts on write),
    # whatever sys_info['little_endian'] says about the machine that wrote it.
    roots, views = {}, {}

    def load_storage(args):
        if len(args) < 4:
            raise _corrupt(f"storage record has {len(args)} fields, expected 5")
        storage_type, key, _location, numel = args[:4]
        view_metadata = args[4] if len(args) > 4 else None
        key = _check_storage_args(storage_type, key, numel)
        if key not in roots:
            roots[key] = _Storage(key, storage_type.dtype, numel)
        if view_metadata is None:
            return roots[key]
        # Pre-1.0 storage views: (view_key, element offset, element count) into the root.
        view_key, offset, size = view_metadata
        if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0 and size >= 0):
            raise _corrupt(f"invalid storage view {view_metadata!r}")
        if view_key not in views:
            views[view_key] = _Storage(view_key, storage_type.dtype, size, roots[key], offset)
        return views[view_key]

    obj, pos = _unpickle(buf, pos, load_storage)
    keys, pos = _unpickle(buf, pos)
    if not isinstance(keys, list):
        raise _corrupt("legacy storage key list is not a list")
    for key in keys:
        if isinstance(key, bytes):
            key = key.decode("ascii")
        st = roots.get(key)
        if st is None:
            raise _corrupt(f"storage {key!r} listed but never referenced")
        (count,) = struct.unpack_from("<q", buf, pos)
        pos += 8
        if count != st.numel:
            raise _corrupt(f"storage {key!r} holds {count} elements, expected {st.numel}")
        nbytes = count * st.dtype.itemsize
        if pos + nbytes > len(buf):
            raise _corrupt(f"storage {key!r} needs {nbytes} bytes, file ends after {len(buf) - pos}")
        st.set_raw(np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=pos))
        pos += nbytes
    return obj, False


def _resolve(obj, ctx, memo):
    """Replace tensor placeholders by numpy arrays throughout containers (in place where mutable)."""
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if isinstance(obj, _LazyTensor):
        out = _materialize(obj, ctx)
        ctx.tensors[id(out)] = out  # holding the array keeps its id unique
    elif isinstance(obj, _Storage):
        # A storage saved on its own: its elements as a 1-D array.
        out = _materialize(_LazyTensor(obj, 0, (obj.bytes().size // obj.dtype.itemsize,), (1,),
                                       obj.dtype), ctx)
    elif isinstance(obj, dict):
        memo[oid] = obj
        for k in list(obj):
            obj[k] = _resolve(obj[k], ctx, memo)
        if isinstance(obj, collections.OrderedDict):  # attributes set by BUILD, e.g. _metadata
            for k, v in list(vars(obj).items()):
                setattr(obj, k, _resolve(v, ctx, memo))
        return obj
    elif isinstance(obj, list):
        memo[oid] = obj
        obj[:] = [_resolve(v, ctx, memo) for v in obj]
        return obj
    elif isinstance(obj, tuple):
        memo[oid] = obj  # guards against cycles through a tuple
        out = tuple(_resolve(v, ctx, memo) for v in obj)
        if all(a is b for a, b in zip(out, obj)):
            out = obj
    elif isinstance(obj, _NPArray):
        if obj.array is None:
            raise _corrupt("numpy array without data")
        out = obj.array
    elif isinstance(obj, _NPDType):
        out = obj.dtype
    else:
        return obj
    memo[oid] = out
    return out


def _read(path):
    """-> (object, 'zip'|'legacy', {id(array): array} for the arrays that were tensors)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file (expected a PyTorch checkpoint)")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a PyTorch checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not a regular file, expected a PyTorch checkpoint file")
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise CheckpointError(f"{path}: empty file, {_NOT_TORCH}")
            # mmap: storages are viewed in place and copied once, straight into the result.
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            if buf[:4] == b"PK\x03\x04":
                fmt = "zip"
            elif buf[:1] == b"\x80":  # pickle PROTO opcode: torch pickles with protocol >= 2
                fmt = "legacy"
            else:
                raise CheckpointError(f"{path}: {_NOT_TORCH}")
            try:
                obj, big_endian = _read_zip(fh, buf) if fmt == "zip" else _read_legacy(buf)
                ctx = _Context(big_endian, len(buf))
                obj = _resolve(obj, ctx, {})
            except _Problem as e:
                raise CheckpointError(f"{path}: {e}") from None
            except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes is corruption
                raise CheckpointError(
                    f"{path}: truncated or corrupted torch checkpoint ({type(e).__name__}: {e})"
                ) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    return obj, fmt, ctx.tensors


def read_torch_file(path) -> object:
    """Unpickle a torch.save file safely; every tensor becomes a C-contiguous numpy array."""
    return _read(path)[0]


def load_state_dicts(path):
    """Load a model checkpoint -> (model_pos, model_traj or None, info).

    Accepts a training checkpoint dict (``model_pos`` and optional ``model_traj``)
    or a bare state dict. Non-tensor entries are dropped and DataParallel
    ``module.`` prefixes are stripped.
    """
    obj, fmt, tensors = _read(path)

    def is_tensor(v):
        return tensors.get(id(v)) is v

    path = os.fspath(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict (training checkpoint or state_dict), "
                              f"found {type(obj).__name__}")

    def state_dict(d, what):
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{path}: {what} is a {type(d).__name__}, expected a state_dict")
        out = {}
        for k, v in d.items():
            if not is_tensor(v):
                continue
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: {what} has a non-string key {k!r}")
            name = k[len("module."):] if k.startswith("module.") else k
            if name in out:
                raise CheckpointError(f"{path}: {what} has {name!r} both with and without 'module.'")
            out[name] = v
        if not out:
            raise CheckpointError(f"{path}: {what} contains no tensors")
        return out

    keys = list(obj.keys())
    if "model_pos" in obj:
        model_pos = state_dict(obj["model_pos"], "'model_pos'")
        traj = obj.get("model_traj")
        model_traj = None if traj is None else state_dict(traj, "'model_traj'")
    elif any(is_tensor(v) for v in obj.values()):
        model_pos, model_traj = state_dict(obj, "state_dict"), None
    else:
        raise CheckpointError(f"{path}: no 'model_pos' state dict and no tensors at top level "
                              f"(keys: {[str(k) for k in keys][:20]})")
    info = {"format": fmt, "epoch": obj.get("epoch"), "keys": keys}
    return model_pos, model_traj, info
