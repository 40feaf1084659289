"""`gastrt render --overlay VIDEO`: the 2D keypoints drawn on the source video's frames, in
pixel space and frame-aligned (result frame t on video frame frame_start + t)."""
import os

import numpy as np
import pytest

from gastrt.keypoints import coco_to_h36m, normalize_screen
from gastrt.lifting import LiftResult, save_result
from gastrt_testutil import assert_no_temp_files
from kp_helpers import coco_pose

pytest.importorskip("matplotlib")
iio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")

W, H = 64, 48
T = 6                    # result frames (the video has 12)
DOT = 6                  # the moving square's side


def dot_at(i):
    """Top-left pixel (x, y) of the white square in video frame i."""
    return 4 + 4 * i, 36


def write_video(path, n=12, size=(W, H)):
    w, h = size
    writer = iio.get_writer(path, format="FFMPEG", fps=10, macro_block_size=8)
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        x, y = dot_at(i)
        f[y:y + DOT, x:x + DOT] = 255
        writer.append_data(f)
    writer.close()
    return path


def pixels(t, p):
    """H36M-17 keypoints (17, 2) in video pixels: person p in its own column, rows 4..30 (the
    dot's rows 36..41 stay clear)."""
    k = coco_to_h36m(coco_pose(t, 0)) - np.array([440.0, 190.0])
    return (k / np.array([120.0, 430.0]) * np.array([16.0, 26.0])
            + np.array([8.0 + 28 * p, 4.0])).astype(np.float32)


def make_result(path, frame_start=None, size=(W, H)):
    px = np.stack([np.stack([pixels(t, p) for t in range(T)]) for p in range(2)])
    kp = normalize_screen(px, *size)
    poses = np.zeros((2, T, 17, 3), np.float32)
    poses[..., :2] = (px - px[:, :, :1]) / 20.0
    poses[..., 2] = 0.1 * np.arange(17) / 17
    valid = np.ones((2, T), bool)
    valid[1, 3] = False  # a gap for person 1
    meta = {"size": list(size), "engine_input": "h36m"}
    if frame_start is not None:
        meta["frame_start"] = frame_start
    save_result(LiftResult(poses, valid, kp, meta), path)
    return path, px


@pytest.fixture
def video(tmp_path):
    return write_video(os.fspath(tmp_path / "v.mp4"))


def sampler(fig, ax):
    """Draw the figure once -> rgb(x, y): its pixel (RGB) where data point (x, y) of ax lands."""
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3]

    def rgb(x, y):
        dx, dy = ax.transData.transform((x, y))
        return buf[int(round(buf.shape[0] - dy)), int(round(dx))].astype(int)
    return rgb


@pytest.mark.parametrize("frame_start", [None, 3])
def test_overlay_draws_keypoints_on_the_aligned_frame(tmp_path, video, frame_start):
    from gastrt.render import render_figure
    res, px = make_result(tmp_path / "r.npz", frame_start)
    start = frame_start or 0
    t = 2
    fig = render_figure(res, frame=t, overlay=video)
    ax2 = fig.axes[0]
    assert f"video frame {start + t}" in ax2.get_title()
    rgb = sampler(fig, ax2)
    # the video frame is there, and it is frame start + t: the dot is where that frame has it
    x, y = dot_at(start + t)
    assert rgb(x + DOT / 2 - 0.5, y + DOT / 2 - 0.5).min() > 180
    x0, _ = dot_at(start + t - 1)
    assert rgb(x0 + 0.5, y + DOT / 2 - 0.5).max() < 60  # the last frame's spot
    # the keypoints are drawn in pixel space: the (black) video is coloured at each joint...
    for p in range(2):
        for j in (0, 3, 10, 16):
            assert rgb(*px[p, t, j]).max() > 60, (p, j)
    # ...and nowhere near them the video shows through unchanged
    assert rgb(62, 2).max() < 40


def test_overlay_mp4_gif_png_frames_and_size(tmp_path, video):
    from gastrt.render import render_figure, render_result
    res, _ = make_result(tmp_path / "r.npz")
    size = render_figure(res, overlay=video).canvas.get_width_height()
    assert size[0] % 16 == 0 and size[1] % 16 == 0
    out = render_result(res, tmp_path / "o.mp4", overlay=video)
    assert out.endswith("o.mp4")
    reader = iio.get_reader(out, format="FFMPEG")
    try:
        assert tuple(reader.get_meta_data()["size"]) == size
        assert reader.get_meta_data()["fps"] == pytest.approx(10)  # the video's by default
        assert sum(1 for _ in reader) == T
    finally:
        reader.close()
    from PIL import Image
    gif = render_result(res, tmp_path / "o.gif", overlay=video, person=0, fps=5)
    with Image.open(gif) as im:
        assert im.n_frames == T and im.size == size
    png = render_result(res, tmp_path / "o.png", overlay=video, frame=5)
    with Image.open(png) as im:
        assert im.size == size
    assert_no_temp_files(tmp_path)


def test_overlay_bad_videos_are_one_line_errors(tmp_path, video, capsys):
    from gastrt.cli import main
    from gastrt.render import render_result
    res, _ = make_result(tmp_path / "r.npz", frame_start=8)  # needs video frames 8..13
    with pytest.raises(ValueError, match=r"v\.mp4: the video has 12 frames; the result needs "
                                         r"frame 12"):
        render_result(res, tmp_path / "o.gif", overlay=video)
    assert not os.path.exists(tmp_path / "o.gif")
    good, _ = make_result(tmp_path / "g.npz")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(ValueError, match=r"bad\.mp4: not a readable video"):
        render_result(good, tmp_path / "o.png", overlay=bad)
    with pytest.raises(ValueError, match=r"nothing\.mp4: no such video file"):
        render_result(good, tmp_path / "o.png", overlay=tmp_path / "nothing.mp4")
    wide = write_video(os.fspath(tmp_path / "wide.mp4"), n=T, size=(96, 48))
    with pytest.raises(ValueError, match="96x48 but the keypoints were detected on 64x48"):
        render_result(good, tmp_path / "o.png", overlay=wide)
    with pytest.raises(ValueError, match="overwrite (the|an) input"):
        render_result(good, video, overlay=video)
    assert os.path.getsize(video) > 0
    assert main(["render", os.fspath(good), "-o", os.fspath(tmp_path / "o.png"),
                 "--overlay", os.fspath(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.mp4" in err[0]
    assert not os.path.exists(tmp_path / "o.png")
    assert_no_temp_files(tmp_path)


def test_overlay_of_a_resized_video_scales_the_keypoints(tmp_path):
    """Keypoints detected on a 64x48 copy, drawn on the 128x96 original: same aspect, scaled."""
    from gastrt.render import render_figure
    big = write_video(os.fspath(tmp_path / "big.mp4"), n=T, size=(2 * W, 2 * H))
    res, px = make_result(tmp_path / "r.npz")
    fig = render_figure(res, frame=1, overlay=big)
    rgb = sampler(fig, fig.axes[0])
    for j in (0, 10, 16):
        assert rgb(*(2 * px[0, 1, j] + 0.5)).max() > 60
