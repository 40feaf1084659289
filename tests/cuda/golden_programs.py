"""Golden CUDA programs: a digest of every program the CUDA lowering emits, so a change to how
records are written (csrc/cuda/program_records.h, backends/cuda) is proved byte-identical
without a GPU.

Covered: the bench presets (gastrt.bench.PRESETS, causal included) and the test models of
_models.TINY, every plan (VideoPose3D's trajectory too), window and sequence mode at several
batch sizes / T, fp32 / fp16 / bf16, both GAST paths (fused, and multi-kernel with a small
scratch budget that chunks time), and the streaming programs of every bucket (flip and causal
included). Programs are lowered by CudaBackend / CudaStreamColumns over RecordingEngine (the
executor's interface with weight ids counted, a fixed GAST scratch rule and the programs
recorded; nothing runs).

    python tests/cuda/golden_programs.py [--python DIR] [--out FILE]

writes the digests (default: golden_programs.json beside this file); ``--python`` puts DIR first
on sys.path (the tree to record, e.g. the one before a change). test_golden_programs.py
recomputes them with the current code.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden_programs.json")
DTYPE = {"fp32": 0, "fp16": 1, "bf16": 2}


class RecordingEngine:
    """The native CudaEngine's interface as lowering and the stream columns use it: weight ids
    counted in upload order, GAST scratch sizes by a fixed rule (fused iff fp16 / bf16, C and
    heads * gc multiples of 16 and C <= 128, unless forced; the multi-kernel path's time chunk
    sized to the budget), every created program appended to ``log``. Runs write zeros."""

    log: list = []

    def __init__(self, device: int = 0, dtype: int = 0):
        self._dt = int(dtype)
        self._nweights = 0
        self._arena = 0
        self._next = 1
        self.opts = {"gast_fused": -1, "gast_scratch_budget": 256 << 20, "arena_limit": -1}

    def device_name(self):
        return "recording"

    def dtype(self):
        return self._dt

    def add_weight(self, a, engine_dtype):
        self._nweights += 1
        return self._nweights - 1

    def set_option(self, name, value):
        self.opts[name] = int(value)

    def get_option(self, name):
        return self.opts[name]

    def gast_fused(self, j, c, h, gc):
        mode = self.opts["gast_fused"]
        ok = self._dt != 0 and c % 16 == 0 and (h * gc) % 16 == 0
        return mode != 0 and ok and (mode == 1 or c <= 128)

    def gast_scratch_bytes(self, n, j, t, c, h, gc):
        if self.gast_fused(j, c, h, gc):
            return 0
        per_t = n * j * ((4 * c + 2 * h + h * gc) + 2 * c + h * gc + 3 * c) * (4 if self._dt == 0 else 2)
        tc = max(1, min(self.opts["gast_scratch_budget"] // max(per_t, 1), t))
        return tc * per_t + 1024

    def create_program(self, code, arena_bytes, max_n, in_per_n, out_per_n):
        code = np.asarray(code)
        assert code.dtype == np.int64
        RecordingEngine.log.append((code.copy(), int(arena_bytes), int(max_n), int(in_per_n), int(out_per_n)))
        self._arena = max(self._arena, int(arena_bytes))
        self._next += 1
        return self._next - 1

    def destroy_program(self, pid):
        pass

    def arena_bytes(self):
        return self._arena

    def run_host(self, pid, x, y, n, use_graph):
        y[...] = 0.0


def _digest(code, arena, max_n, in_per_n, out_per_n, extra=None) -> dict:
    code = np.ascontiguousarray(code, dtype="<i8")
    d = {"code": hashlib.sha256(code.tobytes()).hexdigest(), "words": int(code.size), "arena": arena,
         "max_n": max_n, "in_per_n": in_per_n, "out_per_n": out_per_n}
    if extra is not None:  # buffers / steps / output shape: the rest of what lower() returns
        d["layout"] = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:32]
    return d


def _weights(eng):
    # the Engine's public weights mapping; engines before #16 kept only the private dict
    return eng.weights if hasattr(type(eng), "weights") else eng._weights


def _backend(eng, precision: str, opts: dict):
    from gastrt.backends.cuda import CudaBackend

    be = CudaBackend(eng.plans, dict(_weights(eng)), 0, precision, _engine=RecordingEngine(0, DTYPE[precision]))
    for k, v in opts.items():
        be.set_option(k, v)
    return be


def _variants(plan_kinds: set, precision: str) -> dict:
    """Option sets: the defaults, and for GAST models in fp16 / bf16 the multi-kernel path with a
    scratch budget small enough to chunk time."""
    out = {"": {}}
    if "gast_block" in plan_kinds and precision != "fp32":
        out["-multi"] = {"gast_fused": 0, "gast_scratch_budget": 1 << 16}
    return out


def window_sequence(model: str, eng) -> dict:
    kinds = {op.kind for p in eng.plans.values() for op in p.ops}
    out = {}
    for precision in DTYPE:
        for var, opts in _variants(kinds, precision).items():
            be = _backend(eng, precision, opts)
            for pname, plan in sorted(eng.plans.items()):
                rf = plan.receptive_field
                shapes = [("window", n, rf) for n in (1, 8, 64)]
                if "sequence" in plan.modes:
                    shapes += [("sequence", 1, rf), ("sequence", 3, rf + 37)]
                for mode, n, t in shapes:
                    low = be.lowered(pname, mode, n, t)
                    extra = {"buffers": {k: [int(o), [int(s) for s in sh]] for k, (o, sh) in low.buffers.items()},
                             "steps": [[int(i) for i in s] for s in low.steps],
                             "out_tail": [int(v) for v in low.out_tail]}
                    out[f"{model}/{pname}/{mode}/n{n}/t{t}/{precision}{var}"] = _digest(
                        low.code, int(low.arena_bytes), int(low.max_n), int(low.in_per_n), int(low.out_per_n),
                        extra)
    return out


def streams(model: str, eng, precisions, slots: int, flips) -> dict:
    """Every bucket's program of a stream: pushes with 1, 2, ..., slots present slots."""
    out = {}
    for precision in precisions:
        for flip in flips:
            eng.backend = _backend(eng, precision, {})
            RecordingEngine.log = []
            st = eng.stream(slots=slots, flip=flip)
            rng = np.random.default_rng(0)
            j, f = st.num_joints, st.in_features
            for a in range(1, slots + 1):
                present = np.arange(slots) < a
                st.push((rng.standard_normal((slots, j, f)) * 0.5).astype(np.float32), present)
            for code, arena, max_n, in_per_n, out_per_n in RecordingEngine.log:
                key = f"stream/{model}/{precision}/slots{slots}{'-flip' if flip else ''}/nb{max_n}"
                out[key] = _digest(code, arena, max_n, in_per_n, out_per_n)
    return out


def tiny_engine(workdir: str, key: str, causal: bool = False) -> str:
    """A test model of _models.TINY with seeded random weights (no optimizer state: faster than
    _models.engine_file, same plans)."""
    import torch

    import gastrt
    from _models import TINY
    from gastrt.reference.factory import random_state_dict

    family, config = TINY[key]
    ck = os.path.join(workdir, f"{key}.bin")
    if not os.path.exists(ck):
        sd = {"model_pos": random_state_dict(family, config, seed=0)}
        if config.get("trajectory"):
            sd["model_traj"] = random_state_dict(family, config, seed=0, trajectory=True)
        torch.save(sd, ck)
    return gastrt.build(ck, os.path.join(workdir, f"{key}_{int(causal)}.gastrt"), causal=causal)


def collect(workdir: str) -> dict:
    """name -> digest of every golden program (builds the engines: needs torch)."""
    from _models import TINY

    from gastrt.bench import PRESETS, preset_engine

    import gastrt

    def load(path):
        return gastrt.load(path, backend="numpy")

    out = {}
    for name in PRESETS:
        eng = load(preset_engine(name))
        out.update(window_sequence(name, eng))
        if not name.startswith("rie"):
            out.update(streams(name, eng, ("fp32", "fp16"), 2, (False,)))
    for key in sorted(TINY):
        eng = load(tiny_engine(workdir, key))
        out.update(window_sequence("tiny-" + key, eng))
        if not key.startswith("rie"):
            out.update(streams("tiny-" + key, eng, tuple(DTYPE), 3, (False, True)))
    for key in ("gast17", "vp3d"):
        eng = load(tiny_engine(workdir, key, causal=True))
        out.update(streams(f"tiny-{key}-causal", eng, ("fp32",), 3, (False, True)))
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", help="directory put first on sys.path (the gastrt tree to record)")
    ap.add_argument("--out", default=GOLDEN)
    args = ap.parse_args(argv)
    if args.python:
        sys.path.insert(0, os.path.abspath(args.python))
    import gastrt

    with tempfile.TemporaryDirectory(prefix="gastrt-golden-") as d:
        got = collect(d)
    with open(args.out, "w") as fh:  # one program a line
        fh.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in got.items())
                 + "\n}\n")
    print(f"{len(got)} programs of {os.path.dirname(gastrt.__file__)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
