"""Every atomic writer in gastrt leaves its whole output or nothing: no partial file, no temp file.
Each writer is also broken on purpose (os.replace fails; then the cleanup is skipped too) to show
that gastrt_testutil.assert_no_temp_files sees the temp file it leaves: the check can fail."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gastrt.errors import GastrtError
from gastrt_testutil import assert_no_temp_files, temp_files


# writer factories: make(src) prepares the inputs in ``src`` (outside the injected failures) and
# returns write(d) -> (output path, check of the written output)

def _engine_file(src):
    from gastrt.engine_file import cast_weight, read_engine, write_engine

    def write(d):
        out = os.path.join(d, "m.gastrt")
        write_engine(out, {"family": "test"}, {"w": cast_weight(np.arange(6.0).reshape(2, 3), "fp32")})
        return out, lambda: read_engine(out)[1]["w"].shape == (2, 3)
    return write


def _tensorrt_plan(src):
    from gastrt.backends.tensorrt_runner import read_plan, write_plan

    def write(d):
        out = os.path.join(d, "m.plan")
        write_plan(out, {"meta": {}}, {"window": b"\x01" * 300})
        return out, lambda: bytes(read_plan(out)[1]["window"]) == b"\x01" * 300
    return write


def _lift_result_data():
    from gastrt.lifting import LiftResult
    rng = np.random.default_rng(0)
    return LiftResult(poses_3d=rng.standard_normal((1, 4, 17, 3)).astype(np.float32),
                      valid=np.ones((1, 4), bool),
                      keypoints_2d=rng.standard_normal((1, 4, 17, 2)).astype(np.float32),
                      metadata={"size": [64, 48]})


def _lift_result(ext):
    def make(src):
        from gastrt.lifting import load_result, save_result
        r = _lift_result_data()

        def write(d):
            out = save_result(r, os.path.join(d, "r" + ext))
            return out, lambda: load_result(out).poses_3d.shape == (1, 4, 17, 3)
        return write
    return make


def _onnx(src):
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from gastrt.onnx_export import export_onnx
    from gastrt_testutil import small_engine
    _, engine = small_engine(src, "vp3d", "videopose3d", {
        "num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3],
        "channels": 8, "trajectory": False})

    def write(d):
        out = os.path.join(d, "m.onnx")
        info = export_onnx(engine, out)
        return out, lambda: os.path.getsize(out) == info["bytes"]
    return write


_BENCH = {"config": {"target": "t", "mode": "window", "precision": "fp32", "device": "cpu", "seq_len": 1},
          "machine": {"gpu": None, "cpu_model": "cpu"},
          "rows": [{"status": "ok", "label": "gastrt", "batch": b, "throughput_fps": 10.0 * b} for b in (1, 4)]}


def _bench_json(src):
    from gastrt.bench import write_json

    def write(d):
        out = os.path.join(d, "b.json")
        write_json(_BENCH, out)
        return out, lambda: json.load(open(out)) == _BENCH
    return write


def _bench_plot(src):
    pytest.importorskip("matplotlib")
    from gastrt.bench import write_plot

    def write(d):
        out = os.path.join(d, "b.png")
        write_plot(_BENCH, out)
        return out, lambda: open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    return write


def _render(src):
    pytest.importorskip("matplotlib")
    from gastrt.lifting import save_result
    from gastrt.render import render_result
    result = save_result(_lift_result_data(), os.path.join(src, "r.npz"))

    def write(d):
        out = os.path.join(d, "f.png")
        assert render_result(result, out, frame=1) == out
        return out, lambda: open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    return write


WRITERS = {"engine-file": _engine_file, "tensorrt-plan": _tensorrt_plan,
           "lift-npz": _lift_result(".npz"), "lift-json": _lift_result(".json"), "onnx": _onnx,
           "bench-json": _bench_json, "bench-plot": _bench_plot, "render": _render}


@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_leaves_output_or_nothing(tmp_path, monkeypatch, name):
    src = tmp_path / "src"
    src.mkdir()
    write = WRITERS[name](str(src))
    ok = tmp_path / "ok"
    ok.mkdir()
    out, valid = write(str(ok))
    assert valid(), name
    assert_no_temp_files(ok)

    real_replace = os.replace
    seen = []

    def failing_replace(src, dst, *a, **k):
        seen.append(os.path.basename(src))
        raise OSError(28, "No space left on device (injected)")

    # os.replace fails after the temp file is complete: the writer removes it
    failed = tmp_path / "failed"
    failed.mkdir()
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(GastrtError, match="injected"):  # a write failure names the path
        write(str(failed))
    assert len(seen) == 1, seen                                  # it did go through a temp file
    assert not os.path.exists(failed / os.path.basename(out))
    assert_no_temp_files(failed)

    # ... and with the cleanup skipped, the helper finds exactly that temp file
    broken = tmp_path / "broken"
    broken.mkdir()
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)
    with pytest.raises(GastrtError, match="injected"):  # a write failure names the path
        write(str(broken))
    monkeypatch.undo()
    assert os.replace is real_replace
    left = temp_files(broken, os.path.basename(out))
    assert left == [seen[-1]] == temp_files(broken), (left, seen)
    with pytest.raises(AssertionError, match="temp files left behind"):
        assert_no_temp_files(broken)
    with pytest.raises(AssertionError, match="temp files left behind"):
        assert_no_temp_files(broken, out)
    assert_no_temp_files(broken, "other" + os.path.splitext(out)[1])   # another output's prefix
