"""`gastrt build --precision auto` (gastrt.bench.precision): every candidate is checked against
the fp32 engine, timed side by side, and the choice is recorded in the engine and shown by info."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gastrt_testutil import save_checkpoint

pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt.bench import precision as auto  # noqa: E402
from gastrt.cli import main  # noqa: E402
from gastrt.engine_file import PRECISION_TOLERANCE, read_engine  # noqa: E402

TINY = {"gast": {"num_joints": 17, "filter_widths": [3, 3], "channels": 16},
        "videopose3d": {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3, 3],
                        "channels": 32, "trajectory": False},
        "rie": {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 16, "stage": 3}}


@pytest.mark.parametrize("family", list(TINY))
def test_auto_build_records_a_choice_within_tolerance(tmp_path, family):
    ck = save_checkpoint(tmp_path / "ck.bin", family, TINY[family], seed=4)
    out, choice = auto.build_auto(ck, str(tmp_path / "auto.gastrt"), seconds=0.5)
    meta, _ = read_engine(out)
    stored = meta["precision_choice"]
    assert meta["precision"] == choice["chosen"] == stored["chosen"]
    assert set(stored["candidates"]) == {"fp32", "fp16", "bf16"}
    for p, c in stored["candidates"].items():
        assert c["tolerance"] == PRECISION_TOLERANCE[p]
        assert np.isfinite(c["rel_err"]) and np.isfinite(c["speedup"]) and c["window_ms"] > 0
        assert c["within"] == (c["rel_err"] <= c["tolerance"])
    assert stored["candidates"]["fp32"]["rel_err"] == 0 and stored["candidates"]["fp32"]["speedup"] == 1
    chosen = stored["candidates"][choice["chosen"]]
    assert chosen["within"]
    if choice["chosen"] != "fp32":
        assert chosen["speedup"] >= auto.AUTO_MARGIN
    # the engine written is the chosen precision's: same outputs as a plain build of it
    plain = gastrt.build(ck, str(tmp_path / "plain.gastrt"), precision=choice["chosen"])
    a, b = gastrt.load(out, backend="numpy"), gastrt.load(plain, backend="numpy")
    x = np.random.default_rng(3).standard_normal((3, a.receptive_field, 17, 2)).astype(np.float32) * 0.3
    np.testing.assert_array_equal(a.lift(x), b.lift(x))


class _T:
    def __init__(self, s):
        self.median, self.spread = s, 0.01


def test_nothing_within_tolerance_keeps_fp32(tmp_path, monkeypatch):
    """The selection can say no: with zero tolerance every 16-bit engine is over it, however fast."""
    ck = save_checkpoint(tmp_path / "ck.bin", "gast", TINY["gast"], seed=5)
    paths = {p: gastrt.build(ck, str(tmp_path / f"{p}.gastrt"), precision=p) for p in ("fp32", "fp16", "bf16")}
    ms = {"fp32": 10.0, "fp16": 2.0, "bf16": 1.0}
    monkeypatch.setattr(auto, "interleaved", lambda fns, **kw: {k: _T(ms[k.split("/")[0]] / 1e3) for k in fns})
    choice = auto.choose_precision(paths, seconds=0.3, tolerance={"fp32": 1e-5, "fp16": 0.0, "bf16": 0.0})
    assert choice["chosen"] == "fp32"
    assert not choice["candidates"]["fp16"]["within"] and not choice["candidates"]["bf16"]["within"]
    assert choice["candidates"]["fp16"]["rel_err"] > 0


def test_a_faster_candidate_within_tolerance_is_chosen(tmp_path, monkeypatch):
    """With the timing replaced by a known answer, the rule picks the fastest within tolerance."""
    ck = save_checkpoint(tmp_path / "ck.bin", "gast", TINY["gast"], seed=6)
    paths = {p: gastrt.build(ck, str(tmp_path / f"{p}.gastrt"), precision=p) for p in ("fp32", "fp16", "bf16")}
    ms = {"fp32": 10.0, "fp16": 6.0, "bf16": 5.0}
    monkeypatch.setattr(auto, "interleaved", lambda fns, **kw: {k: _T(ms[k.split("/")[0]] / 1e3) for k in fns})
    assert auto.choose_precision(paths)["chosen"] == "bf16"
    assert auto.choose_precision(paths, tolerance={"fp32": 1e-5, "fp16": 3e-3, "bf16": 0.0})["chosen"] == "fp16"
    ms.update(fp16=9.8, bf16=9.9)                        # within the noise margin: fp32 stays
    assert auto.choose_precision(paths)["chosen"] == "fp32"


def test_a_nan_in_any_check_is_never_within_tolerance(tmp_path, monkeypatch):
    """Found by review: the candidate's error was max(window, sequence) in Python, which keeps a
    finite window error over a NaN sequence error, so a NaN engine could be chosen."""
    ck = save_checkpoint(tmp_path / "ck.bin", "gast", TINY["gast"], seed=8)
    paths = {p: gastrt.build(ck, str(tmp_path / f"{p}.gastrt"), precision=p) for p in ("fp32", "fp16", "bf16")}
    ms = {"fp32": 10.0, "fp16": 2.0, "bf16": 1.0}
    monkeypatch.setattr(auto, "interleaved", lambda fns, **kw: {k: _T(ms[k.split("/")[0]] / 1e3) for k in fns})
    errs = iter([1e-6, float("nan")] * 2)             # per candidate: window fine, sequence NaN
    monkeypatch.setattr(auto, "rel_err", lambda got, ref: next(errs))
    choice = auto.choose_precision(paths, seconds=0.3)
    assert choice["chosen"] == "fp32"
    assert not choice["candidates"]["fp16"]["within"] and not choice["candidates"]["bf16"]["within"]


def test_cli_build_auto_and_info_say_which(tmp_path, capsys):
    ck = save_checkpoint(tmp_path / "ck.bin", "gast", TINY["gast"], seed=7)
    out = tmp_path / "m.gastrt"
    assert main(["build", str(ck), "-o", str(out), "--precision", "auto"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("precision")][0]
    assert "chosen by --precision auto on" in line and "fp32 1.00x" in line
    assert main(["info", str(out)]) == 0
    assert "chosen by --precision auto" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision_choice"]["mode"] == "auto"
    # the bench of that engine says how its precision was chosen (table and JSON)
    assert main(["bench", str(out), "--compare", "none", "--batch", "1", "--repeat", "3", "--warmup", "0",
                 "--max-time", "0.1", "--json", str(tmp_path / "b.json")]) == 0
    assert any(ln.startswith("precision ") and "chosen by --precision auto on" in ln
               for ln in capsys.readouterr().out.splitlines())
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["config"]["precision_choice"].startswith("chosen by --precision auto on")
    # a plain build says nothing more than its precision
    assert main(["build", str(ck), "-o", str(tmp_path / "p.gastrt"), "--precision", "bf16"]) == 0
    assert [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("precision")] == ["precision  bf16"]


@pytest.mark.parametrize("choice", [
    {"candidates": {"fp32": {"speedup": 10 ** 400}, "fp16": {"rel_err": 10 ** 400, "speedup": "fast"}},
     "cpu": "c" * 100_000, "threads": [1]},
    {"candidates": {"fp32": None, "zz": {}}}, {"candidates": 5}, "auto", None,
])
def test_describe_choice_takes_whatever_a_file_holds(choice):
    """Found by review: `gastrt info` formatted a crafted record's numbers as floats (OverflowError)
    and printed its 100 kB cpu string."""
    line = auto.describe_choice(choice)
    assert line is None or (len(line) < 300 and "\n" not in line)
