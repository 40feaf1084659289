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
    monkeypatch.setattr(render, "_ffmpeg_exe", lambda: None)  # neither PATH nor imageio-ffmpeg
    written = render.render_result(result_npz, tmp_path / "a.mp4")
    assert written.endswith("a.gif") and os.path.exists(written)
    assert not os.path.exists(tmp_path / "a.mp4")
    assert_no_temp_files(tmp_path)


def test_render_bad_arguments(tmp_path, result_npz):
    pytest.importorskip("matplotlib")
    from gastrt.render import render_result
    with pytest.raises(ValueError, match="--person must be in 0..1"):
        render_result(result_npz, tmp_path / "x.png", person=5)
    with pytest.raises(ValueError, match="--person must be in 0..1, got 2"):
        render_result(result_npz, tmp_path / "x.png", person=[0, 2])
    with pytest.raises(ValueError, match="--frame must be in 0..3"):
        render_result(result_npz, tmp_path / "x.png", frame=4)
    with pytest.raises(ValueError, match="--fps must be positive"):
        render_result(result_npz, tmp_path / "x.gif", fps=0)
    with pytest.raises(ValueError, match="overwrite (the|an) input"):
        render_result(result_npz, os.fspath(result_npz)[:-4] + ".png",
                      overlay=os.fspath(result_npz)[:-4] + ".png")
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
    with pytest.raises(ValueError, match=r"pip install 'gastrt\[render\]'"):
        render_result(result_npz, tmp_path / "x.png")
    assert not os.path.exists(tmp_path / "x.png")


# --- the figure: axes in units, ground plane, view, people ------------------------------------

def _lines3(ax3):
    return [l for l in ax3.lines if l.get_zorder() == 2]


def test_render_figure_axes_ground_and_view(tmp_path, result_npz):
    pytest.importorskip("matplotlib")
    from gastrt.lifting import load_result
    from gastrt.render import DEFAULT_AZIM, DEFAULT_ELEV, render_figure
    fig = render_figure(result_npz, frame=1)
    ax2, ax3 = fig.axes[0], fig.axes[1]
    assert ax3.name == "3d"
    assert (ax3.get_xlabel(), ax3.get_ylabel(), ax3.get_zlabel()) == ("x (m)", "y (m)", "z, up (m)")
    assert any(t.get_text() for t in ax3.get_xticklabels())  # numbers on the ticks, not blanked
    assert (ax3.elev, ax3.azim) == (DEFAULT_ELEV, DEFAULT_AZIM["world"])
    # the ground plane: at the lowest detected joint of the clip, the bottom of the box
    res = load_result(result_npz)
    ground = float(res.poses_world[..., 2][res.valid].min())
    assert [c for c in ax3.collections if c.get_gid() == "ground"]
    assert ax3.get_zlim()[0] == pytest.approx(ground)
    assert "frame 2/4" in ax2.get_title()

    # units from the metadata; camera space when there are no world poses; a set view
    res.metadata["units"] = "mm"
    res.poses_world = None
    fig = render_figure(res, frame=0, elev=30, azim=-20)
    ax3 = fig.axes[1]
    assert ax3.get_xlabel() == "x (mm)" and ax3.get_zlabel() == "−y, up (mm)"
    assert "depth" in ax3.get_ylabel()
    assert (ax3.elev, ax3.azim) == (30, -20)
    cam = res.poses_3d
    assert ax3.get_zlim()[0] == pytest.approx(float((-cam[..., 1])[res.valid].min()), abs=1e-5)
    assert render_figure(res).axes[1].azim == DEFAULT_AZIM["camera"]


def test_render_people_colours_sides_and_gaps(result_npz):
    pytest.importorskip("matplotlib")
    from gastrt.render import render_figure
    fig = render_figure(result_npz, frame=0)
    lines = _lines3(fig.axes[1])
    n = len(lines) // 2  # two people, one line per bone each
    p0 = {tuple(l.get_color()) for l in lines[:n]}
    p1 = {tuple(l.get_color()) for l in lines[n:]}
    assert not p0 & p1                   # one colour family per person
    assert len(p0) == 3 and len(p1) == 3  # centre, right (darker), left (lighter)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["person 0", "person 1"]
    assert all(l.get_alpha() == 1.0 for l in lines)
    # frame 2 is a gap for both: drawn faded, and said so
    fig = render_figure(result_npz, frame=2)
    assert all(l.get_alpha() < 0.5 for l in _lines3(fig.axes[1]))
    assert "not detected" in fig.axes[1].get_legend().get_texts()[0].get_text()
    # --person selects; a person keeps their colour
    one = render_figure(result_npz, frame=0, person=[1])
    assert [t.get_text() for t in one.axes[1].get_legend().get_texts()] == ["person 1"]
    assert {tuple(l.get_color()) for l in _lines3(one.axes[1])} == p1


def test_render_progress_and_cli_person_list(tmp_path, result_npz, capsys):
    pytest.importorskip("matplotlib")
    from gastrt.cli import main
    from gastrt.render import render_result
    calls = []
    render_result(result_npz, tmp_path / "a.gif", progress=lambda *a: calls.append(a))
    assert calls == [("render", t, 4) for t in range(1, 5)]
    assert main(["render", os.fspath(result_npz), "-o", os.fspath(tmp_path / "b.png"),
                 "--person", "1", "--person", "0,1", "--elev", "20", "--azim", "10"]) == 0
    assert os.path.exists(tmp_path / "b.png")
    assert main(["render", os.fspath(result_npz), "-o", os.fspath(tmp_path / "c.png"),
                 "--person", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--person must be in 0..1" in err[0]


def test_root_relative_people_are_placed_by_their_2d_position():
    """Human3.6M models output every person at the origin: drawn side by side instead, in the
    image's left-to-right order."""
    pytest.importorskip("matplotlib")
    import numpy as np
    from gastrt.keypoints import coco_to_h36m, normalize_screen
    from gastrt.lifting import LiftResult
    from gastrt.render import render_figure
    px = np.stack([np.stack([coco_to_h36m(coco_pose(t, p)) for t in range(3)])
                   for p in (2, 0)])                     # person 0 right of person 1
    kp = normalize_screen(px, 1280, 720)
    rel = (kp - kp[:, :, :1]) * 2.0
    poses = np.concatenate([rel, np.zeros(rel.shape[:-1] + (1,), np.float32)], axis=-1)
    res = LiftResult(poses, np.ones((2, 3), bool), kp, {"size": [1280, 720]})
    lines = _lines3(render_figure(res, frame=1).axes[1])
    xs = [np.concatenate([l.get_data_3d()[0] for l in part])
          for part in (lines[:len(lines) // 2], lines[len(lines) // 2:])]
    assert xs[1].max() < xs[0].min()                     # apart, and in the image's order
    one = _lines3(render_figure(res, frame=1, person=0).axes[1])  # one person stays put
    assert abs(np.mean([l.get_data_3d()[0] for l in one])) < 0.3
