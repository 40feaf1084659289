"""The `.gastrt` engine file: the safetensors layout (u64 header length, JSON header, raw
little-endian tensors), so any safetensors reader can open it; gastrt's metadata lives in
`__metadata__["gastrt"]` as a JSON string. No pickle anywhere; read whole on load (no file
descriptor stays open); a SHA-256 over the data and one over the header (tensor table and
metadata, plans included) catch truncation and any changed byte with a clear error."""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import stat
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import EngineFileError, GastrtError
from .plan import Plan, flops_per_frame, infer_shapes

FORMAT_NAME = "gastrt-engine"
# 2: tensors ordered by element size (fp32 first), so every offset is a multiple of its element
# size with no holes (safetensors' rule); content_sha256 covers the header (tensor table and
# metadata, plans included) and the data, so no byte of the file goes unchecked.
FORMAT_VERSION = 2
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_MAX_HEADER = 64 << 20


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """fp32 -> bfloat16 bit pattern (round to nearest even), as uint16. NaN stays NaN (quiet, sign
    kept), as __float2bfloat16_rn does: the rounding add would carry a NaN's mantissa into inf or
    -0."""
    f = np.ascontiguousarray(a, dtype=np.float32)
    b = f.view(np.uint32)
    rounded = b + (np.uint32(0x7FFF) + ((b >> 16) & 1))
    out = (rounded >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        out[nan] = ((b[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def from_bf16_bits(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.uint32) << 16).view(np.float32)


# Engine precisions: how the weights are stored (and, on the GPU, computed).
PRECISIONS = ("fp32", "fp16", "bf16")
# What each engine precision promises against the fp32 reference, as max |y - y_ref| / max |y_ref|
# over a batch of outputs (fp16 / bf16 engines store 16-bit weights; `build --precision auto` and
# the parity tests hold them to this).
PRECISION_TOLERANCE = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 1e-2}


def check_precision(precision) -> str:
    """``precision`` if it is one of PRECISIONS, else one clear GastrtError."""
    if precision not in PRECISIONS:
        raise GastrtError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def cast_weight(a: np.ndarray, precision: str) -> tuple[str, np.ndarray]:
    check_precision(precision)
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    if precision == "fp32":
        return "F32", a32
    if precision == "fp16":
        return "F16", a32.astype(np.float16)
    return "BF16", to_bf16_bits(a32)


# An atomic writer's temp file sits next to its destination as '.<name>.<random><suffix>' (hidden,
# so a crash that leaves one behind leaves no visible debris); tests find leftovers by this prefix.
TEMP_PREFIX = "."


def temp_prefix(path: str) -> str:
    """Name prefix of the temp file an atomic writer (atomic_write, render) writes ``path`` through."""
    return TEMP_PREFIX + os.path.basename(path) + "."


def check_output_path(path: str, inputs=()) -> None:
    """An output may replace a regular file, never an input of the same command (``inputs``:
    their paths) and never something else (a device node, a FIFO, a directory)."""
    if not os.path.lexists(path):  # an input of the same name that is missing too: still refused
        for i in inputs:
            if os.path.abspath(i) == os.path.abspath(path):
                raise GastrtError(f"{path}: is the input {i}; refusing to overwrite an input "
                                  "(choose another output path)")
        return
    if os.path.isdir(path):
        raise GastrtError(f"{path}: is a directory, expected an output file path")
    if not os.path.isfile(path):
        raise GastrtError(f"{path}: exists and is not a regular file (a device, FIFO or socket): "
                          "refusing to replace it; choose another output path")
    for i in inputs:
        try:
            same = os.path.samefile(path, i)
        except OSError:  # the input is gone / unreadable: not the same file
            same = False
        if same:
            raise GastrtError(f"{path}: is the input {i}; refusing to overwrite an input "
                              "(choose another output path)")


def atomic_write(path: str, write_fn, inputs=()) -> None:
    """Write through a temp file in the destination folder, then rename: never a partial file.
    ``write_fn(f)`` gets a binary file. The result has the usual umask permissions (mkstemp's
    are 0600). ``inputs``: files the output must not replace (check_output_path). A failure to
    write (full disk, no permission) is a GastrtError naming the path."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise GastrtError(f"{path}: output directory {d} does not exist")
    check_output_path(path, inputs)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=d)
    except OSError as e:
        raise GastrtError(f"{path}: cannot write here ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise GastrtError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def write_engine(path: str, meta: dict, tensors: dict[str, tuple[str, np.ndarray]], inputs=()) -> None:
    """tensors: name -> (safetensors dtype, array already in that dtype); ``inputs``: files the
    engine must not replace (the checkpoint)."""
    header: dict = {}
    off = 0
    blobs = []
    h = hashlib.sha256()
    for name in sorted(tensors, key=lambda n: (-np.dtype(_DTYPES[tensors[n][0]]).itemsize, n)):
        dt, a = tensors[name]
        raw = np.ascontiguousarray(a).astype(np.dtype(_DTYPES[dt]).newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
        h.update(raw)
    meta = dict(meta, format=FORMAT_NAME, format_version=FORMAT_VERSION, data_sha256=h.hexdigest(),
                data_bytes=off)
    meta["content_sha256"] = _content_sha256(header, meta, h)
    header["__metadata__"] = {"gastrt": json.dumps(meta, sort_keys=True)}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-(len(hb) + 8) % 8)

    def write(f):
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)

    atomic_write(path, write, inputs)


def _content_sha256(table: dict, meta: dict, data_hash) -> str:
    """One hash over everything a reader acts on: the tensor table, the metadata (plans, flip
    joints, causal ...) except this field, and the data's own hash."""
    h = hashlib.sha256()
    h.update(json.dumps({"tensors": table, "meta": {k: v for k, v in meta.items() if k != "content_sha256"}},
                        sort_keys=True, separators=(",", ":")).encode())
    h.update(data_hash.digest())
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_checked(path: str, expected: str, min_size: int, too_short: str, regular: bool = False):
    """The file opened for reading; a missing file, a directory, a non-regular file (when
    ``regular``) or one shorter than ``min_size`` bytes -> EngineFileError naming the path
    (``expected``: what it should be)."""
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise EngineFileError(f"{path}: is a directory, expected {expected}") from None
    except OSError as e:
        raise EngineFileError(f"{path}: cannot open ({e.strerror})") from None
    st = os.fstat(f.fileno())
    if regular and not stat.S_ISREG(st.st_mode):
        f.close()
        raise EngineFileError(f"{path}: not a regular file, expected {expected}")
    if st.st_size < min_size:
        f.close()
        raise EngineFileError(f"{path}: {too_short}")
    return f


def map_readonly(path: str, expected: str, min_size: int, too_short: str) -> mmap.mmap:
    """Memory-map a file read-only (errors as _open_checked)."""
    with _open_checked(path, expected, min_size, too_short) as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _read_whole(path: str, expected: str, min_size: int, too_short: str) -> bytes:
    """The file's bytes (read, then closed: a loaded engine holds no file descriptor)."""
    with _open_checked(path, expected, min_size, too_short, regular=True) as f:
        try:
            return f.read()
        except OSError as e:
            raise EngineFileError(f"{path}: cannot read ({e.strerror})") from None


# What reading hostile metadata raises (check_metadata, Plan.from_json): callers turn it into one
# EngineFileError.
METADATA_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, ZeroDivisionError,
                   RecursionError)


def read_engine(path: str, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """-> (metadata, name -> array in its stored dtype; bf16 as uint16 bits), read-only views of
    the file's bytes. Any damage is an EngineFileError naming the file."""
    try:
        return _read_engine(path, verify)
    except EngineFileError:
        raise
    except (*METADATA_ERRORS, struct.error) as e:
        raise EngineFileError(f"{path}: corrupted engine file ({type(e).__name__}: {str(e)[:160]})") from None


def _read_engine(path: str, verify: bool) -> tuple[dict, dict[str, np.ndarray]]:
    def bad(why: str) -> EngineFileError:
        return EngineFileError(f"{path}: {why}")

    mm = _read_whole(path, "a .gastrt engine file", 8,
                     "not a gastrt engine (file too short; expected a .gastrt file written by `gastrt build`)")
    size = len(mm)
    (hlen,) = struct.unpack("<Q", mm[:8])
    if hlen > min(size - 8, _MAX_HEADER):
        raise bad("not a gastrt engine or truncated (header length out of range)")
    if (8 + hlen) % 8:   # gastrt pads the header so every tensor starts 8-byte aligned in the map
        raise bad(f"corrupted: header length {hlen} leaves the data unaligned (gastrt writes a multiple of 8 "
                  "bytes before the data)")
    try:
        header = json.loads(bytes(mm[8:8 + hlen]))
        meta = json.loads(header.pop("__metadata__")["gastrt"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):  # (deep nesting)
        raise bad("not a gastrt engine (no gastrt metadata in the header)") from None
    if meta.get("format") != FORMAT_NAME:
        raise bad("not a gastrt engine (format tag missing)")
    ver = meta.get("format_version")
    if not isinstance(ver, int) or ver > FORMAT_VERSION:
        raise bad(f"engine format version {ver} is newer than this gastrt reads ({FORMAT_VERSION}); "
                  "upgrade gastrt or rebuild the engine")
    if ver < FORMAT_VERSION:
        raise bad(f"engine format version {ver} was written by an older gastrt without a checksum over "
                  "its header: rebuild it with `gastrt build`")
    base = 8 + hlen
    data_bytes = meta.get("data_bytes")
    if not isinstance(data_bytes, int) or size != base + data_bytes:
        raise bad(f"truncated or corrupted ({size} bytes, expected {base} + data_bytes {data_bytes!r})")
    if verify:
        dh = hashlib.sha256(memoryview(mm)[base:])
        if dh.hexdigest() != meta.get("data_sha256"):
            raise bad("corrupted: weight checksum mismatch")
        if _content_sha256(header, meta, dh) != meta.get("content_sha256"):
            raise bad("corrupted: header checksum mismatch (the tensor table or the metadata was changed)")
    tensors = {}
    for name, info in header.items():
        try:
            dt = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            b, e = (int(v) for v in info["data_offsets"])
            shape = tuple(int(s) for s in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"corrupted header entry {str(name)[:80]!r}") from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if any(s < 0 for s in shape) or not 0 <= b <= e <= data_bytes or e - b != count * dt.itemsize:
            raise bad(f"corrupted header entry {str(name)[:80]!r} (offsets {b}..{e} do not hold shape {shape})")
        if b % dt.itemsize:  # the native kernels read whole elements
            raise bad(f"corrupted header entry {str(name)[:80]!r} (offset {b} not a multiple of {dt.itemsize})")
        tensors[name] = np.frombuffer(mm, dtype=dt, count=count, offset=base + b).reshape(shape)
    return meta, tensors


def weights_as_float32(tensors: dict, dtypes: dict | None = None) -> dict[str, np.ndarray]:
    out = {}
    for name, a in tensors.items():
        if a.dtype == np.uint16:
            out[name] = from_bf16_bits(a)
        else:
            out[name] = np.ascontiguousarray(a, dtype=np.float32)
    return out


@dataclass(frozen=True)
class EngineModel:
    """An engine file's contents, backend-free: what exporters and builders take (an Engine has
    the same attributes). plans: name -> Plan; weights: name -> float32 array."""
    metadata: dict
    plans: dict
    weights: Mapping

    @property
    def family(self) -> str:
        return self.metadata["family"]

    @property
    def precision(self) -> str:
        return self.metadata.get("precision", "fp32")


def read_model(path: str, verify: bool = True) -> EngineModel:
    """Read a `.gastrt` file into metadata, plans and float32 weights, checking that every weight
    a plan names is present."""
    meta, tensors = read_engine(path, verify=verify)
    try:
        plans = {name: Plan.from_json(p) for name, p in meta["plans"].items()}
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise EngineFileError(f"{path}: corrupted engine metadata ({type(e).__name__}: {str(e)[:160]})") from None
    missing = [n for p in plans.values() for n in p.weight_names() if n not in tensors]
    if missing:
        raise EngineFileError(f"{path}: corrupted engine (weight {missing[0]!r} missing)")
    try:
        check_metadata(meta, plans, {n: a.shape for n, a in tensors.items()})
    except METADATA_ERRORS as e:
        # a file that passed the checksums (verify=False, or crafted with valid hashes): still one error type
        raise EngineFileError(f"{path}: corrupted engine metadata ({type(e).__name__}: {str(e)[:160]})") from None
    precision = meta.get("precision", "fp32")
    stored = {"fp16": np.float16, "bf16": np.uint16}.get(precision)
    if stored is not None:   # the native runtime streams a 16-bit engine's weights as 16-bit values
        odd = [n for p in plans.values() for n in p.weight_names() if tensors[n].dtype != stored]
        if odd:
            raise EngineFileError(f"{path}: corrupted engine (a {precision} engine stores {precision} weights; "
                                  f"{odd[0]!r} is {tensors[odd[0]].dtype})")
    return EngineModel(meta, plans, weights_as_float32(tensors))


def _int(meta: dict, key: str, lo: int, hi: int = 1 << 31, default=None) -> int:
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key} = {str(v)[:40]} (expected an integer in {lo}..{hi})")
    return v


def check_metadata(meta: dict, plans: dict, shapes: dict) -> None:
    """What the runtime and `gastrt info` read from the metadata has the types and ranges they
    assume, and every plan's shapes and FLOPs can be derived: raises ValueError / TypeError /
    KeyError otherwise (read_model turns them into EngineFileError)."""

    if not isinstance(meta.get("family"), str) or not isinstance(meta.get("hyper"), dict):
        raise ValueError("family / hyper have the wrong type")
    hyper = meta["hyper"]
    if not isinstance(hyper.get("filter_widths"), list) or not isinstance(hyper.get("channels"), int):
        raise ValueError("hyper lacks filter_widths / channels")
    rf = _int(meta, "receptive_field", 1, 1 << 20)
    pad = _int(meta, "pad", 0, rf)
    _int(meta, "causal_shift", 0, pad, default=0)
    n_in = _int(meta, "num_joints", 1, 4096)
    n_out = _int(meta, "num_joints_out", 1, 4096, default=n_in)
    _int(meta, "parameter_count", 0, 1 << 40, default=0)
    if not isinstance(meta.get("causal"), bool) or meta.get("precision", "fp32") not in PRECISIONS:
        raise ValueError("causal / precision have the wrong type")
    for key in ("source_name", "source_sha256", "gastrt_version"):
        if not isinstance(meta.get(key, ""), str):
            raise ValueError(f"{key} is not a string")
    for (lk, rk), n in ((("joints_left", "joints_right"), n_out), (("kps_left", "kps_right"), n_in)):
        left, right = meta.get(lk, []), meta.get(rk, [])
        ok = isinstance(left, list) and isinstance(right, list) and len(left) == len(right)
        both = (left or []) + (right or []) if ok else []
        if not ok or any(isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < n for j in both) \
                or len(set(both)) != len(both):
            raise ValueError(f"{lk} / {rk} are not two equally long lists of distinct joints below {n}")
    if "pos" not in plans:
        raise KeyError("pos")
    pos = plans["pos"]
    if pos.receptive_field != rf or pos.in_joints != n_in or pos.out_joints != n_out:
        raise ValueError("the 'pos' plan disagrees with the metadata's receptive field / joints")
    for plan in plans.values():
        if not 1 <= plan.in_joints <= 4096 or not 1 <= plan.in_features <= 16 or plan.receptive_field < 1:
            raise ValueError(f"plan {plan.name!r} has impossible sizes")
        infer_shapes(plan, (1, plan.receptive_field, plan.in_joints, plan.in_features), shapes.__getitem__, "window")
        for mode in plan.modes:
            flops_per_frame(plan, shapes.__getitem__, mode, seq_len=8)
