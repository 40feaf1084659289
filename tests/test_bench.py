"""`gastrt bench`: runs on tiny configurations, JSON follows the schema documented in
the gastrt.bench package docstring, plots are written, bad input fails cleanly (exit 2). No speed
assertions: this only checks that the numbers exist and are consistent."""
from __future__ import annotations

import io
import json
import os
import re
import sys
import time

import numpy as np
import pytest

import gastrt
from gastrt import bench
from gastrt.bench import contenders, measure, presets
from gastrt.cli import main

TINY = ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 8})
FAST = ["--repeat", "3", "--warmup", "0.05", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from gastrt.reference import factory

    p = str(tmp_path_factory.mktemp("bench") / "tiny.bin")
    torch.save(factory.make_checkpoint(*TINY, seed=3), p)
    return p


@pytest.fixture(scope="module")
def tiny_engine(tiny_ckpt, tmp_path_factory):
    return gastrt.build(tiny_ckpt, str(tmp_path_factory.mktemp("bench") / "tiny.gastrt"))


@pytest.fixture(scope="module")
def tiny_run(tiny_ckpt, tmp_path_factory):
    """One CLI run on the tiny checkpoint: gastrt vs eager at batch 1 and 3, JSON written."""
    out = str(tmp_path_factory.mktemp("bench") / "r.json")
    import contextlib
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main(["bench", tiny_ckpt, "--batch", "1,3", "--compare", "eager", "--json", out] + FAST)
    assert rc == 0, err.getvalue()
    with open(out) as f:
        return json.load(f), buf.getvalue(), err.getvalue()


# ---- the schema in the docstring ---------------------------------------------------------------

_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list, "object": dict}


def _doc_schema() -> dict[str, dict[str, tuple[str, str]]]:
    """bench.__doc__ sections '[name]' -> {key: (type, description)}."""
    doc = bench.__doc__
    start = doc.index("[top]")
    sections: dict[str, dict] = {}
    cur = None
    for line in doc[start:].splitlines():
        m = re.fullmatch(r"\[(\w+)\]", line.strip())
        if m:
            cur = sections.setdefault(m.group(1), {})
            continue
        if cur is None or not line.strip():
            continue
        parts = line.split(None, 2)
        assert len(parts) >= 2, line
        cur[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return sections


def _check(obj, section: str, schema: dict, where: str) -> None:
    spec = schema[section]
    assert isinstance(obj, dict), where
    assert set(obj) == set(spec), (where, sorted(set(obj) ^ set(spec)))
    for key, (typ, desc) in spec.items():
        v = obj[key]
        alts = typ.split("|")
        if v is None:
            assert "null" in alts, f"{where}.{key} is null, schema says {typ}"
            continue
        ok = False
        for t in alts:
            if t == "null":
                continue
            py = _TYPES[t]
            if t in ("int", "float") and isinstance(v, bool):
                continue
            if t == "int" and not isinstance(v, int):
                continue
            if isinstance(v, py):
                ok = True
        assert ok, f"{where}.{key} = {v!r} is not {typ}"
        sub = re.match(r"\[(\w+)\]", desc)
        if sub and sub.group(1) in schema:
            if typ.startswith("list"):
                for i, item in enumerate(v):
                    _check(item, sub.group(1), schema, f"{where}.{key}[{i}]")
            else:
                _check(v, sub.group(1), schema, f"{where}.{key}")


def validate(doc: dict) -> None:
    schema = _doc_schema()
    _check(doc, "top", schema, "doc")
    assert doc["schema"] == bench.SCHEMA and doc["schema_version"] == bench.SCHEMA_VERSION


def test_docstring_schema_is_complete():
    s = _doc_schema()
    assert {"top", "machine", "config", "agreement", "row", "latency_ms"} <= set(s)
    assert s["top"]["rows"][1].startswith("[row]")
    assert s["row"]["latency_ms"][1].startswith("[latency_ms]")


# ---- runs ---------------------------------------------------------------------------------------

def test_cli_tiny_checkpoint(tiny_run):
    doc, out, err = tiny_run
    validate(doc)
    # not a TTY: no bar, one line per batch
    assert err.splitlines() == [ln for ln in err.splitlines() if ln.startswith("bench: batch ")] and \
        [ln.split(":")[1] for ln in err.splitlines()] == [" batch 1", " batch 3"] and "\r" not in err
    c = doc["config"]
    assert c["target_kind"] == "checkpoint" and c["family"] == "gast" and c["receptive_field"] == 9
    assert c["batches"] == [1, 3] and c["compare"] == ["eager"] and c["threads"] == 1 and c["repeat"] == 3
    rows = doc["rows"]
    assert [(r["contender"], r["batch"]) for r in rows] == [("gastrt", 1), ("eager", 1), ("gastrt", 3), ("eager", 3)]
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert 1 <= r["n"] <= 3
        assert r["frames_per_call"] == r["batch"]
        assert r["throughput_fps"] == pytest.approx(r["batch"] / (lat["p50"] / 1e3))
        assert r["achieved_flops"] == pytest.approx(r["throughput_fps"] * r["flops_per_frame"])
        assert r["peak_mem_source"] in ("rss_hwm", "maxrss_delta") and r["peak_mem_bytes"] >= 0
        assert r["speedup_vs_eager"] > 0
        assert r["block"] >= 1 and r["latency_ms"]["p10"] <= lat["p50"]
        lo, hi = r["speedup_spread"]
        assert 0 < lo <= hi
    assert c["interleaved"] is True and doc["interrupted"] is False
    eng = gastrt.load(c["engine_path"], backend="numpy") if os.path.exists(c["engine_path"]) else None
    assert eng is None  # the temporary engine of a checkpoint target is cleaned up
    assert rows[1]["speedup_vs_eager"] == pytest.approx(1.0)
    assert doc["agreement"]["max_rel_err"] < 1e-4
    m = doc["machine"]
    assert m["cpu_cores"] >= 1 and m["numpy_version"] == np.__version__ and m["gastrt_version"] == gastrt.__version__
    assert m["gpu"] is None
    # the table
    assert "contender" in out and "p50 ms" in out and "eager" in out and "gastrt (" in out
    assert "wrote" in out


def test_flops_match_the_plan(tiny_ckpt, tiny_engine):
    eng = gastrt.load(tiny_engine, backend="numpy")
    doc = bench.run_bench(tiny_ckpt, batches=[2], mode="sequence", seq_len=20, compare=["eager"], flip=True,
                          repeat=2, warmup=0.0, threads=1)
    validate(doc)
    assert doc["config"]["seq_len"] == 20
    for r in doc["rows"]:
        assert r["status"] == "ok"
        assert r["frames_per_call"] == 40
        assert r["flops_per_frame"] == pytest.approx(2 * eng.flops_per_frame("sequence", 20))
    assert doc["agreement"]["max_rel_err"] < 1e-4  # sequence + flip: the same arithmetic as eager


def test_engine_file_alone(tiny_engine):
    doc = bench.run_bench(tiny_engine, batches=[1, 2], repeat=2, warmup=0.0, threads=1)
    validate(doc)
    assert doc["config"]["target_kind"] == "engine"
    assert [r["contender"] for r in doc["rows"]] == ["gastrt", "gastrt"]
    assert all(r["speedup_vs_eager"] is None for r in doc["rows"])
    assert any("engine file" in n for n in doc["notes"])
    assert doc["agreement"] is None


def _hide_torch(monkeypatch):
    """`import torch` raises ImportError from here on (as on an install without torch)."""
    monkeypatch.setitem(sys.modules, "torch", None)


def test_without_torch(tiny_engine, tmp_path, monkeypatch, capsys):
    _hide_torch(monkeypatch)
    monkeypatch.setenv("GASTRT_CACHE_DIR", str(tmp_path))  # no cached preset engines
    doc = bench.run_bench(tiny_engine, batches=[1], repeat=2, warmup=0.0, threads=1)
    validate(doc)
    assert doc["machine"]["torch_version"] is None
    assert any("torch is not installed" in n for n in doc["notes"])
    assert [r["contender"] for r in doc["rows"]] == ["gastrt"]
    # presets need torch: one clear line, exit 2
    assert main(["bench", "gast-27-causal", "--batch", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err and err.count("\n") == 1


def test_cached_preset_without_torch(tmp_path, monkeypatch):
    """A preset engine already in the cache runs without torch (gastrt alone)."""
    pytest.importorskip("torch")
    monkeypatch.setenv("GASTRT_CACHE_DIR", str(tmp_path))
    path = bench.preset_engine("videopose3d-27")
    _hide_torch(monkeypatch)
    doc = bench.run_bench("videopose3d-27", batches=[1], repeat=2, warmup=0.0, threads=1)
    validate(doc)
    assert doc["config"]["engine_path"] == path
    assert [r["contender"] for r in doc["rows"]] == ["gastrt"]
    assert any("torch is not installed" in n for n in doc["notes"])


def test_compile_failure_is_reported(tiny_ckpt, monkeypatch):
    torch = pytest.importorskip("torch")

    def broken(model, **kw):
        raise RuntimeError("no C++ compiler\nlong traceback text")

    monkeypatch.setattr(torch, "compile", broken)
    doc = bench.run_bench(tiny_ckpt, batches=[1, 2], repeat=2, warmup=0.0, threads=1, full=True)
    validate(doc)
    comp = [r for r in doc["rows"] if r["contender"] == "compile"]
    assert len(comp) == 2 and all(r["status"] == "skipped" for r in comp)
    assert "no C++ compiler" in comp[0]["error"] and "traceback" not in comp[0]["error"]
    assert all(r["status"] == "ok" for r in doc["rows"] if r["contender"] != "compile")
    assert any("torch.compile unavailable" in n for n in doc["notes"])

    # fails when called (as inductor does): that row fails, later batches are skipped
    def lazy(model, **kw):
        def f(x):
            raise RuntimeError("inductor exploded")
        return f

    monkeypatch.setattr(torch, "compile", lazy)
    doc = bench.run_bench(tiny_ckpt, batches=[1, 2], repeat=2, warmup=0.0, threads=1, full=True)
    validate(doc)
    comp = [r for r in doc["rows"] if r["contender"] == "compile"]
    assert [r["status"] for r in comp] == ["failed", "skipped"]
    assert "inductor exploded" in comp[0]["error"]
    assert "batch 1" in comp[1]["error"]
    assert "compile" in bench.format_table(doc)


@pytest.mark.skipif(not os.environ.get("GASTRT_TEST_COMPILE"),
                    reason="torch.compile takes minutes on a small CPU; set GASTRT_TEST_COMPILE=1")
def test_real_compile(tiny_ckpt):
    doc = bench.run_bench(tiny_ckpt, batches=[1, 2], repeat=3, warmup=0.05, threads=1, compare=["eager", "compile"])
    validate(doc)
    comp = [r for r in doc["rows"] if r["contender"] == "compile"]
    assert comp and all(r["status"] == "ok" for r in comp), comp
    assert comp[0]["first_call_s"] > comp[0]["latency_ms"]["p50"] / 1e3


def test_stream_mode(tiny_ckpt, tiny_engine):
    eng = gastrt.load(tiny_engine, backend="numpy")
    doc = bench.run_bench(tiny_ckpt, mode="stream", batches=[1, 3], compare=["eager"], repeat=3, warmup=0.02,
                          threads=1)
    validate(doc)
    g = [r for r in doc["rows"] if r["contender"] == "gastrt"]
    e = [r for r in doc["rows"] if r["contender"] == "eager"]
    assert [r["frames_per_call"] for r in g] == [1, 3]
    assert g[0]["flops_per_frame"] == pytest.approx(eng.stream(slots=1).flops_per_push())
    assert e[0]["flops_per_frame"] == pytest.approx(eng.flops_per_frame("window"))
    assert all(r["workspace_bytes"] is not None for r in g)  # the stream's ring buffers
    assert any("stream mode" in n for n in doc["notes"])


def test_plot(tiny_engine, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = str(tmp_path / "t.png")
    assert main(["bench", tiny_engine, "--batch", "1,2", "--compare", "none", "--plot", png] + FAST) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def test_plot_without_matplotlib(tiny_engine, tmp_path, monkeypatch, capsys):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = str(tmp_path / "t.png")
    assert main(["bench", tiny_engine, "--plot", png] + FAST) == 2
    err = capsys.readouterr().err
    assert "pip install 'gastrt[render]'" in err and err.count("\n") == 1
    assert not os.path.exists(png)


def test_preset_is_built_once(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("GASTRT_CACHE_DIR", str(tmp_path))
    doc = bench.run_bench("gast-27", batches=[1], compare=["eager"], repeat=2, warmup=0.0, threads=1)
    validate(doc)
    c = doc["config"]
    assert c["target_kind"] == "preset" and c["receptive_field"] == 27 and not c["causal"]
    assert os.path.dirname(c["engine_path"]) == str(tmp_path / "presets")
    assert gastrt.__version__ in os.path.basename(c["engine_path"])
    assert all(r["status"] == "ok" for r in doc["rows"])
    assert doc["agreement"]["max_rel_err"] < 1e-4  # the cached engine holds the eager model's weights
    mtime = os.path.getmtime(c["engine_path"])
    assert bench.preset_engine("gast-27") == c["engine_path"]
    assert os.path.getmtime(c["engine_path"]) == mtime  # second use: not rebuilt


def test_preset_names():
    assert len(bench.PRESETS) == 14
    for base in ("gast-27", "gast-81", "gast-243", "videopose3d-27", "videopose3d-81", "videopose3d-243", "rie-243"):
        assert base in bench.PRESETS and base + "-causal" in bench.PRESETS


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["gast-28"], "gast-27"),                              # lists the valid presets
    (["{engine}", "--batch", "1,x"], "--batch"),
    (["{engine}", "--batch", "0"], "positive"),
    (["{engine}", "--batch", ","], "--batch"),
    (["{engine}", "--repeat", "0"], "--repeat"),
    (["{engine}", "--threads", "0"], "--threads"),
    (["{engine}", "--warmup", "-1"], "--warmup"),
    (["{engine}", "--seq-len", "0", "--mode", "sequence"], "--seq-len"),
    (["{engine}", "--device", "tpu"], "device"),
    (["{engine}", "--device", "cuda:x"], "device"),
    (["{engine}", "--compare", "jit"], "--compare"),
    (["{engine}", "--precision", "fp16"], "fp32 engine"),
    (["{engine}", "--causal"], "--causal"),
    (["{engine}", "--json", "/nonexistent-dir/r.json"], "does not exist"),
    (["/nonexistent-dir/model.gastrt"], "not a built-in preset"),
])
def test_bad_input(args, needle, tiny_engine, capsys):
    argv = ["bench"] + FAST + [a.replace("{engine}", tiny_engine) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gastrt: error:") and err.count("\n") == 1, err
    assert needle in err, err


def test_missing_gpu(tiny_engine, capsys):
    if gastrt.cuda_available():
        pytest.skip("a GPU is visible")
    assert main(["bench", tiny_engine, "--device", "cuda"] + FAST) == 2
    err = capsys.readouterr().err
    assert "cuda" in err.lower() and err.count("\n") == 1


def test_corrupt_engine_file(tmp_path, capsys):
    p = tmp_path / "bad.gastrt"
    p.write_bytes(b"not an engine at all")
    assert main(["bench", str(p)] + FAST) == 2
    assert "not a gastrt engine" in capsys.readouterr().err


def test_parse_batches():
    assert bench.parse_batches("1, 8,8,64") == [1, 8, 64]
    assert bench.parse_batches([4, 2]) == [4, 2]
    for bad in ("", "1,,x", "-1", "2.5", [True]):
        with pytest.raises(gastrt.GastrtError):
            bench.parse_batches(bad)


# ---- progress bar ---------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar():
    s = _Tty()
    bar = measure.Progress(4, stream=s)
    bar.show("eager b=1", force=True)
    bar.step()
    bar.step()
    bar.show("eager b=8", force=True)
    bar.close()
    out = s.getvalue()
    assert "bench [" in out and "0/4 eager b=1" in out and "2/4 eager b=8" in out
    assert out.endswith("\r")  # the line is cleared at the end

    quiet = io.StringIO()  # not a TTY: nothing
    bar = measure.Progress(4, stream=quiet)
    bar.show("x", force=True)
    bar.close()
    assert quiet.getvalue() == ""


# ---- the timing helper of benchmarks/ (gastrt.bench.measure.interleaved) --------------------------

class _FakeTimer:
    """A clock that advances only when the timed callables tick it: exact, machine-independent."""

    def __init__(self):
        self.now = 0.0

    def sync(self):
        pass

    def start(self):
        self.t0 = self.now

    def stop(self):
        return self.now - self.t0


def test_interleaved_rounds_blocks_and_stats():
    clock = _FakeTimer()
    calls = []

    def fn(name, dt):
        def f():
            calls.append(name)
            clock.now += dt
        return f

    # a: 10 ms per call -> blocks of 0.05 s / 10 ms = 5 calls; b: 1 s per call -> blocks of 1
    t = measure.interleaved({"a": fn("a", 0.01), "b": fn("b", 1.0)}, warmup=2, block_s=0.05, min_rounds=4,
                            max_rounds=4, timer=clock)
    assert calls[:4] == ["a", "a", "b", "b"]                   # warm-up: 2 calls each, untimed
    # rounds take turns (the first one rotating), warm-up excluded
    assert calls[4:] == (["a"] * 5 + ["b"] + ["b"] + ["a"] * 5) * 2
    assert (t["a"].block, t["b"].block) == (5, 1) and t["a"].rounds == t["b"].rounds == 4
    assert t["a"].median == pytest.approx(0.01) and t["b"].median == pytest.approx(1.0)
    assert t["a"].spread == pytest.approx(0.0, abs=1e-9) and t["b"].ms == pytest.approx([1e3] * 4)

    # every call on its own (block_s=None): exactly max_rounds timed calls
    calls.clear()
    t = measure.interleaved({"a": fn("a", 0.01)}, warmup=3, block_s=None, min_rounds=7, max_rounds=7, timer=clock)
    assert len(calls) == 3 + 7 and t["a"].block == 1 and t["a"].rounds == 7


def test_time_rounds_stops_on_budget():
    clock = _FakeTimer()
    slow = {"s": lambda: time.sleep(0.02)}
    times = measure.time_rounds(slow, clock, max_rounds=1000, min_rounds=2, budget=0.05)["s"]
    assert 2 <= len(times) < 1000                             # stopped by the budget, after min_rounds
    times = measure.time_rounds(slow, clock, max_rounds=3, min_rounds=3, budget=0.0)["s"]
    assert len(times) == 3


def test_settle_waits_for_busy_threads_and_rounds_settle_between_turns(monkeypatch):
    """A contender's threads that keep spinning after its call (ONNX Runtime's pool) delay the
    next turn until the process is quiet; the wait is bounded; a quiet process waits one window."""
    assert measure.settle(max_s=1.0) < 0.5          # this process, for real: nothing spins

    class Clock:   # the process burns a whole core until t = 0.3 s, then nothing
        def __init__(self, busy_until):
            self.t, self.cpu, self.busy_until = 0.0, 0.0, busy_until

        def perf_counter(self):
            return self.t

        def process_time(self):
            return self.cpu

        def sleep(self, dt):
            self.cpu += max(0.0, min(self.t + dt, self.busy_until) - self.t)
            self.t += dt

    clock = Clock(0.3)
    monkeypatch.setattr(measure, "time", clock)
    assert 0.3 <= measure.settle(max_s=2.0) <= 0.3 + 0.011
    clock = Clock(1e9)                               # never quiet: max_s bounds the wait
    monkeypatch.setattr(measure, "time", clock)
    assert 0.5 <= measure.settle(max_s=0.5) <= 0.5 + 0.006
    monkeypatch.undo()
    # time_rounds settles before every turn when several callables take turns, never for one
    seen = []
    monkeypatch.setattr(measure, "settle", lambda *a, **k: seen.append(1) or 0.0)
    measure.time_rounds({"a": lambda: None, "b": lambda: None}, measure.CpuTimer(), max_rounds=3,
                        min_rounds=3, budget=0.0)
    assert len(seen) == 6
    seen.clear()
    measure.time_rounds({"a": lambda: None}, measure.CpuTimer(), max_rounds=3, min_rounds=3, budget=0.0)
    assert seen == []


# ---- benchmarks/run_all.py ------------------------------------------------------------------------

def test_run_all_section(tiny_run, tmp_path):
    """The RESULTS.md section of a run: header once, one table row per batch size."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "run_all.py")
    spec = importlib.util.spec_from_file_location("gastrt_run_all", path)
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    doc = tiny_run[0]
    text = run_all.section([doc], ["--presets", "x"], started=0.0, crashes=["rie-243 window: crashed"],
                           commit="0123456789abcdef", dirty=True, native="abc")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| preset")]
    assert len(rows) == len(doc["config"]["batches"])
    assert "0123456789 + uncommitted changes" in text and "rie-243 window: crashed" in text
    out = tmp_path / "RESULTS.md"
    run_all.append_results(text, str(out))
    run_all.append_results(text, str(out))
    body = out.read_text()
    assert body.startswith("# gastrt benchmark results") and body.count("# gastrt benchmark results") == 1
    assert body.count("## ") == 2
    # with TensorRT rows (a GPU run): three more columns, gastrt's speed-up over TensorRT
    import copy
    trt_doc = copy.deepcopy(doc)
    for r in [r for r in trt_doc["rows"] if r["contender"] == "gastrt"]:
        t = dict(r, contender="tensorrt", label="TensorRT", build_s=1.5)
        t["latency_ms"] = dict(r["latency_ms"], p50=r["latency_ms"]["p50"] * 2)
        trt_doc["rows"].append(t)
    trt_doc["agreement_tensorrt"] = {"batch": 1, "reference": "eager", "max_rel_err": 2e-6}
    text = run_all.section([trt_doc], [], started=0.0, crashes=[], commit=None, dirty=None, native="abc")
    hdr = next(ln for ln in text.splitlines() if ln.startswith("| preset"))
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| preset")]
    assert hdr.endswith("| x TensorRT |") and all(ln.endswith("| 2.00 |") for ln in rows)
    assert all(ln.count("|") == hdr.count("|") for ln in rows) and "TensorRT vs eager" in text


# ---- TensorRT contender (emulated TensorRT: tests/trt_emulator.py) ------------------------------
def test_tensorrt_contender_needs_a_gpu(tiny_engine):
    doc = bench.run_bench(tiny_engine, batches=[1], compare="tensorrt", repeat=2, warmup=0.0, threads=1)
    validate(doc)
    assert [r["contender"] for r in doc["rows"]] == ["gastrt"] and doc["agreement_tensorrt"] is None
    assert any("no TensorRT comparison: TensorRT runs on a GPU" in n for n in doc["notes"])
    assert doc["config"]["compare"] == ["tensorrt"]


@pytest.mark.parametrize("mode", ["window", "sequence", "stream"])
def test_tensorrt_contender_emulated(tiny_ckpt, tiny_engine, monkeypatch, mode):
    """The bench's TensorRT cell, built and run through the emulated TensorRT with CPU torch
    tensors standing in for CUDA ones: per-batch profiles, flip, the agreement check, the
    device-memory report."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from gastrt.backends import tensorrt_runner as tr
    from trt_emulator import Emulator

    emu = Emulator("10.9.0").install(monkeypatch)
    assert contenders.tensorrt_unavailable(True) is None and "GPU" in contenders.tensorrt_unavailable(False)

    monkeypatch.setattr(tr, "device_view", emu.device_view(torch))
    ref = gastrt.load(tiny_engine, backend="numpy")
    plan = ref.plans["pos"]
    rf, j = plan.receptive_field, plan.in_joints
    seq_len, b = 9, 3
    perm_in, perm_out = (torch.as_tensor(p) for p in ref.flip_permutations("pos"))
    g = contenders.Geom(mode, rf, plan.pad, ref.causal_shift, False, j, plan.out_joints, True, perm_in, perm_out,
                        {"sign_in": torch.tensor([-1.0, 1.0]), "sign_out": torch.tensor([-1.0, 1.0, 1.0])})
    trt_c = contenders.TensorRTContender(tiny_engine, "fp32", 0, mode, seq_len, rf, False, True)
    rng = np.random.default_rng(5)
    shape = (b, seq_len, j, 2) if mode == "sequence" else (b, rf, j, 2)
    sets = [rng.standard_normal(shape).astype(np.float32) * 0.4 for _ in range(2)]
    try:
        run = contenders.make_runner("tensorrt", ref, torch, {"tensorrt": trt_c}, g, sets, mode=mode, b=b,
                                     frames=b, on_cuda=True, tdev=torch.device("cpu"), dtype=torch.float32,
                                     flip=True, fpf=1.0)
        assert run.build_s is not None and run.build_s >= 0 and run.device_bytes() > 0
        (rec,) = emu.builds           # one engine: 'pos' only, the profile at exactly this batch (x2: flip)
        (name, prof), = rec["profile"].items()
        n = 2 * b
        if mode == "sequence":
            assert prof == [[1, rf, j, 2], [n, seq_len + rf - 1, j, 2], [n, seq_len + rf - 1, j, 2]]
        else:
            assert prof == [[n, rf, j, 2]] * 3
        for x in sets:
            y = run.call(torch.from_numpy(x)).numpy()
            if mode == "sequence":
                want = ref.lift_sequence(x, flip=True)
            else:
                want = ref.lift(x, flip=True)
            assert np.isfinite(y).all() and _rel(y.reshape(want.shape), want) < 1e-5
        # the agreement check against the eager model (stream mode has none, as for gastrt)
        tgt = presets.resolve_target(tiny_ckpt, None, False, True, torch, [])
        eager = contenders.build_eager(torch, tgt, mode, False, torch.device("cpu"), torch.float32)
        result = {"agreement": None, "agreement_tensorrt": None}
        shapes = {"gastrt": shape, "torch": shape}
        with torch.inference_mode():    # as run_bench
            contenders.prime(result, run, ref, torch, {"eager": eager}, g, {shape: sets}, shapes, mode, b, True,
                             torch.device("cpu"), torch.float32)
        a = result["agreement_tensorrt"]
        if mode == "stream":
            assert a is None
        else:
            assert a["reference"] == "eager" and a["batch"] == b and 0 <= a["max_rel_err"] < 1e-4
        assert all(s == 0 for _, _, s in emu.executions), "run_device follows the caller's stream (none here)"
    finally:
        trt_c.close()
    assert not emu.streams and not os.path.exists(trt_c.tmp.name)


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_tensorrt_build_args():
    c = contenders.TensorRTContender("e", "fp16", 0, "sequence", 100, 27, True, True)   # RIE sequences
    assert c.build_args(3) == dict(sequence=False, min_batch=1, opt_batch=600, max_batch=600)
    assert c.build_args(64)["max_batch"] == contenders.SEQ_CHUNK
    c.close()


# ---- interleaving, --full, Ctrl-C -----------------------------------------------------------------

def test_rounds_take_turns_and_rotate():
    from gastrt.bench.measure import CpuTimer, time_rounds
    order = []
    fns = {k: (lambda k=k: order.append(k)) for k in ("a", "b", "c")}
    t = time_rounds(fns, CpuTimer(), max_rounds=3, min_rounds=3, budget=0.0)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in t.items()} == {"a": 3, "b": 3, "c": 3}


def test_full_selects_the_long_sweep(tiny_ckpt):
    doc = bench.run_bench(tiny_ckpt, batches=[1], compare=["eager"], warmup=0.0, repeat=2, threads=1, full=True)
    from gastrt.bench import run as R
    assert doc["config"]["max_time_s"] == R.FULL_MAX_TIME and doc["config"]["repeat"] == 2
    quick = bench.run_bench(tiny_ckpt, batches=[1], compare=[], warmup=0.0, repeat=2)
    assert quick["config"]["max_time_s"] == R.DEFAULT_MAX_TIME
    assert quick["config"]["threads"] == 1  # the default run: a busy machine slows every contender alike
    from gastrt.backends.native import default_threads
    full = bench.run_bench(tiny_ckpt, batches=[1], compare=[], warmup=0.0, repeat=1, full=True)
    assert full["config"]["threads"] == default_threads()
    assert R.DEFAULT_COMPARE == "eager" and R.FULL_COMPARE is None  # compile only in the long sweep


def test_ctrl_c_keeps_the_batches_measured(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from gastrt.bench import run as R
    from gastrt.cli import main
    real, calls = R.time_cells, []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(R, "time_cells", interrupt_second)
    out = tmp_path / "partial.json"
    rc = main(["bench", tiny_ckpt, "--batch", "1,2,4", "--compare", "eager", "--repeat", "2", "--warmup", "0",
               "--threads", "1", "--json", str(out)])
    assert rc == 130
    doc = json.load(open(out))
    validate(doc)
    assert doc["interrupted"] is True and {r["batch"] for r in doc["rows"]} == {1}
    assert any("interrupted" in n for n in doc["notes"])
    assert "interrupted (Ctrl-C)" in capsys.readouterr().out


@pytest.mark.parametrize("vals", [(80.0, 85.0, 92.0), (81.0, 82.0, 83.0), (30.0, 200.0, 900.0), (10.0, 1e3, 1e5)])
def test_plot_keeps_tick_labels_on_a_narrow_range(vals):
    pytest.importorskip("matplotlib")
    from gastrt.bench.report import plot_figure
    rows = [{"status": "ok", "label": "gastrt", "batch": b, "throughput_fps": v} for b, v in zip((1, 8, 64), vals)]
    doc = {"config": {"seq_len": None, "mode": "window", "target": "t", "precision": "fp32", "device": "cpu"},
           "machine": {"gpu": None, "cpu_model": "x"}, "rows": rows}
    fig = plot_figure(doc)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
    assert len(labels) >= 2, labels  # a narrow range lost its labels before


def test_a_contender_failing_mid_rounds_fails_only_its_row(tiny_ckpt, monkeypatch):
    """eager raising inside the interleaved rounds: its row fails, gastrt's is timed without it."""
    from gastrt.bench import contenders as C
    real = C.make_runner
    calls = {"n": 0}

    def make_runner(name, *a, **k):
        run = real(name, *a, **k)
        if name == "eager":
            inner = run.call

            def flaky(x):
                calls["n"] += 1
                if calls["n"] > 3:   # fine through priming and warm-up, then it breaks in the rounds
                    raise RuntimeError("eager exploded mid-run")
                return inner(x)
            run.call = flaky
        return run
    monkeypatch.setattr(C, "make_runner", make_runner)
    doc = bench.run_bench(tiny_ckpt, batches=[1], compare=["eager"], repeat=5, warmup=0.0, threads=1)
    rows = {r["contender"]: r for r in doc["rows"]}
    assert rows["eager"]["status"] == "failed" and "exploded" in rows["eager"]["error"]
    assert rows["gastrt"]["status"] == "ok" and rows["gastrt"]["n"] >= 1


def test_json_output_may_not_replace_the_target(tiny_engine, capsys):
    from gastrt.cli import main
    before = open(tiny_engine, "rb").read()
    assert main(["bench", tiny_engine, "--json", tiny_engine] + FAST) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert open(tiny_engine, "rb").read() == before


# ---- ONNX Runtime / OpenVINO on the exported graph ----------------------------------------------

@pytest.mark.parametrize("mode,flip", [("window", True), ("sequence", False), ("stream", False)])
def test_onnx_peers_are_contenders(tiny_engine, mode, flip):
    """--compare ort,openvino: each peer times its row next to gastrt, and its output on the
    first input matches gastrt's (fp32, 1e-5) in agreement_peers; a missing runtime is a note."""
    pytest.importorskip("onnx")
    from gastrt.bench.onnx_peers import peer_unavailable

    doc = bench.run_bench(tiny_engine, batches=[1, 3], mode=mode, seq_len=40, compare="ort,openvino",
                          flip=flip, warmup=0.02, repeat=3, max_time=0.3, threads=1, progress=False)
    validate(doc)
    section = _doc_schema()["agreement_peers"]
    for peer in ("ort", "openvino"):
        why = peer_unavailable(peer)
        rows = [r for r in doc["rows"] if r["contender"] == peer]
        if why:
            assert not rows and any(why in n for n in doc["notes"])
            continue
        assert [r["batch"] for r in rows] == [1, 3] and all(r["status"] == "ok" for r in rows), rows
        assert all(r["throughput_fps"] > 0 for r in rows)
        a = doc["agreement_peers"][peer]
        _check(a, "agreement_peers", {"agreement_peers": section}, peer)
        assert a["max_rel_err"] <= 1e-5 and a["precision"] == "fp32"


def test_onnx_peer_engine_matches_gastrt(tiny_engine):
    """The peer backend behind an Engine: lift / lift_sequence with flip equal gastrt's (fp32)."""
    pytest.importorskip("onnx")
    from gastrt.bench.onnx_peers import peer_engine, peer_unavailable

    eng = gastrt.load(tiny_engine, threads=1)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, eng.receptive_field, 17, 2)) * 0.4).astype(np.float32)
    seq = (rng.standard_normal((31, 17, 2)) * 0.4).astype(np.float32)
    ran = 0
    for peer in ("ort", "openvino"):
        if peer_unavailable(peer):
            continue
        p = peer_engine(peer, eng, 1)
        for got, want in ((p.lift(x, flip=True), eng.lift(x, flip=True)),
                          (p.lift_sequence(seq, flip=True), eng.lift_sequence(seq, flip=True))):
            assert np.isfinite(got).all() and got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
        ran += 1
    if not ran:
        pytest.skip("neither onnxruntime nor openvino is installed")


def test_onnx_peer_unknown_or_on_cuda_is_a_note(tiny_engine):
    with pytest.raises(gastrt.GastrtError, match="unknown contender 'ov'"):
        bench.run_bench(tiny_engine, batches=[1], compare="ov", progress=False)
