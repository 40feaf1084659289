import os
import sys

import pytest

from gastrt.lifting import lift_file, save_result
from gastrt_testutil import assert_no_temp_files
from kp_helpers import FakeEngine, coco_pose, write_gast_json


@pytest.fixture
def result_npz(tmp_path):
    p = write_gast_json(tmp_path / "k.json", {t + 1: [coco_pose(t), coco_pose(t, 1)]
                                              for t in range(4) if t != 2})
    out = tmp_path / "r.npz"
    save_result(lift_file(FakeEngine(17), p, size=(1280, 720), world=True), out)
    return out


def test_render_png_and_gif(tmp_path, result_npz):
    pytest.importorskip("matplotlib")
    from gastrt.render import render_result
    png = render_result(result_npz, tmp_path / "f.png", person=1, frame=2)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    gif = render_result(result_npz, tmp_path / "a.gif", fps=10)
    with open(gif, "rb") as f:
        assert f.read(6) in (b"GIF89a", b"GIF87a")
    assert_no_temp_files(tmp_path)


def test_render_mp4_falls_back_to_gif_without_ffmpeg(tmp_path, result_npz, monkeypatch):
    pytest.importorskip("matplotlib")
    import gastrt.render as render
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    written = render.render_result(result_npz, tmp_path / "a.mp4")
    assert written.endswith("a.gif") and os.path.exists(written)
    assert not os.path.exists(tmp_path / "a.mp4")
    assert_no_temp_files(tmp_path)


def test_render_bad_arguments(tmp_path, result_npz):
    pytest.importorskip("matplotlib")
    from gastrt.render import render_result
    with pytest.raises(ValueError, match="--person must be in 0..1"):
        render_result(result_npz, tmp_path / "x.png", person=5)
    with pytest.raises(ValueError, match=r"\.mp4, \.gif or \.png"):
        render_result(result_npz, tmp_path / "x.avi")
    with pytest.raises(ValueError, match="no such file"):
        render_result(tmp_path / "nothing.npz", tmp_path / "x.png")
    assert not os.path.exists(tmp_path / "x.png")


def test_render_without_matplotlib_names_the_extra(tmp_path, result_npz, monkeypatch):
    from gastrt.render import render_result
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")
                or m.startswith("mpl_toolkits")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ValueError, match=r"pip install gastrt\[render\]"):
        render_result(result_npz, tmp_path / "x.png")
    assert not os.path.exists(tmp_path / "x.png")
