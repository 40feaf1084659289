"""Read the dataset npz files VideoPose3D's data preparation writes, without running pickle code.

``np.savez_compressed(path, positions_3d=dict)`` stores the dict as a 0-d object array, i.e. a
pickle. The files come from elsewhere, so the pickle goes through an unpickler that can only
rebuild NumPy arrays, dtypes, NumPy scalars and plain containers (dict / list / tuple / str /
bytes / int / float / bool / None); any other global is refused before it is imported. Memory
is bounded by the member's declared uncompressed size, checked before reading.
"""
from __future__ import annotations

import pickle
import zipfile

import numpy as np

from ..checkpoint import scan_pickle
from ..errors import GastrtError
from ..keypoints.formats import ZIP_ERRORS

# The largest real member (data_2d_h36m_cpn_ft_h36m_dbb.npz / positions_2d) is ~0.5 GB uncompressed.
MAX_MEMBER_BYTES = 4 << 30
_MAX_DEPTH = 16


def _refuse(*_args, **_kwargs):
    raise pickle.UnpicklingError("numpy.ndarray may only be rebuilt through _reconstruct")


def _checked_reconstruct(subtype, shape, dtype_code):
    # np.save pickles arrays as _reconstruct(ndarray, (0,), b'b') + __setstate__(raw bytes), and
    # __setstate__ checks the bytes against shape and dtype: so an empty shell is all we build here
    if subtype is not _refuse or tuple(shape) != (0,):
        raise pickle.UnpicklingError("unexpected arguments to numpy _reconstruct")
    return np.ndarray((0,), dtype=np.uint8)


def _latin1_encode(text, encoding="latin1"):
    # protocol-2 pickles (older NumPy) carry bytes as _codecs.encode(str, 'latin1')
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({encoding!r})")
    return text.encode("latin1")


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy scalar of an object dtype")
    return np.ndarray.__new__(np.ndarray, (), dtype, data)[()]


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _refuse,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only arrays and plain data; every other global raises UnpicklingError."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the file may only hold "
                                         "arrays and plain data") from None


def _check_plain(obj, where: str, depth: int = 0) -> None:
    """Plain data only, all the way down (an object array's items included)."""
    if depth > _MAX_DEPTH:
        raise GastrtError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (str, bytes, bool, int, float, np.generic)):
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for item in obj.ravel():
                _check_plain(item, where, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, where, depth + 1)
        return
    raise GastrtError(f"{where}: unexpected {type(obj).__name__} (only arrays and plain data)")


def _read_member(z: zipfile.ZipFile, path: str, key: str, max_bytes: int):
    info = z.getinfo(key + ".npy")
    if info.file_size > max_bytes:
        raise GastrtError(f"{path}: '{key}' is {info.file_size:,} bytes uncompressed, more than the "
                          f"{max_bytes:,} allowed")
    def header(f):
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)

    with z.open(info) as f:
        shape, fortran, dtype = header(f)
        if not dtype.hasobject:
            return _read_plain(f, shape, fortran, dtype, path, key)
        scan_pickle(f, f"{path}: '{key}'")  # depth / size bounds before the C unpickler recurses
    with z.open(info) as f:
        header(f)
        obj = RestrictedUnpickler(f).load()
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj[()]
    return obj


def _read_plain(f, shape, fortran, dtype, path, key) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise GastrtError(f"{path}: '{key}' is truncated")
    a = np.frombuffer(raw, dtype=dtype, count=count)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


def read_npz(path: str, keys, optional=(), max_bytes: int = MAX_MEMBER_BYTES) -> dict:
    """{key: object} for ``keys`` (required) and ``optional`` members of an npz, pickled members
    read through :class:`RestrictedUnpickler`. Raises GastrtError naming the file and key."""
    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise GastrtError(f"{path}: no such file") from None
    except (ValueError, *ZIP_ERRORS) as e:
        raise GastrtError(f"{path}: not an npz file ({e})") from None
    out = {}
    with z:
        names = set(z.namelist())
        for key in list(keys) + list(optional):
            if key + ".npy" not in names:
                if key in optional:
                    continue
                have = ", ".join(sorted(n[:-4] for n in names if n.endswith(".npy"))) or "none"
                raise GastrtError(f"{path}: no '{key}' array (has: {have})")
            try:
                obj = _read_member(z, path, key, max_bytes)
            except GastrtError:
                raise
            except Exception as e:  # a corrupt or hostile file can raise nearly anything
                raise GastrtError(f"{path}: '{key}' is not readable ({type(e).__name__}: {e})") from None
            _check_plain(obj, f"{path}: {key}")
            out[key] = obj
    return out
