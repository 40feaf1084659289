"""``run_bench``: check the arguments, resolve the target, load the engine, set up the
contenders, then measure cell by cell (batch size x contender) into the JSON document."""
from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
from typing import Any

import numpy as np

from ..argtypes import parse_device, require_positive_int, require_positive_number
from ..backends import arithmetic
from ..backends.native import default_threads
from ..engine import load
from ..errors import GastrtError
from . import contenders as ct
from .measure import (MIN_TIMED, ContenderError, CpuTimer, CudaMemProbe, CudaTimer, HostMemProbe, Progress,
                      cell_fields, time_cells, warm_up_cell)
from .precision import describe_choice
from .presets import Target, import_torch, resolve_target
from ..engine_file import check_precision
from .onnx_peers import peer_engine, peer_unavailable
from .schema import (CONTENDERS, LABELS, ONNX_PEERS, MODES, TORCH_CONTENDERS, label, machine_info, new_document,
                     new_row)

# The default run (about a minute on a 2-core CPU) and --full (the longer sweep).
DEFAULT_BATCHES = {
    ("cpu", "window"): (1, 64),
    ("cpu", "sequence"): (1,),
    ("cpu", "stream"): (1, 8),
    ("cuda", "window"): (1, 64, 4096),
    ("cuda", "sequence"): (1, 8),
    ("cuda", "stream"): (1, 64),
}
FULL_BATCHES = {
    ("cpu", "window"): (1, 8, 64, 512),
    ("cpu", "sequence"): (1, 4),
    ("cpu", "stream"): (1, 8, 64),
    ("cuda", "window"): (1, 8, 64, 512, 4096),
    ("cuda", "sequence"): (1, 8, 64),
    ("cuda", "stream"): (1, 64, 1024),
}
DEFAULT_COMPARE = "eager"          # torch.compile compiles per batch size: --full, or --compare
FULL_COMPARE = None                # eager, compile (+ tensorrt on a GPU where installed)
DEFAULT_SEQ_LEN = 1000
DEFAULT_WARMUP = 0.3
DEFAULT_REPEAT = 40                # rounds per batch at most
DEFAULT_MAX_TIME = 6.0             # seconds of rounds per batch (all contenders together)
FULL_WARMUP, FULL_REPEAT, FULL_MAX_TIME = 0.5, 60, 10.0
BLOCK_S = 0.05                     # one contender's turn in a round, about
DEFAULT_THREADS = 1                # the default run (see run_bench); --full: all available cores
MAX_INPUT_SETS = 8
INPUT_SET_BYTES = 256 << 20


def parse_batches(spec) -> list[int]:
    """'1,8,64' (or a list of ints) -> [1, 8, 64]: positive, duplicates dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int] = []
    for it in items:
        s = it.strip() if isinstance(it, str) else it
        try:
            if isinstance(s, bool):
                raise ValueError
            v = int(s)
            if isinstance(s, float) and v != s:
                raise ValueError
        except (TypeError, ValueError):
            raise GastrtError(f"--batch: expected comma-separated positive integers such as 1,8,64, "
                              f"got {spec!r}") from None
        if v < 1:
            raise GastrtError(f"--batch: batch sizes must be positive, got {v} in {spec!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise GastrtError(f"--batch: no batch sizes in {spec!r}")
    return out


def parse_compare(spec) -> list[str]:
    """'eager,compile' (or a list; None: eager and compile; 'none': []) -> contender names."""
    if spec is None:
        return list(TORCH_CONTENDERS)
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if items in ([], ["none"]):
        return []
    out = []
    for s in items:
        if s not in CONTENDERS:
            raise GastrtError(f"--compare: unknown contender {s!r}: expected a comma-separated subset "
                              f"of {','.join(CONTENDERS)} (or 'none')")
        if s not in out:
            out.append(s)
    return out


def _input_sets(rng, shape: tuple, budget: int = INPUT_SET_BYTES) -> list[np.ndarray]:
    nbytes = int(np.prod(shape)) * 4
    k = int(min(MAX_INPUT_SETS, max(2, budget // max(nbytes, 1))))
    return [(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.4)) for _ in range(k)]


def _is_oom(e: BaseException, torch) -> bool:
    # gastrt's native OutOfMemoryError and host MemoryError are MemoryErrors; torch's is its own type
    return isinstance(e, MemoryError) or (torch is not None and isinstance(e, torch.cuda.OutOfMemoryError))


def _short(e: BaseException, limit: int = 240) -> str:
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def run_bench(target, *, device: str = "cpu", batches=None, mode: str = "window",
              seq_len: int = DEFAULT_SEQ_LEN, precision: str | None = None, compare=None,
              flip: bool = False, warmup: float | None = None, repeat: int | None = None,
              max_time: float | None = None, threads: int | None = None, backend: str | None = None,
              causal: bool = False, progress: bool | None = False, seed: int = 0, full: bool = False) -> dict:
    """Benchmark ``target`` (engine file, checkpoint or preset name; see the package doc) and
    return the JSON document described there. ``compare``: contenders besides gastrt ("eager",
    "compile", "tensorrt"; [] for gastrt alone; default eager, and with ``full`` eager and
    compile, plus TensorRT on a GPU where it is installed). ``full``: the longer sweep (more
    batch sizes, rounds and time). ``backend``: CPU backend ("native" or "numpy"; default native
    when built). ``progress``: None shows a bar on a TTY and one line per cell elsewhere, True the
    bar, False nothing. Ctrl-C stops the run and returns the batches already measured
    (``interrupted`` true)."""
    if compare is None:
        compare = FULL_COMPARE if full else DEFAULT_COMPARE
    warmup = (FULL_WARMUP if full else DEFAULT_WARMUP) if warmup is None else warmup
    repeat = (FULL_REPEAT if full else DEFAULT_REPEAT) if repeat is None else repeat
    max_time = (FULL_MAX_TIME if full else DEFAULT_MAX_TIME) if max_time is None else max_time
    # ---- validate everything before any expensive work
    dev_kind, dev_index = parse_device(device)
    device = "cpu" if dev_kind == "cpu" else f"cuda:{dev_index}"
    if mode not in MODES:
        raise GastrtError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    batches = parse_batches(batches) if batches is not None else \
        list((FULL_BATCHES if full else DEFAULT_BATCHES)[(dev_kind, mode)])
    seq_len = require_positive_int(seq_len, "--seq-len")
    repeat = require_positive_int(repeat, "--repeat")
    warmup = require_positive_number(warmup, "--warmup", allow_zero=True)
    max_time = require_positive_number(max_time, "--max-time")
    # The default run is on one thread: with every core busy, a background process on a small
    # machine stalls multi-threaded PyTorch far more than gastrt (2 cores, one busy: the
    # batch-1 ratio went 3.9x -> 9.2x at 2 threads, 2.75x -> 2.69x at 1), so the ratio would
    # depend on the machine's load. --full and --threads use more.
    threads = (default_threads() if full else DEFAULT_THREADS) if threads is None \
        else require_positive_int(threads, "--threads")
    if precision is not None:
        check_precision(precision)
    if backend not in (None, "auto", "native", "numpy"):
        raise GastrtError(f"unknown backend {backend!r}: expected 'native' or 'numpy'")
    if backend is not None and backend != "auto" and dev_kind == "cuda":
        raise GastrtError("--backend chooses the CPU runtime; a CUDA device always runs the CUDA backend")
    backend = None if backend == "auto" else backend
    auto_trt = compare is None
    compare = parse_compare(compare)
    if auto_trt and dev_kind == "cuda" and importlib.util.find_spec("tensorrt") is not None:
        compare.append("tensorrt")
    torch_compare = [c for c in compare if c in TORCH_CONTENDERS]

    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    notes: list[str] = []
    need_torch = bool(torch_compare) or dev_kind == "cuda" or not os.path.exists(os.fspath(target))
    torch = import_torch() if need_torch else None
    if torch_compare and torch is None:
        notes.append("no eager / torch.compile comparison: torch is not installed (pip install 'gastrt[torch]')")

    tgt = resolve_target(target, precision, bool(causal), bool(torch_compare), torch, notes)
    try:
        return _run(tgt, target, torch, created, notes, device=device, dev_kind=dev_kind,
                    dev_index=dev_index, batches=batches, mode=mode, seq_len=seq_len, precision=precision,
                    compare=compare, flip=bool(flip), warmup=warmup, repeat=repeat, max_time=max_time,
                    threads=threads, backend=backend, progress=progress, seed=seed)
    finally:
        if tgt.tmpdir is not None:
            tgt.tmpdir.cleanup()


def _contenders(tgt: Target, torch, notes: list, *, compare, device, on_cuda, precision, be_name,
                mode) -> tuple[list[str], Any, Any]:
    """Which contenders can run here -> (names, torch device, torch dtype); why not in ``notes``."""
    names: list[str] = ["gastrt"]
    torch_dev = dtype = None
    torch_compare = [c for c in compare if c in TORCH_CONTENDERS]
    if torch_compare and torch is not None:
        if tgt.why_no_torch:
            notes.append(f"no eager / torch.compile comparison: {tgt.why_no_torch}")
        elif tgt.state_dict is None or tgt.config is None:
            notes.append("no eager / torch.compile comparison: the checkpoint's weights could not be read for torch")
        else:
            names += torch_compare
            torch_dev = torch.device(device)
            dtype = ct.torch_dtype(torch, precision, on_cuda)
            if not on_cuda and precision != "fp32":
                notes.append(f"eager / torch.compile compute in fp32 on CPU; gastrt's CPU runtime computes this "
                             f"{precision} engine in {arithmetic(precision)}")
    if on_cuda and torch is None:
        raise GastrtError("benchmarking on CUDA needs torch (device tensors and CUDA events); "
                          "pip install 'gastrt[torch]'")
    if on_cuda and not torch.cuda.is_available():
        raise GastrtError(f"benchmarking on CUDA needs a CUDA build of torch (device tensors and CUDA events); "
                          f"this torch {torch.__version__} has none")
    if "tensorrt" in compare:
        why = ct.tensorrt_unavailable(on_cuda)
        if why:
            notes.append(f"no TensorRT comparison: {why}")
        else:
            names.append("tensorrt")
            notes.append("TensorRT: one engine per batch size, built from the same engine's weights through "
                         "gastrt's ONNX export (its optimization profile fixed at that batch); build time in "
                         "build_s, not in the timings; device memory = TensorRT's activation memory + the "
                         "serialized engine")
    for peer in (c for c in compare if c in ONNX_PEERS):
        why = "it is a CPU runtime here (the GPU peer is TensorRT)" if on_cuda else peer_unavailable(peer)
        if why:
            notes.append(f"no {LABELS[peer]} comparison: {why}")
        else:
            names.append(peer)
    if any(c in ONNX_PEERS for c in names):
        notes.append("ONNX Runtime / OpenVINO (gx) run the ONNX graph `gastrt export` writes for this engine "
                     "(fp32 graph; OpenVINO's inference precision is the engine's, see agreement_peers), with "
                     "the same thread count, behind gastrt's own flip / padding / chunking")
    if on_cuda and precision == "fp32" and any(c in TORCH_CONTENDERS for c in names):
        notes.append("fp32 on CUDA: the torch contenders run with TF32 off (cuDNN / cuBLAS), as gastrt's "
                     "fp32 kernels (plain FP32 FMA): like for like")
    have_tpc = importlib.util.find_spec("threadpoolctl") is not None  # limits NumPy's BLAS threads
    if be_name == "numpy" and not on_cuda and not have_tpc:
        notes.append("gastrt runs on its NumPy backend: NumPy's BLAS uses its own thread count "
                     "(OPENBLAS_NUM_THREADS), not --threads")
    if mode == "stream" and not have_tpc:
        notes.append("stream mode: gastrt's per-column steps use NumPy's BLAS, whose thread count is "
                     "NumPy's own (OPENBLAS_NUM_THREADS), not --threads")
    if mode == "stream" and len(names) > 1:
        notes.append("stream mode: the other contenders run the window model on the newest window of every "
                     "slot per push (a live pipeline without column reuse)")
    return names, torch_dev, dtype


def _run(tgt: Target, target, torch, created, notes, *, device, dev_kind, dev_index, batches, mode,
         seq_len, precision, compare, flip, warmup, repeat, max_time, threads, backend, progress, seed) -> dict:
    eng = load(tgt.engine_path, device=device, threads=threads, backend=backend)
    if precision is not None and eng.precision != precision:
        raise GastrtError(f"--precision {precision}: {tgt.engine_path} is a {eng.precision} engine "
                          "(an engine file's precision is fixed at build time; rebuild it, or drop --precision)")
    precision = eng.precision
    plan = eng.plans["pos"]
    windowed = "sequence" not in plan.modes
    # fails early when the engine has no left/right symmetry
    perm_in, perm_out = eng.flip_permutations("pos") if flip else (None, None)
    if tgt.family is None:
        tgt.family = eng.family
    on_cuda = dev_kind == "cuda"
    be_name = eng.backend.name
    contenders, torch_dev, dtype = _contenders(tgt, torch, notes, compare=compare, device=device, on_cuda=on_cuda,
                                               precision=precision, be_name=be_name, mode=mode)

    machine = machine_info(torch, device)
    if machine["loadavg"] and machine["cpu_affinity"] and machine["loadavg"][0] > 0.5 * machine["cpu_affinity"]:
        notes.append(f"the machine was busy when the run started (1-minute load average "
                     f"{machine['loadavg'][0]} on {machine['cpu_affinity']} cores): timings are noisy")

    geom = ct.Geom(mode, plan.receptive_field, plan.pad, eng.causal_shift, windowed, plan.in_joints,
                   plan.out_joints, flip)
    if torch is not None and flip and (len(contenders) > 1 or on_cuda):
        tdev = torch.device(device)
        geom.perm_in = torch.as_tensor(perm_in, device=tdev)
        geom.perm_out = torch.as_tensor(perm_out, device=tdev)
        geom.extra["sign_in"] = torch.tensor([-1.0, 1.0], device=tdev)
        geom.extra["sign_out"] = torch.tensor([-1.0, 1.0, 1.0], device=tdev)

    config = {
        "target": os.fspath(target), "target_kind": tgt.kind, "engine_path": tgt.engine_path,
        "family": eng.family, "receptive_field": int(plan.receptive_field), "num_joints": int(plan.in_joints),
        "parameter_count": int(eng.metadata.get("parameter_count", 0)), "causal": bool(eng.causal),
        "device": device, "backend": be_name, "mode": mode, "seq_len": seq_len if mode == "sequence" else None,
        "batches": list(batches), "precision": precision,
        "precision_choice": describe_choice(eng.metadata.get("precision_choice")),
        "arithmetic": arithmetic(precision, device) if be_name == "native" else precision,
        "torch_dtype": None if dtype is None else str(dtype).replace("torch.", ""),
        "compare": list(compare), "flip": flip, "warmup_s": float(warmup), "repeat": int(repeat),
        "max_time_s": float(max_time), "threads": int(threads), "input_sets": MAX_INPUT_SETS,
        "interleaved": True, "block_s": BLOCK_S,
    }
    result = new_document(created, machine, config, notes)

    with contextlib.ExitStack() as stack:
        models: dict[str, Any] = {}
        failed: dict[str, str] = {}
        if torch is not None:
            _torch_settings(stack, torch, threads, on_cuda and precision == "fp32")
        if (be_name == "numpy" or mode == "stream") and not on_cuda \
                and importlib.util.find_spec("threadpoolctl") is not None:
            from threadpoolctl import threadpool_limits
            stack.callback(threadpool_limits(limits=threads).restore_original_limits)
        bar = Progress(len(batches) * len(contenders), enabled=False if progress is False else None)
        stack.callback(bar.close)
        contenders = _setup_models(stack, torch, tgt, eng, models, failed, notes, contenders, mode=mode,
                                   seq_len=seq_len, torch_dev=torch_dev, dtype=dtype, on_cuda=on_cuda,
                                   dev_index=dev_index, precision=precision, windowed=windowed, flip=flip,
                                   n_batches=len(batches), threads=threads)
        bar.total = max(1, len(batches) * len(contenders))
        rng = np.random.default_rng(seed)
        if torch is not None:
            stack.enter_context(torch.inference_mode())
        try:
            _bench_loop(result, eng, torch, contenders, models, failed, geom, bar, rng, batches=batches,
                        mode=mode, seq_len=seq_len, on_cuda=on_cuda, dev_index=dev_index, dtype=dtype,
                        warmup=warmup, repeat=repeat, max_time=max_time, flip=flip, be_name=be_name)
        except KeyboardInterrupt:
            done = sorted({r["batch"] for r in result["rows"]})
            result["interrupted"] = True
            notes.append("interrupted (Ctrl-C): " + (f"batches {', '.join(map(str, done))} were measured"
                                                      if done else "no batch was measured"))
    for why in failed.values():
        if why.startswith("torch.compile unavailable"):
            notes.append(why)
    return result


def _torch_settings(stack: contextlib.ExitStack, torch, threads: int, no_tf32: bool) -> None:
    """torch's thread count (and TF32 off) for the run, restored when ``stack`` closes."""
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    stack.callback(torch.set_num_threads, saved_threads)
    if no_tf32:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

        def restore():
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        stack.callback(restore)


def _setup_models(stack, torch, tgt, eng, models, failed, notes, contenders, *, mode, seq_len, torch_dev, dtype,
                  on_cuda, dev_index, precision, windowed, flip, n_batches, threads) -> list[str]:
    """Eager / compile / TensorRT / ONNX peers set up in ``models`` (released when ``stack``
    closes) -> the contenders still in the run."""
    for peer in [c for c in contenders if c in ONNX_PEERS]:
        try:
            models[peer] = peer_engine(peer, eng, threads, precision)
        except Exception as e:
            notes.append(f"no {LABELS[peer]} comparison: {_short(e)}")
            contenders = [c for c in contenders if c != peer]
    if any(c in TORCH_CONTENDERS for c in contenders):
        try:
            models["eager"] = ct.build_eager(torch, tgt, mode, eng.causal, torch_dev, dtype)
        except Exception as e:  # the reference model cannot take these weights
            notes.append(f"no eager / torch.compile comparison: eager model unavailable: {_short(e)}")
            contenders = [c for c in contenders if c not in TORCH_CONTENDERS]
    if "tensorrt" in contenders:
        trt = ct.TensorRTContender(tgt.engine_path, precision, dev_index, mode, seq_len,
                                   eng.plans["pos"].receptive_field, windowed, flip)
        models["tensorrt"] = trt
        stack.callback(trt.close)
    if "compile" in contenders:
        stack.callback(ct.DynamoLimits(torch, n_batches).restore)
        try:
            models["compile"] = ct.compile_model(torch, models["eager"], on_cuda)
        except Exception as e:
            failed["compile"] = f"torch.compile unavailable: {_short(e)}"
        else:
            stack.callback(_forget_compiled, torch, models)
    return contenders


def _forget_compiled(torch, models: dict) -> None:
    """run_bench leaves no compiled graphs behind."""
    models.pop("compile")
    try:
        torch._dynamo.reset()
    except Exception:  # cleanup after the measurements: never lose the result over it
        pass


def _bench_loop(result, eng, torch, contenders, models, failed, geom: ct.Geom, bar: Progress, rng, *,
                batches, mode, seq_len, on_cuda, dev_index, dtype, warmup, repeat, max_time, flip,
                be_name) -> None:
    """Per batch size: every contender set up and warmed up on its own, then timed in
    interleaved rounds (one block each per round), so the machine's noise hits them alike and the
    ratios hold. A batch's rows land in ``result`` once all its contenders are timed."""
    plan = eng.plans["pos"]
    j, f, rf = plan.in_joints, plan.in_features, plan.receptive_field
    mult = 2 if flip else 1
    fpf = float(eng.flops_per_frame("sequence", seq_len) if mode == "sequence" else eng.flops_per_frame("window"))
    fpf *= mult
    tdev = torch.device(f"cuda:{dev_index}") if on_cuda else (torch.device("cpu") if torch is not None else None)
    timer = CudaTimer(torch, tdev) if on_cuda else CpuTimer()
    host_mem = None if on_cuda else HostMemProbe()
    prime_done: set = set()

    for b in batches:
        # shared numpy input sets for this batch size
        if mode == "window":
            shapes = {"gastrt": (b, rf, j, f), "torch": (b, rf, j, f)}
        elif mode == "sequence":
            shapes = {"gastrt": (b, seq_len, j, f), "torch": (b, seq_len, j, f)}
        else:
            shapes = {"gastrt": (b, j, f), "torch": (b, rf, j, f)}
        sets = {s: _input_sets(rng, s) for s in dict.fromkeys(shapes.values())}
        frames = b * seq_len if mode == "sequence" else b
        result["config"]["input_sets"] = min(result["config"]["input_sets"],
                                             min(len(v) for v in sets.values()))
        rows: dict[str, dict] = {}
        runs: dict[str, Any] = {}
        warm: dict[str, Any] = {}
        for name in contenders:
            what = f"{LABELS.get(name, name)} b={b}"
            bar.show(what, force=True)
            row = rows[name] = new_row(name, label(name, be_name), b, frames, fpf)
            if name in failed:
                row["status"], row["error"] = "skipped", failed[name]
                continue
            try:
                run = ct.make_runner(name, eng, torch, models, geom,
                                     sets[shapes["gastrt" if name == "gastrt" else "torch"]], mode=mode, b=b,
                                     frames=frames, on_cuda=on_cuda, tdev=tdev, dtype=dtype, flip=flip, fpf=fpf)
                row["flops_per_frame"] = run.flops_per_frame
                row["build_s"] = run.build_s
                if name != "compile" and name not in prime_done:
                    # one untimed call first: weights paged in, lazy init done (not counted as memory)
                    ct.prime(result, run, eng, torch, models, geom, sets, shapes, mode, b, on_cuda, tdev, dtype)
                    prime_done.add(name)
                mem = CudaMemProbe(torch, tdev, run.device_bytes) if on_cuda else host_mem
                warm[name] = warm_up_cell(run, warmup=warmup, block_s=BLOCK_S, timer=timer, mem=mem, progress=bar,
                                          what=what)
                runs[name] = run
            except KeyboardInterrupt:
                raise
            except Exception as e:
                _fail(row, name, e, b, torch, on_cuda, failed)
        times: dict = {}
        while runs:
            try:
                times = time_cells(runs, warm, timer=timer, max_rounds=repeat, min_rounds=min(repeat, MIN_TIMED),
                                   budget=max_time, progress=bar, what=f"b={b}")
                break
            except ContenderError as ce:  # that contender's row fails; the others are timed again
                _fail(rows[ce.name], ce.name, ce.error, b, torch, on_cuda, failed)
                runs.pop(ce.name)
                warm.pop(ce.name)
        for name, run in runs.items():
            rows[name].update(cell_fields(run, warm[name], times[name]))
        if runs:
            _speedups(rows, times)
        for name in contenders:
            result["rows"].append(rows[name])
            bar.step()
        bar.note(_batch_line(b, rows))
        del sets
        eng.backend.clear_cache()   # drop this batch size's workspaces


def _fail(row: dict, name: str, e: Exception, b: int, torch, on_cuda: bool, failed: dict) -> None:
    """A contender's cell failed: a gastrt bug fails the run on the CPU (tested there); on a GPU
    (whose paths have not all run yet) and for the other contenders the row says why."""
    oom = _is_oom(e, torch)
    if name == "gastrt" and not oom and not on_cuda:
        raise e
    row["status"] = "failed"
    row["error"] = "out of memory" if oom else _short(e)
    failed[name] = f"{'out of memory' if oom else 'failed'} at batch {b}"
    if name == "eager":
        failed.setdefault("compile", f"eager failed at batch {b}")
    if on_cuda:
        try:
            torch.cuda.empty_cache()
        except Exception:
            pass


def _speedups(rows: dict, times: dict) -> None:
    """vs eager: the ratio of medians, and the p10-p90 range of the per-round ratios (each round
    times both under the same machine state)."""
    if "eager" not in times or rows["eager"]["status"] != "ok":
        return
    e = np.asarray(times["eager"])
    for name, t in times.items():
        if rows[name]["status"] != "ok":
            continue
        rows[name]["speedup_vs_eager"] = rows["eager"]["latency_ms"]["p50"] / rows[name]["latency_ms"]["p50"]
        r = e / np.asarray(t)
        rows[name]["speedup_spread"] = [float(np.percentile(r, 10)), float(np.percentile(r, 90))]


def _batch_line(b: int, rows: dict) -> str:
    parts = []
    for r in rows.values():
        if r["status"] != "ok":
            parts.append(f"{r['label']} {r['status']}")
            continue
        sp = f" ({r['speedup_vs_eager']:.2f}x eager)" if r["speedup_vs_eager"] and r["contender"] != "eager" else ""
        parts.append(f"{r['label']} {r['latency_ms']['p50']:.3g} ms{sp}")
    return f"batch {b}: " + ", ".join(parts)
