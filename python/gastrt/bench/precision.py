"""``gastrt build --precision auto``: build the engine in every precision, check each against the
fp32 engine, time them side by side on this machine, and keep the fastest one that stays within
its documented tolerance (``engine_file.PRECISION_TOLERANCE``). The choice and what it was based
on go into the engine's metadata (``precision_choice``), which ``gastrt info`` shows.

Workloads timed (interleaved round by round, same thread count): one window at batch 1 (the
real-time call) and one sequence of 64 output frames. A 16-bit precision is kept only when it is
at least AUTO_MARGIN faster than fp32 over both (geometric mean): within noise, fp32 wins; and
bf16 replaces fp16 only when it is AUTO_MARGIN faster than fp16 too. CPU engines only (a
TensorRT build takes an explicit precision).
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np

from ..builder import default_output_path, lower_checkpoint, write_lowered
from ..engine import load
from ..engine_file import PRECISION_TOLERANCE, PRECISIONS, check_output_path
from ..errors import GastrtError
from .contenders import rel_err   # NaN for a non-finite output: never within tolerance
from .measure import interleaved
from .schema import cpu_model

AUTO_MARGIN = 1.05       # a 16-bit engine must beat fp32 by 5% (the machines are noisy)
SEQUENCE_FRAMES = 64     # output frames of the timed / checked sequence


def choose_precision(paths: dict[str, str], *, threads: int | None = None, seconds: float = 4.0,
                     tolerance: dict[str, float] | None = None) -> dict:
    """paths: precision -> engine file (fp32 required). -> the choice record: chosen, cpu,
    threads, and per candidate rel_err (max over a window batch and a sequence, vs fp32),
    tolerance, within, window_ms / sequence_ms (medians), spread, speedup (vs fp32)."""
    tolerance = dict(PRECISION_TOLERANCE if tolerance is None else tolerance)
    engines = {p: load(path, threads=threads) for p, path in paths.items()}
    ref_eng = engines["fp32"]
    rf, j, f = ref_eng.receptive_field, ref_eng.num_joints, ref_eng.plans["pos"].in_features
    rng = np.random.default_rng(0)
    windows = (rng.standard_normal((8, rf, j, f)) * 0.3).astype(np.float32)
    one = np.ascontiguousarray(windows[:1])
    seq = (rng.standard_normal((rf - 1 + SEQUENCE_FRAMES, j, f)) * 0.3).astype(np.float32)
    ref_w, ref_s = ref_eng.lift(windows), ref_eng.lift_sequence(seq)
    ref_t = ref_eng.trajectory_sequence(seq) if ref_eng.has_trajectory else None

    fns = {}
    for p, eng in engines.items():
        fns[f"{p}/window"] = (lambda e=eng: e.lift(one))
        fns[f"{p}/sequence"] = (lambda e=eng: e.lift_sequence(seq))
    times = interleaved(fns, budget=seconds, min_rounds=3, max_rounds=15, warmup=2, block_s=0.05)

    cands = {}
    for p, eng in engines.items():
        err = 0.0
        if p != "fp32":
            errs = [rel_err(eng.lift(windows), ref_w), rel_err(eng.lift_sequence(seq), ref_s)]
            if ref_t is not None:   # VideoPose3D's trajectory model too
                errs.append(rel_err(eng.trajectory_sequence(seq), ref_t))
            err = float(np.max(errs))   # NaN if any is (Python's max would drop a NaN after a number)
        tw, ts = times[f"{p}/window"], times[f"{p}/sequence"]
        speed = math.sqrt(times["fp32/window"].median / tw.median * times["fp32/sequence"].median / ts.median)
        cands[p] = {"rel_err": err, "tolerance": tolerance[p], "within": bool(err <= tolerance[p]),
                    "window_ms": tw.median * 1e3, "sequence_ms": ts.median * 1e3,
                    "spread": max(tw.spread, ts.spread), "speedup": speed}
    chosen = "fp32"
    for p in PRECISIONS:
        c = cands.get(p)
        if p != "fp32" and c and c["within"] and c["speedup"] >= AUTO_MARGIN * max(1.0, cands[chosen]["speedup"]):
            chosen = p
    return {"mode": "auto", "chosen": chosen, "cpu": cpu_model(), "backend": ref_eng.backend.name,
            "threads": getattr(ref_eng.backend, "threads", threads), "margin": AUTO_MARGIN,
            "workloads": [f"window batch 1 (RF {rf})", f"sequence of {SEQUENCE_FRAMES} frames"],
            "candidates": cands}


def build_auto(checkpoint, output=None, causal: bool = False, allow_nonfinite: bool = False,
               threads: int | None = None, seconds: float = 4.0) -> tuple[str, dict]:
    """``gastrt.build`` with the precision chosen on this machine (see the module doc). -> (the
    engine path, the choice record also stored as metadata['precision_choice'])."""
    checkpoint = os.fspath(checkpoint)
    output = os.fspath(output) if output is not None else default_output_path(checkpoint)
    check_output_path(output, [checkpoint])
    lowered, info, nparams = lower_checkpoint(checkpoint, causal, allow_nonfinite)
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gastrt-auto-") as d:
        paths = {}
        for p in PRECISIONS:
            try:
                paths[p] = write_lowered(lowered, info, nparams, checkpoint, os.path.join(d, f"{p}.gastrt"),
                                         causal=causal, precision=p, allow_nonfinite=allow_nonfinite)
            except GastrtError as e:   # e.g. weights past the fp16 range: that candidate is out
                if p == "fp32":
                    raise
                skipped[p] = str(e)[:200]
        choice = choose_precision(paths, threads=threads, seconds=seconds)
    choice["skipped"] = skipped
    write_lowered(lowered, info, nparams, checkpoint, output, causal=causal, precision=choice["chosen"],
                  allow_nonfinite=allow_nonfinite, extra_meta={"precision_choice": _plain(choice)})
    return output, choice


def _plain(obj: Any) -> Any:
    """JSON-safe copy (inf -> None)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, float) and math.isfinite(v) else None


def describe_choice(choice: Any) -> str | None:
    """One line for `gastrt build` / `gastrt info`, or None when the engine's precision was given.
    (The record comes from an engine file: only finite floats are formatted, strings are cut.)"""
    if not isinstance(choice, dict) or not isinstance(choice.get("candidates"), dict):
        return None
    parts = []
    for p, c in list(choice["candidates"].items())[:3]:
        if not isinstance(c, dict) or p not in PRECISIONS:
            continue
        err, sp = _num(c.get("rel_err")), _num(c.get("speedup"))
        tail = "" if p == "fp32" else (f" err {err:.1e}" if err is not None else " err n/a") + \
            ("" if c.get("within") is True else " (over tolerance)")
        parts.append(f"{p} {sp:.2f}x{tail}" if sp is not None else f"{p}{tail}")
    cpu = str(choice.get("cpu") or "this CPU")[:80]
    threads = choice.get("threads") if isinstance(choice.get("threads"), int) else "?"
    return f"chosen by --precision auto on {cpu}, {threads} threads: " + ", ".join(parts)
