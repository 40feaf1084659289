"""``lift_corpus``: lift a whole corpus of keypoint files on Ray Data.

    dataset of paths -> read + prepare (CPU tasks: ``read_keypoints`` + ``prepare_keypoints``)
    -> ``map_batches`` on an actor pool (``LiftWorker``: loads the engine once, ``lift_keypoints``,
    ``save_result``: the same code and the same file as ``gastrt lift``) -> manifest rows,
    collected on the driver into ``OUT_DIR/manifest.parquet``.

A video (one input) is the unit of work; the engine's ``lift_sequence`` chunks long ones exactly
as in-process. A failing input becomes an error row (the CLI's one-line text), never a failed
job. Resuming: the manifest records a fingerprint per input (engine bytes, options, input size
and mtime) and the output's size; a re-run skips inputs whose row is ok, whose fingerprint is
unchanged and whose output is still there with that size. The manifest is rewritten (atomically)
every ``flush_s`` seconds while the job runs, so a killed job resumes from its last flush.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from ..engine import load
from ..engine_file import atomic_write, check_output_path, file_sha256
from ..errors import GastrtError
from ..keypoints import FORMATS, camera_to_world, parse_size, rebase_height
from ..lifting import LiftResult, LiftWarning, lift_file, lift_keypoints, resolve_max_gap, save_result
from .inputs import expand_inputs, fingerprint, input_stat, output_names

MANIFEST_NAME = "manifest.parquet"
# the manifest's columns, in order (one row per input)
COLUMNS = ("input", "output", "status", "error", "persons", "frames", "seconds", "warnings",
           "input_bytes", "input_mtime_ns", "output_bytes", "fingerprint")
RAY_HINT = "pip install 'gastrt[ray]'"


def require_ray(what: str = "this command", parts: tuple = ("ray.data", "pandas", "pyarrow")) -> Any:
    """import ray and ``parts`` (submodules / companions), or one clear GastrtError naming the
    extra. -> the ray module"""
    import importlib

    try:
        for name in parts:
            importlib.import_module(name)
        import ray
    except ImportError:
        raise GastrtError(f"{what} needs the ray extra: {RAY_HINT}") from None
    return ray


def init_ray(ray: Any, address: str | None) -> None:
    """Connect to ``address`` ('auto', 'ray://host:10001', host:port), else to RAY_ADDRESS's
    cluster, else start a local Ray (no dashboard: it only costs start-up time here)."""
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        ray.init(include_dashboard=False)


def error_text(e: BaseException) -> str:
    """The one line `gastrt` prints after 'gastrt: error:' (cli.main), for any exception."""
    msg = str(e) or e.__class__.__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    if not isinstance(e, (ValueError, OSError)):   # not a user error: say what broke
        msg = f"{e.__class__.__name__}: {msg}"
    return " ".join(msg.split())


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# --- stage 1: read + prepare (Ray Data CPU tasks) ------------------------------------------------

class ShapeOnlyEngine:
    """A real engine (all its attributes and metadata) whose ``lift_sequence`` returns zeros of
    the right shape: ``lift_file`` run with it reads, checks and prepares the file and builds the
    exact metadata `gastrt lift` writes, without the engine work, which the actors then do on
    the prepared input. (lifting has no public read/prepare -> lift split that returns the
    metadata; this keeps the outputs in step with lift_file by construction.)"""

    def __init__(self, engine: Any):
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def lift_sequence(self, seq: Any, flip: bool = False) -> np.ndarray:
        shape = np.shape(seq)
        return np.zeros(shape[:-2] + (int(self.engine.num_joints_out), 3), np.float32)


_SHAPE_ENGINES: dict = {}   # per worker process: engine path -> ShapeOnlyEngine


def _shape_engine(path: str) -> ShapeOnlyEngine:
    if path not in _SHAPE_ENGINES:
        _SHAPE_ENGINES[path] = ShapeOnlyEngine(load(path, backend="numpy", threads=1))
    return _SHAPE_ENGINES[path]


def _renamed(obj: Any, old: str, new: str) -> Any:
    """obj with every string's ``old`` replaced by ``new`` (the absolute path the worker read
    -> the path as the user gave it, which `gastrt lift` would have printed and recorded)."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, list):
        return [_renamed(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {k: _renamed(v, old, new) for k, v in obj.items()}
    return obj


def prepare_row(row: dict, *, engine_path: str, engine_abs: str, fmt: str, size: Any,
                flip: bool, people: int | None, world: bool, video: str | None,
                check_size: bool = True, max_gap: int | None = None) -> dict:
    """Read one input and make it engine-ready with ``lift_file`` on a ShapeOnlyEngine. -> the
    row plus 'payload' (npz bytes: keypoints_2d (P, T, J, 2) float32, valid (P, T) bool) and
    'info' (the output's metadata, JSON), or status 'error' with the CLI's message."""
    t0 = time.perf_counter()
    row = dict(row)
    if row["status"] == "error":
        return row
    given, where = row["input"], row["job_abs_input"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LiftWarning)   # they are kept in the metadata
            res = lift_file(_shape_engine(engine_abs), where, fmt=fmt, size=row["job_size"] or size,
                            flip=flip, people=people, world=world, video=video, check_size=check_size,
                            max_gap=max_gap)
        meta = _renamed(res.metadata, where, given)
        meta["engine"] = engine_path     # lift_file records the path it was given
        buf = io.BytesIO()
        np.savez(buf, keypoints_2d=res.keypoints_2d, valid=res.valid)
        row["payload"] = buf.getvalue()
        row["info"] = json.dumps(meta)
        row["warnings"] = "\n".join(map(str, meta.get("warnings") or []))
    except Exception as e:  # noqa: BLE001  (a bad file is a manifest row, never a failed job)
        row.update(status="error", error=error_text(e).replace(where, given), output="")
    row["seconds"] = time.perf_counter() - t0
    return row


# --- stage 2: lift + write (actor pool) ----------------------------------------------------------

class LiftWorker:
    """The actor of the pool: loads the engine once; ``__call__(batch)`` lifts each prepared
    row of a pandas batch with one ``lift_keypoints`` call per input (as lift_file does) and
    writes its output atomically with ``save_result``. -> the batch's manifest rows."""

    def __init__(self, engine_abs: str, device: str, threads: int | None, flip: bool):
        self.engine = load(engine_abs, device=device, threads=threads)
        self.flip = flip

    def lift_row(self, row: dict) -> dict:
        t0 = time.perf_counter()
        try:
            with np.load(io.BytesIO(row["payload"]), allow_pickle=False) as z:
                kp2d, valid = z["keypoints_2d"], z["valid"]
            meta = json.loads(row["info"])
            poses = lift_keypoints(self.engine, kp2d, flip=self.flip)
            # lift_file's world transform, on the real poses
            world = np.stack([rebase_height(camera_to_world(p)) for p in poses]) if meta.get("world") else None
            out = row["job_abs_output"]
            os.makedirs(os.path.dirname(out), exist_ok=True)
            check_output_path(out, [row["job_abs_input"]])
            save_result(LiftResult(poses, valid, kp2d, meta, world), out)
            row.update(status="ok", persons=int(poses.shape[0]), frames=int(poses.shape[1]),
                       output_bytes=int(os.path.getsize(out)))
        except Exception as e:  # noqa: BLE001
            row.update(status="error", error=error_text(e), output="")
        row["seconds"] = float(row["seconds"]) + time.perf_counter() - t0
        return row

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        rows = []
        for row in batch.to_dict("records"):
            if row["status"] != "error":
                row = self.lift_row(row)
            rows.append({k: row[k] for k in COLUMNS + ("job_index",)})
        return pd.DataFrame(rows, columns=list(COLUMNS) + ["job_index"])


# --- the driver ----------------------------------------------------------------------------------

def _blank_row(**kw) -> dict:
    row = {"input": "", "output": "", "status": "todo", "error": "", "persons": 0, "frames": 0,
           "seconds": 0.0, "warnings": "", "input_bytes": -1, "input_mtime_ns": -1, "output_bytes": -1,
           "fingerprint": ""}
    row.update(kw)
    return row


def read_previous(path: str) -> dict[str, dict]:
    """input -> row of an earlier manifest ({} when there is none or it is unreadable)."""
    import pandas as pd

    if not os.path.isfile(path):
        return {}
    try:
        df = pd.read_parquet(path)
    except Exception:  # noqa: BLE001  (a damaged manifest only costs re-lifting)
        print(f"gastrt: warning: {path}: unreadable manifest; lifting every input again", file=sys.stderr)
        return {}
    return {str(r["input"]): r for r in df.to_dict("records") if "input" in r}


def _is_complete(prev: dict | None, row: dict, out_abs: str, retry_failed: bool) -> bool:
    """Skip on a re-run: same fingerprint, and an ok row whose output is still there with its
    size, or an error row (the same bytes fail the same way) unless retry_failed."""
    if not prev or prev.get("fingerprint") != row["fingerprint"]:
        return False
    if prev.get("status") == "error":
        return not retry_failed
    if prev.get("status") != "ok":
        return False
    if prev.get("output") != row["output"]:
        return False
    try:
        return os.path.getsize(out_abs) == int(prev.get("output_bytes", -2))
    except OSError:
        return False


def write_manifest(rows: list[dict], path: str) -> Any:
    """rows -> DataFrame with COLUMNS, written atomically as Parquet. -> the DataFrame"""
    import pandas as pd

    df = pd.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], columns=list(COLUMNS))
    df = df.astype({"persons": "int64", "frames": "int64", "seconds": "float64", "input_bytes": "int64",
                    "input_mtime_ns": "int64", "output_bytes": "int64"})
    atomic_write(path, lambda f: df.to_parquet(f, index=False))
    return df


def summary_line(df: Any, wall: float, skipped: int) -> str:
    ok = int((df["status"] == "ok").sum())
    failed = int((df["status"] == "error").sum())
    lifted = df[(df["status"] == "ok")]
    frames = int(lifted["frames"].sum()) if len(lifted) else 0
    done_frames = frames - int(df.attrs.get("skipped_frames", 0))
    rate = done_frames / wall if wall > 0 else 0.0
    return (f"{len(df)} files: {ok} ok, {failed} failed, {skipped} skipped (done by an earlier run); "
            f"{done_frames} frames lifted in {wall:.1f} s ({rate:.0f} frames/s)")


def _default_actors(ray: Any, device: str, threads: int) -> int:
    """One actor per GPU, or per ``threads`` CPUs: the engine is the bottleneck (a GAST-Net
    27-frame file takes ~100x longer to lift than to read), so reading reserves no CPU."""
    res = ray.cluster_resources()
    if device != "cpu":
        return max(1, int(res.get("GPU", 0)))
    return max(1, int(res.get("CPU", 1) // max(threads, 1)))


def lift_corpus(engine_path: str | os.PathLike, inputs: Any, out_dir: str | os.PathLike, *,
                size: Any = None, fmt: str = "auto", flip: bool = True, people: int | None = None,
                world: bool = False, video: str | None = None, output_ext: str = ".npz",
                device: str = "cpu", threads: int | None = 1, actors: int | tuple[int, int] | None = None,
                batch_size: int = 1, ray_address: str | None = None, progress: bool = True,
                max_restarts: int = 3, max_task_retries: int = 3, flush_s: float = 10.0,
                resume: bool = True, retry_failed: bool = False, check_size: bool = True,
                max_gap: int | None = None) -> Any:
    """Lift every input to ``out_dir`` on Ray. inputs: paths, folders (recursive), globs, a
    CSV/Parquet manifest (path, width, height) or a DataFrame of those columns. Per-file
    options as ``lifting.lift_file`` (size, fmt, flip, people, world, video, check_size, max_gap).
    device 'cpu'
    (``threads`` per actor) or 'cuda' (one GPU per actor); actors: pool size (default: one per
    GPU, or CPUs // threads); ray_address: the cluster (default: the running Ray, else
    RAY_ADDRESS, else a local one); resume: skip inputs an earlier run finished (retry_failed:
    retry its failures too). The engine must be a .gastrt file readable on every node, like the
    inputs and out_dir (a shared file system on a cluster).
    -> the manifest (pandas DataFrame, COLUMNS; ``df.attrs``: summary, skipped, manifest)."""
    ray = require_ray("gastrt.ray.lift_corpus")
    t_start = time.perf_counter()
    if fmt != "auto" and fmt not in FORMATS:
        raise GastrtError(f"unknown keypoint format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    parse_size(size)
    if people is not None and (isinstance(people, bool) or not isinstance(people, int) or people < 1):
        raise GastrtError(f"--people must be a positive integer, got {people!r}")
    if output_ext not in (".npz", ".json"):
        raise GastrtError(f"output_ext must be .npz or .json, got {output_ext!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise GastrtError(f"--threads must be a positive integer, got {threads!r}")
    engine_path = os.fspath(engine_path)
    if not os.path.isfile(engine_path):
        raise GastrtError(f"{engine_path}: engine file not found")
    engine_abs = os.path.abspath(engine_path)
    eng = load(engine_abs, backend="numpy", threads=1)   # a bad engine is one error now, not one per input
    if max_gap is not None:
        resolve_max_gap(eng, max_gap)                    # a bad limit too
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise GastrtError(f"{out_dir}: exists and is not a directory (--out-dir)")
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)

    items = expand_inputs(inputs, exclude=out_dir)
    if not items:
        raise GastrtError(f"no keypoint files ({', '.join(('.json', '.npz', '.npy'))}) found in the inputs")
    names = output_names(items, output_ext)
    opts = {"fmt": fmt, "size": parse_size(size), "flip": bool(flip), "people": people, "world": bool(world),
            "video": video, "ext": output_ext}
    if not check_size:   # (only when off: outputs made with the check keep their fingerprints)
        opts["check_size"] = False
    if max_gap is not None:   # (likewise: only when not the default)
        opts["max_gap"] = int(max_gap)
    engine_sha = file_sha256(engine_abs)
    prev = read_previous(manifest_path) if resume else {}
    rows, todo, skipped = [], [], 0
    for i, (it, name) in enumerate(zip(items, names)):
        out = os.path.join(out_dir, name)
        stat = input_stat(it.path)
        row = _blank_row(input=it.path, output=out, input_bytes=stat[0], input_mtime_ns=stat[1],
                         fingerprint=fingerprint(engine_sha, opts, it.size, stat))
        if it.error:
            row.update(status="error", error=it.error, output="")
        elif _is_complete(prev.get(it.path), row, os.path.abspath(out), retry_failed):
            row = dict(prev[it.path])
            skipped += 1
        else:
            todo.append(dict(row, job_index=i, job_abs_input=os.path.abspath(it.path),
                             job_abs_output=os.path.abspath(out), job_size=list(it.size or ()),
                             payload=b"", info=""))
        rows.append(row)
    skipped_frames = sum(int(r["frames"]) for r in rows if r["status"] == "ok")

    if todo:
        if not ray.is_initialized():
            init_ray(ray, ray_address)
        _run(ray, todo, rows, manifest_path, engine_path, engine_abs, fmt=fmt, size=size, people=people,
             video=video, flip=flip, world=world, device=device, threads=threads, actors=actors,
             batch_size=batch_size, progress=progress, check_size=bool(check_size), max_gap=max_gap,
             max_restarts=max_restarts, max_task_retries=max_task_retries, flush_s=flush_s)
    import pandas as pd

    prev_rows = [prev.get(r["input"]) for r in rows]
    unchanged = bool(prev) and not todo and all(p is not None and all(p.get(k) == r.get(k) for k in COLUMNS)
                                                for p, r in zip(prev_rows, rows)) and len(prev) == len(rows)
    if unchanged:   # nothing ran: leave the manifest (and its mtime) alone
        df = pd.read_parquet(manifest_path)
    else:
        df = write_manifest(rows, manifest_path)
    df.attrs.update(skipped=skipped, skipped_frames=skipped_frames, manifest=manifest_path)
    df.attrs["summary"] = summary_line(df, time.perf_counter() - t_start, skipped)
    return df


def _run(ray: Any, todo: list[dict], rows: list[dict], manifest_path: str, engine_path: str,
         engine_abs: str, *, fmt, size, people, video, flip, world, device, threads, actors,
         batch_size, progress, max_restarts, max_task_retries, flush_s, check_size=True,
         max_gap=None) -> None:
    """The Ray Data pipeline over the rows still to do; fills ``rows`` in place."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    ctx.enable_operator_progress_bars = bool(progress)
    on_gpu = str(device).startswith("cuda")
    if actors is None:
        actors = _default_actors(ray, "cuda" if on_gpu else "cpu", threads or 1)
    pool = dict(num_gpus=1) if on_gpu else dict(num_cpus=threads or 1)
    # a Ray actor sees its one GPU as cuda:0
    actor_device = "cuda" if on_gpu else "cpu"
    ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 1000))
    # reading reserves no CPU (the actors may hold them all) and runs at most one task per CPU
    n_read = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ds.map(prepare_row, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=n_read),
                fn_kwargs=dict(engine_path=engine_path, engine_abs=engine_abs, fmt=fmt, size=size, flip=flip,
                               people=people, world=world, video=video, check_size=check_size,
                               max_gap=max_gap))
    if isinstance(actors, tuple):
        compute = ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1])
    else:
        compute = ray.data.ActorPoolStrategy(size=int(actors))
    kw = dict(batch_size=max(1, int(batch_size)), batch_format="pandas", compute=compute,
              fn_constructor_kwargs=dict(engine_abs=engine_abs, device=actor_device, threads=threads, flip=flip),
              **pool)
    # Ray Data restarts a dead pool actor and retries its batch (its default is -1: forever, so an
    # input that kills the process would loop); a finite budget turns that into a failed job.
    # Ray 2.60 deprecates these pass-through actor options (removal planned for 2.64): without
    # them, Ray's default applies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = ds.map_batches(LiftWorker, max_restarts=max_restarts, max_task_retries=max_task_retries, **kw)
        except TypeError:
            ds = ds.map_batches(LiftWorker, **kw)
    last = time.monotonic()
    try:
        for r in ds.iter_rows():
            i = int(r["job_index"])
            rows[i] = {k: _plain(r[k]) for k in COLUMNS}
            if time.monotonic() - last > flush_s:   # a killed job resumes from here
                write_manifest([x for x in rows if x["status"] != "todo"], manifest_path)
                last = time.monotonic()
    except BaseException:
        write_manifest([x for x in rows if x["status"] != "todo"], manifest_path)
        raise
    for r in rows:   # cannot happen unless Ray dropped rows: say so instead of hiding it
        if r["status"] == "todo":
            r.update(status="error", error="the Ray job returned no result for this input")
