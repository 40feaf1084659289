"""Corpus inputs: files, folders (recursive), globs and CSV/Parquet manifests -> ``CorpusItem``s
with a unique output name each, plus the fingerprints resuming compares. No ray here."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import GastrtError

# what `gastrt lift` reads (keypoints/formats.py); everything else in a folder is ignored
KEYPOINT_EXTS = (".json", ".npz", ".npy")
MANIFEST_EXTS = (".csv", ".parquet")
_OPENPOSE_FRAME = re.compile(r"_keypoints\.json$", re.IGNORECASE)


@dataclass
class CorpusItem:
    """One unit of work (a video). path: as given/derived (recorded in the output's metadata,
    like `gastrt lift`); rel: the name under out_dir the output is derived from; size: (w, h)
    from a manifest, or None (the per-file option / the file's own); error: why it cannot even
    be listed (a missing path, a glob matching nothing)."""
    path: str
    rel: str
    size: tuple[int, int] | None = None
    error: str | None = None


def is_openpose_dir(d: str) -> bool:
    """An OpenPose --write_json folder is ONE video: it holds *_keypoints.json frames only."""
    try:
        names = [n for n in os.listdir(d) if not n.startswith(".")]
    except OSError:
        return False
    js = [n for n in names if n.lower().endswith(".json")]
    return bool(js) and all(_OPENPOSE_FRAME.search(n) for n in js) and \
        not any(os.path.isdir(os.path.join(d, n)) for n in names)


def _under(path: str, folder: str | None) -> bool:
    if folder is None:
        return False
    a, b = os.path.abspath(path), os.path.abspath(folder)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _walk(root: str, exclude: str | None) -> list[str]:
    """Keypoint files / OpenPose folders under root, sorted, relative to root."""
    if is_openpose_dir(root):
        return ["."]
    out = []
    for d, dirs, files in os.walk(root, followlinks=False):
        if _under(d, exclude):
            dirs[:] = []
            continue
        dirs.sort()
        keep = []
        for sub in dirs:
            full = os.path.join(d, sub)
            if sub.startswith(".") or _under(full, exclude):
                continue
            if is_openpose_dir(full):
                out.append(os.path.relpath(full, root))
            else:
                keep.append(sub)
        dirs[:] = keep
        for f in sorted(files):
            # hidden files include the atomic writers' temp files ('.<name>.<random>.tmp')
            if not f.startswith(".") and f.lower().endswith(KEYPOINT_EXTS):
                out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def _glob_base(pattern: str) -> str:
    parts = pattern.split(os.sep)
    base = []
    for p in parts:
        if glob.has_magic(p):
            break
        base.append(p)
    return os.sep.join(base) or "."


def read_manifest(path: str) -> list[CorpusItem]:
    """CSV / Parquet with columns path [, width, height]; relative paths are relative to the
    manifest's folder. Empty width/height = the file's own size (or --size)."""
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.lower().endswith(".parquet") else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001  (any parse failure is the user's file)
        raise GastrtError(f"{path}: not a readable input manifest ({type(e).__name__}: {e})") from None
    return manifest_items(df, os.path.dirname(path), path)


def manifest_items(df: Any, base: str = "", source: str = "inputs") -> list[CorpusItem]:
    """Rows of a DataFrame (path [, width, height]) -> CorpusItems; paths relative to base."""
    import pandas as pd

    if "path" not in df.columns:
        raise GastrtError(f"{source}: an input manifest needs a 'path' column (and optional width, height); "
                          f"found {', '.join(map(str, df.columns)) or 'none'}")
    if ("width" in df.columns) != ("height" in df.columns):
        raise GastrtError(f"{source}: give both 'width' and 'height' columns, or neither")
    has_wh = "width" in df.columns
    items = []
    for i, row in enumerate(df.to_dict("records")):
        p = str(row["path"])
        full = p if os.path.isabs(p) or not base else os.path.join(base, p)
        size = None
        if has_wh:
            w, h = row["width"], row["height"]
            if not (pd.isna(w) and pd.isna(h)):
                try:
                    size = (int(w), int(h))
                    ok = size[0] > 0 and size[1] > 0 and float(w) == size[0] and float(h) == size[1]
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise GastrtError(f"{source}: row {i + 1}: width/height must be positive integers, "
                                      f"got {w!r}, {h!r}")
        rel = os.path.relpath(full, base or ".") if _under(full, base or ".") else os.path.basename(full)
        items.append(CorpusItem(full, rel, size))
    return items


def expand_inputs(inputs: Any, exclude: str | None = None) -> list[CorpusItem]:
    """inputs: a path / glob / manifest (.csv, .parquet), a list of them, or a DataFrame with
    a 'path' column. Folders are walked recursively; out_dir (``exclude``) is never read."""
    if hasattr(inputs, "columns") and hasattr(inputs, "to_dict"):   # a pandas DataFrame
        return manifest_items(inputs)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items: list[CorpusItem] = []
    for spec in inputs:
        spec = os.fspath(spec)
        if os.path.isfile(spec) and spec.lower().endswith(MANIFEST_EXTS):
            items.extend(read_manifest(spec))
        elif os.path.isdir(spec):
            found = _walk(spec, exclude)
            if found == ["."]:
                items.append(CorpusItem(spec, os.path.basename(os.path.normpath(spec))))
            for rel in found if found != ["."] else []:
                items.append(CorpusItem(os.path.join(spec, rel), rel))
        elif glob.has_magic(spec):
            base = _glob_base(spec)
            hits = sorted(h for h in glob.glob(spec, recursive=True)
                          if not _under(h, exclude) and (os.path.isfile(h) or is_openpose_dir(h)))
            if not hits:
                items.append(CorpusItem(spec, spec, error=f"{spec}: no file matches"))
            for h in hits:
                items.append(CorpusItem(h, os.path.relpath(h, base)))
        else:   # a file (or a missing path: the lift reports it, one row)
            items.append(CorpusItem(spec, os.path.basename(os.path.normpath(spec)) or spec))
    return items


def output_names(items: list[CorpusItem], ext: str = ".npz") -> list[str]:
    """rel 'sub/a.json' -> 'sub/a_3d.npz' (`gastrt lift`'s default name, keeping folders); two
    inputs that would share a name keep their extension ('a.json_3d.npz'), then get a counter."""
    def clean(rel: str) -> str:
        parts = [p for p in os.path.normpath(rel).split(os.sep) if p not in ("", ".", "..")]
        return os.sep.join(parts) or "keypoints"

    base = [os.path.splitext(clean(it.rel))[0] for it in items]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    names = [(clean(it.rel) if counts[b] > 1 else b) for it, b in zip(items, base)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(f"{n}{'' if k == 0 else f'.{k}'}_3d{ext}")
    return out


def input_stat(path: str) -> tuple[int, int]:
    """(bytes, newest mtime_ns) of a file, or of an OpenPose folder's frames; (-1, -1) if gone."""
    try:
        if os.path.isdir(path):
            sizes, mtimes = [0], [os.stat(path).st_mtime_ns]
            for n in os.listdir(path):
                st = os.stat(os.path.join(path, n))
                sizes.append(st.st_size)
                mtimes.append(st.st_mtime_ns)
            return sum(sizes), max(mtimes)
        st = os.stat(path)
        return int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        return -1, -1



def fingerprint(engine_sha: str, opts: dict, size: Iterable[int] | None, stat: tuple[int, int]) -> str:
    """What an output depends on: the engine's bytes, the per-file options, the input's size
    and mtime. A re-run skips an input whose recorded fingerprint and output are unchanged."""
    doc = {"engine": engine_sha, "opts": opts, "size": None if size is None else list(size),
           "input": list(stat)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]
