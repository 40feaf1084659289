import argparse
import io
import json
import os
import re

import numpy as np
import pytest

import gastrt.lifting as lifting
from gastrt.keypoints import convert as cv
from gastrt.lifting import LiftWarning, lift_file, load_result, save_result
from kp_helpers import (BASEBALL17, BASEBALL133, FakeEngine, coco_pose, wholebody_pose,
                        write_gast_json)

W, H = 1280, 720


def _expected_input(coco_seq):
    return cv.normalize_screen(cv.coco_to_h36m(coco_seq), W, H)


def test_lift_equals_lift_sequence_on_converted_array(tmp_path):
    seq = np.stack([coco_pose(t) for t in range(6)])
    p = write_gast_json(tmp_path / "k.json", {t + 1: [seq[t]] for t in range(6)})
    eng = FakeEngine(17)
    r = lift_file(eng, p, size=(W, H), flip=False)
    assert len(eng.calls) == 1 and eng.calls[0] == ((1, 6, 17, 2), False)
    x = _expected_input(seq)
    np.testing.assert_allclose(r.keypoints_2d[0], x, atol=1e-6)
    np.testing.assert_allclose(r.poses_3d, FakeEngine(17).lift_sequence(x[None]), atol=1e-6)
    assert r.poses_3d.dtype == np.float32 and r.valid.all() and r.poses_world is None
    md = r.metadata
    assert md["format"] == "coco" and md["size"] == [W, H] and md["family"] == "gast"
    assert md["container"] == "gast-json" and md["flip"] is False


def test_flip_passes_through(tmp_path):
    p = write_gast_json(tmp_path / "k.json", {1: [coco_pose(0)], 2: [coco_pose(1)]})
    eng = FakeEngine(17)
    r1 = lift_file(eng, p, size="1280x720")              # default flip=True
    r0 = lift_file(eng, p, size="1280x720", flip=False)
    assert [c[1] for c in eng.calls] == [True, False]
    np.testing.assert_allclose(r1.poses_3d[..., 2] - r0.poses_3d[..., 2], 0.25, atol=1e-6)


def test_multi_person_one_batched_call_equals_per_person(tmp_path):
    frames = {t + 1: [coco_pose(t, 0), coco_pose(t, 1)] for t in range(5)}
    p = write_gast_json(tmp_path / "two.json", frames)
    eng = FakeEngine(17)
    r = lift_file(eng, p, size=(W, H))
    assert len(eng.calls) == 1 and eng.calls[0][0] == (2, 5, 17, 2)
    for i in range(2):
        pi = write_gast_json(tmp_path / f"p{i}.json",
                             {t + 1: [coco_pose(t, i)] for t in range(5)})
        ri = lift_file(FakeEngine(17), pi, size=(W, H))
        np.testing.assert_allclose(r.poses_3d[i], ri.poses_3d[0], atol=1e-6)
    assert r.metadata["people"] == [0, 1]
    r1 = lift_file(FakeEngine(17), p, size=(W, H), people=1)
    assert r1.poses_3d.shape[0] == 1


def test_missing_frames_are_interpolated_and_flagged(tmp_path):
    seq = np.stack([coco_pose(t) for t in range(6)])
    # frames 3 and 4 (t=2,3) absent, frame 6 (t=5) with all-zero scores, t=0 nose NaN
    frames = {t + 1: [seq[t]] for t in (0, 1, 4)}
    p = write_gast_json(tmp_path / "gap.json", frames)
    doc = json.load(open(p))
    doc["data"][0]["skeleton"][0]["pose"][0] = [float("nan"), float("nan")]
    doc["data"].append({"frame_index": 6, "skeleton": [{"pose": seq[5].tolist(),
                                                        "score": [[0.0]] * 17,
                                                        "bbox": [1, 2, 3, 4]}]})
    with open(p, "w") as f:
        json.dump(doc, f)  # json writes NaN literally, as Python's json reads it
    r = lift_file(FakeEngine(17), p, size=(W, H))
    np.testing.assert_array_equal(r.valid[0], [True, True, False, False, True, False])
    # coco_pose moves by +3 px per frame on both axes: t=1 -> t=4 is linear, so the filled
    # frames equal the real poses; t=5 holds t=4; the t=0 nose holds t=1's nose
    filled = seq.copy()
    filled[5] = seq[4]
    filled[0, 0] = seq[1, 0]
    np.testing.assert_allclose(r.keypoints_2d[0], _expected_input(filled), atol=1e-6)


def test_absent_person_skipped_with_warning(tmp_path):
    p = write_gast_json(tmp_path / "k.json", {1: [None, coco_pose(0)], 2: [None, coco_pose(1)]})
    with pytest.warns(LiftWarning, match="person 0 is never detected"):
        r = lift_file(FakeEngine(17), p, size=(W, H))
    assert r.poses_3d.shape[0] == 1 and r.metadata["people"] == [1]


def test_size_from_file_and_required(tmp_path):
    seq = np.stack([coco_pose(t) for t in range(3)])
    p = write_gast_json(tmp_path / "k.json", {t + 1: [seq[t]] for t in range(3)})
    with pytest.raises(ValueError, match=r"k\.json.*--size"):
        lift_file(FakeEngine(17), p)
    out = {"v": {"custom": [seq]}}
    meta = {"layout_name": "coco", "num_joints": 17, "video_metadata": {"v": {"w": W, "h": H}}}
    npz = tmp_path / "vp.npz"
    np.savez_compressed(npz, positions_2d=out, metadata=meta)
    r = lift_file(FakeEngine(17), npz)
    np.testing.assert_allclose(r.keypoints_2d[0], _expected_input(seq), atol=1e-6)
    r2 = lift_file(FakeEngine(17), npz, size=(2 * W, 2 * H))  # explicit size wins
    assert r2.metadata["size"] == [2 * W, 2 * H]


def test_wholebody_to_toe_engine_and_to_body_engine(tmp_path):
    p = write_gast_json(tmp_path / "w.json", {t + 1: [wholebody_pose(t)] for t in range(3)})
    wb = np.stack([wholebody_pose(t) for t in range(3)])
    r19 = lift_file(FakeEngine(19), p, size=(W, H))
    np.testing.assert_allclose(r19.keypoints_2d[0],
                               cv.normalize_screen(cv.wholebody_to_h36m_toes(wb), W, H), atol=1e-6)
    r17 = lift_file(FakeEngine(17), p, size=(W, H))
    np.testing.assert_allclose(r17.keypoints_2d[0], _expected_input(wb[:, :17]), atol=1e-6)


def test_coco_input_engine_skips_h36m_conversion(tmp_path):
    seq = np.stack([coco_pose(t) for t in range(3)])
    p = write_gast_json(tmp_path / "k.json", {t + 1: [seq[t]] for t in range(3)})
    eng = FakeEngine(17, family="videopose3d", metadata={"input_layout": "coco"})
    r = lift_file(eng, p, size=(W, H))
    np.testing.assert_allclose(r.keypoints_2d[0], cv.normalize_screen(seq, W, H), atol=1e-6)


def test_world(tmp_path):
    p = write_gast_json(tmp_path / "k.json", {t + 1: [coco_pose(t), coco_pose(t, 1)]
                                              for t in range(4)})
    r = lift_file(FakeEngine(17), p, size=(W, H), world=True)
    assert r.metadata["world"] is True
    for i in range(2):
        w = cv.camera_to_world(r.poses_3d[i])
        w[..., 2] -= w[..., 2].min()
        np.testing.assert_allclose(r.poses_world[i], w, atol=1e-6)
        assert r.poses_world[i][..., 2].min() == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize("ext", [".npz", ".json"])
def test_save_and_load_round_trip(tmp_path, ext):
    p = write_gast_json(tmp_path / "k.json", {1: [coco_pose(0)], 3: [coco_pose(2)]})
    r = lift_file(FakeEngine(17), p, size=(W, H), world=True)
    out = tmp_path / f"out{ext}"
    save_result(r, out)
    assert sorted(os.listdir(tmp_path)) == ["k.json", f"out{ext}"]  # no temp file left
    back = load_result(out)
    np.testing.assert_allclose(back.poses_3d, r.poses_3d, atol=1e-5)
    np.testing.assert_allclose(back.poses_world, r.poses_world, atol=1e-5)
    np.testing.assert_array_equal(back.valid, r.valid)
    assert back.metadata["format"] == "coco" and back.metadata["size"] == [W, H]
    if ext == ".npz":
        with np.load(out) as z:
            assert z["poses_3d"].dtype == np.float32 and z["valid"].dtype == bool
            assert json.loads(str(z["metadata"]))["world"] is True


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    p = write_gast_json(tmp_path / "k.json", {1: [coco_pose(0)]})
    r = lift_file(FakeEngine(17), p, size=(W, H))

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(ValueError, match="disk full"):  # GastrtError naming the path
        save_result(r, tmp_path / "out.npz")
    assert os.listdir(tmp_path) == ["k.json"]               # no output, no temp file
    with pytest.raises(ValueError, match=r"\.npz or \.json"):
        save_result(r, tmp_path / "out.txt")


# --- bad inputs ---------------------------------------------------------------------------------

def _bad_files(tmp_path):
    (tmp_path / "malformed.json").write_text('{"label": "x", "data": [')
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / "k.csv").write_text("1,2\n")
    write_gast_json(tmp_path / "j26.json", {1: [np.ones((26, 2)) * 5]})
    write_gast_json(tmp_path / "allmissing.json", {1: [np.zeros((17, 2))],
                                                   2: [np.zeros((17, 2))]})
    (tmp_path / "nodata.json").write_text('{"label": "x", "data": []}')
    return {
        "malformed.json": "malformed JSON",
        "empty.json": "empty",
        "other.json": "unrecognised JSON",
        "k.csv": "unknown keypoint file type",
        "j26.json": "26 joints",
        "allmissing.json": "every frame is missing",
        "nodata.json": "no frames",
        "nothere.json": "no such file",
    }


def test_bad_inputs_raise_helpful_value_errors(tmp_path):
    for name, needle in _bad_files(tmp_path).items():
        with pytest.raises(ValueError) as e:
            lift_file(FakeEngine(17), tmp_path / name, size=(W, H), fmt="auto")
        msg = str(e.value)
        assert needle in msg and (name in msg), (name, msg)
    p = write_gast_json(tmp_path / "c.json", {1: [coco_pose(0)]})
    with pytest.raises(ValueError, match=r"c\.json.*foot keypoints"):
        lift_file(FakeEngine(19), p, size=(W, H))
    with pytest.raises(ValueError, match="unknown keypoint format"):
        lift_file(FakeEngine(17), p, size=(W, H), fmt="halpe")
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        lift_file(FakeEngine(17), p, size="wide")
    with pytest.raises(ValueError, match="engine file not found"):
        lift_file(tmp_path / "missing.gastrt", p, size=(W, H))
    np.save(tmp_path / "a.npy", np.stack([coco_pose(t) for t in range(3)]))
    with pytest.raises(ValueError, match="--format coco or --format h36m"):
        lift_file(FakeEngine(17), tmp_path / "a.npy", size=(W, H))
    r = lift_file(FakeEngine(17), tmp_path / "a.npy", size=(W, H), fmt="coco")
    assert r.poses_3d.shape == (1, 3, 17, 3)


# --- CLI -----------------------------------------------------------------------------------------

def _parser():
    ap = argparse.ArgumentParser(prog="gastrt")
    lifting.add_parsers(ap.add_subparsers(dest="command"))
    return ap


@pytest.fixture
def fake_load(monkeypatch):
    engines = []

    def load(path, device=None):
        eng = FakeEngine(17)
        eng.device_asked = device
        engines.append(eng)
        return eng, os.fspath(path)
    monkeypatch.setattr(lifting, "_load_engine", load)
    return engines


def test_cli_lift(tmp_path, fake_load, capsys):
    p = write_gast_json(tmp_path / "k.json", {t + 1: [coco_pose(t)] for t in range(4)})
    out = tmp_path / "o.json"
    args = _parser().parse_args(["lift", "m.gastrt", p, "-o", str(out), "--size", "1280x720",
                                 "--no-flip", "--world", "--people", "1", "--device", "cuda:1"])
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    assert np.asarray(doc["poses_3d"]).shape == (1, 4, 17, 3)
    assert doc["metadata"]["flip"] is False and "poses_world" in doc
    assert fake_load[0].calls[0][1] is False and fake_load[0].device_asked == "cuda:1"
    # what the numbers are: joint names, units, frames
    m = doc["metadata"]
    assert m["joint_names"][:4] == ["Hip", "RHip", "RKnee", "RFoot"] and len(m["joint_names"]) == 17
    assert m["units"] == "m" and "root-relative" in m["coordinate_frame"] and "z = 0" in m["world_frame"]
    assert "wrote" in capsys.readouterr().out


def test_cli_lift_errors_leave_no_output(tmp_path, fake_load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write_gast_json(tmp_path / "k.json", {1: [coco_pose(0)]})
    (tmp_path / "malformed.json").write_text("{")
    ap = _parser()
    for argv, needle in ((["lift", "m.gastrt", p], "--size WIDTHxHEIGHT"),
                         (["lift", "m.gastrt", p, "--size", "10x10", "-o", "x.txt"], ".npz or .json"),
                         (["lift", "m.gastrt", p, "--size", "10x10", "-o", p], "overwrite the input"),
                         (["lift", "m.gastrt", str(tmp_path / "malformed.json"), "--size", "10x10"],
                          "malformed JSON")):
        args = ap.parse_args(argv)
        with pytest.raises(ValueError, match=re.escape(needle)):
            args.func(args)
    assert sorted(os.listdir(tmp_path)) == ["k.json", "malformed.json"]
    with pytest.raises(SystemExit):
        ap.parse_args(["lift", "m.gastrt", p, "--format", "halpe"])
    # default output name lands in the working directory
    args = ap.parse_args(["lift", "m.gastrt", p, "--size", "10x10"])
    with pytest.raises(ValueError, match=r"outside the 10x10 frame .*--size 1280x720"):
        args.func(args)                             # poses at ~500 px: 10x10 is a wrong size
    args = ap.parse_args(["lift", "m.gastrt", p, "--size", "1280x720"])
    assert args.func(args) == 0 and os.path.exists("k_3d.npz")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar():
    quiet = io.StringIO()
    bar = lifting.ProgressBar(quiet, min_total=1)
    bar("read", 5, 10)
    assert quiet.getvalue() == ""                 # not a TTY: silent
    tty = _Tty()
    bar = lifting.ProgressBar(tty, min_total=10, width=10)
    bar("read", 3, 5)                             # short input: silent
    assert tty.getvalue() == ""
    for i in range(1, 21):
        bar("read", i, 20)
    s = tty.getvalue()
    assert "[##########] 20/20" in s and s.endswith("\n") and "\r" in s


# --- real data ----------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(BASEBALL17), reason="shared baseball data not present")
def test_real_baseball_files(tmp_path):
    from gastrt.keypoints.formats import read_keypoints
    eng = FakeEngine(17)
    r = lift_file(eng, BASEBALL17, size=(1920, 1080), world=True)
    raw = read_keypoints(BASEBALL17).keypoints[0]
    assert r.poses_3d.shape == (1, 277, 17, 3) and r.valid.all()
    np.testing.assert_allclose(r.keypoints_2d[0],
                               cv.normalize_screen(cv.coco_to_h36m(raw), 1920, 1080), atol=1e-6)
    save_result(r, tmp_path / "b.npz")
    if os.path.exists(BASEBALL133):
        r19 = lift_file(FakeEngine(19), BASEBALL133, size=(1920, 1080))
        assert r19.poses_3d.shape == (1, 277, 19, 3) and np.isfinite(r19.poses_3d).all()


# --- the real engine (torch writes the checkpoint) ----------------------------------------------

def _real_engine(tmp_path, preset):
    torch = pytest.importorskip("torch")
    from gastrt import build, load
    from gastrt.reference.factory import PRESETS, random_state_dict
    family, config = PRESETS[preset]
    ckpt = tmp_path / f"{preset}.bin"
    torch.save({"model_pos": random_state_dict(family, config, seed=0)}, ckpt)
    eng_path = tmp_path / f"{preset}.gastrt"
    build(os.fspath(ckpt), os.fspath(eng_path))
    return eng_path, load(os.fspath(eng_path))


@pytest.mark.parametrize("preset", ["gast-27", "gast-27-toes", "videopose3d-27-humaneva"])
def test_real_engine_integration(tmp_path, preset):
    eng_path, eng = _real_engine(tmp_path, preset)
    pose = wholebody_pose if eng.num_joints == 19 else coco_pose
    frames = {t + 1: [pose(t), pose(t, 1)] for t in range(20)}
    del frames[10]
    p = write_gast_json(tmp_path / "k.json", frames)
    for flip in (False, True):
        r = lift_file(eng_path, p, size=(W, H), flip=flip)
        ref = np.asarray(eng.lift_sequence(r.keypoints_2d, flip=flip))
        np.testing.assert_allclose(r.poses_3d, ref, atol=1e-5)
    for i in range(2):  # multi-person == per person
        one = np.asarray(eng.lift_sequence(r.keypoints_2d[i], flip=True))
        np.testing.assert_allclose(r.poses_3d[i], one, rtol=1e-4, atol=1e-4)
    assert r.poses_3d.shape == (2, 20, eng.num_joints_out, 3)
    assert not r.valid[:, 9].any() and r.valid[:, 8].all()
    assert r.metadata["family"] == eng.family and r.metadata["engine"] == os.fspath(eng_path)
    em = r.metadata["engine_metadata"]
    assert em["family"] == eng.family and em["receptive_field"] == eng.receptive_field and em["source_sha256"]
    assert len(r.metadata["joint_names"]) == eng.num_joints_out and r.metadata["units"] == "m"
    if preset == "videopose3d-27-humaneva":  # COCO-17 input, no H36M conversion
        assert r.metadata["engine_input"] == "coco"
        np.testing.assert_allclose(r.keypoints_2d[0, 0], cv.normalize_screen(coco_pose(0), W, H),
                                   atol=1e-6)
    out = tmp_path / "r.npz"
    save_result(r, out)
    pytest.importorskip("matplotlib")
    from gastrt.render import render_result
    assert os.path.exists(render_result(out, tmp_path / "r.png"))


def test_cli_lift_video_was_renamed(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["lift", "m.gastrt", "k.json", "--video", "clip.mp4"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--npz-video" in err and "render RESULT --overlay" in err
    args = _parser().parse_args(["lift", "m.gastrt", "k.json", "--npz-video", "S1"])
    assert args.npz_video == "S1" and args.device == "cpu"


# ---- the image size against the keypoints' extent ------------------------------------------------

@pytest.mark.parametrize("size,needle", [
    ("720x1280", "a size that fits: --size 1280x720"),          # width and height swapped
    ("640x480", "a size that fits: --size 1280x720"),           # too small: the next common size
    ("400x300", "a size that fits: --size 1280x720"),
])
def test_wrong_size_is_one_error_that_says_which_fits(tmp_path, size, needle):
    p = write_gast_json(tmp_path / "k.json", {t: [coco_pose(t) + np.float32([500, 0])] for t in range(1, 8)})
    with pytest.raises(ValueError, match=re.escape(needle)) as ei:
        lift_file(FakeEngine(17), p, size=size)
    assert "outside the " + size + " frame" in str(ei.value) and "--no-size-check" in str(ei.value)
    # the override lifts anyway; the right size lifts
    assert lift_file(FakeEngine(17), p, size=size, check_size=False).poses_3d.shape[1] == 7
    assert lift_file(FakeEngine(17), p, size=(W, H)).poses_3d.shape[1] == 7


def test_size_check_margin_and_negative_coordinates(tmp_path):
    # a person cut by the frame: joints a little outside it are fine
    edge = coco_pose(0) + np.float32([W - 520, 0])              # x up to ~W + 40
    p = write_gast_json(tmp_path / "e.json", {1: [edge], 2: [edge]})
    assert lift_file(FakeEngine(17), p, size=(W, H)).poses_3d.shape[1] == 2
    # normalised / crop-relative coordinates
    neg = (coco_pose(0) - np.float32([500, 400])) * np.float32(3)
    q = write_gast_json(tmp_path / "n.json", {1: [neg]})
    with pytest.raises(ValueError, match="negative pixel coordinates"):
        lift_file(FakeEngine(17), q, size=(W, H))


def test_size_recorded_in_the_file_must_be_positive(tmp_path):
    kp = np.stack([coco_pose(t) for t in range(5)])[None]        # (1, 5, 17, 2)
    path = tmp_path / "k.npz"
    np.savez(path, keypoints=kp, size=np.array([-1280, 720]))
    with pytest.raises(ValueError, match="image size recorded in the file is not usable"):
        lift_file(FakeEngine(17), path, fmt="coco")


def test_cli_no_size_check_flag(tmp_path, fake_load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write_gast_json(tmp_path / "k.json", {1: [coco_pose(0)]})
    ap = _parser()
    args = ap.parse_args(["lift", "m.gastrt", p, "--size", "100x100"])
    with pytest.raises(ValueError, match="outside the 100x100 frame"):
        args.func(args)
    args = ap.parse_args(["lift", "m.gastrt", p, "--size", "100x100", "--no-size-check"])
    assert args.func(args) == 0


def test_suggested_size_fits(tmp_path):
    """The size the error suggests lifts the same file (no suggestion that fails its own check)."""
    tall = coco_pose(0) * np.float32([1.0, 2.3])                  # y up to ~1430: a portrait video
    p = write_gast_json(tmp_path / "t.json", {1: [tall], 2: [tall]})
    with pytest.raises(ValueError, match=r"--size (\d+)x(\d+)") as ei:
        lift_file(FakeEngine(17), p, size=(1920, 1080))
    w, h = re.search(r"a size that fits: --size (\d+)x(\d+)", str(ei.value)).groups()
    assert lift_file(FakeEngine(17), p, size=(int(w), int(h))).poses_3d.shape[1] == 2


# ---- --max-gap: long stretches without any detection (#15) -------------------------------------
def _gap_file(tmp_path, first=1, gap_from=11, gap_to=400, last=420):
    """GAST-JSON with detections at frames first..gap_from-1 and gap_to..last (1-based)."""
    frames = {fi: [coco_pose(0)] for fi in list(range(first, gap_from)) + list(range(gap_to, last + 1))}
    return write_gast_json(tmp_path / "gap.json", frames)


def test_longest_gap_finds_the_run():
    from gastrt.keypoints import longest_gap
    present = np.ones((2, 12, 3), bool)
    assert longest_gap(present) == (0, 0)
    present[:, 3:5] = False
    present[0, 7:11] = False                      # person 1 still seen: not a gap
    assert longest_gap(present) == (3, 2)
    present[1, 7:11] = False
    assert longest_gap(present) == (7, 4)
    present[:, :6] = False                        # before the first detection: held, not a gap
    assert longest_gap(present) == (7, 4)
    present[:, 11:] = False                       # after the last one: held too
    assert longest_gap(present) == (0, 0)
    present[:, :] = False
    assert longest_gap(present) == (0, 0)


def test_gap_longer_than_ten_receptive_fields_is_one_error(tmp_path):
    p = _gap_file(tmp_path)                       # frames 11..399 (1-based) absent: 389 > 10 x 27
    with pytest.raises(ValueError) as ei:
        lift_file(FakeEngine(17), p, size=(W, H))
    msg = str(ei.value)
    assert "video frames 10..398 (counted from 0; 389 frames) have no detection" in msg
    assert "--max-gap" in msg and "gap.json" in msg
    assert len(msg) < 300
    r = lift_file(FakeEngine(17), p, size=(W, H), max_gap=389)   # at the limit: lifted, gap flagged
    assert r.poses_3d.shape[1] == 420 and not r.valid[0, 10:399].any() and r.valid[0, 399:].all()
    assert lift_file(FakeEngine(17), p, size=(W, H), max_gap=0).poses_3d.shape[1] == 420
    with pytest.raises(ValueError, match="at most 388 are filled"):
        lift_file(FakeEngine(17), p, size=(W, H), max_gap=388)
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match=r"max_gap \(--max-gap\) must be"):
            lift_file(FakeEngine(17), p, size=(W, H), max_gap=bad)


def test_gap_default_follows_the_receptive_field(tmp_path):
    p = _gap_file(tmp_path, gap_from=11, gap_to=211)              # 200 empty frames
    assert lift_file(FakeEngine(17), p, size=(W, H)).poses_3d.shape[1] == 420   # 200 <= 270
    eng = FakeEngine(17)
    eng.receptive_field = 9                                         # 200 > 90
    with pytest.raises(ValueError, match=r"frames 10\.\.209 \(counted from 0; 200 frames\)"):
        lift_file(eng, p, size=(W, H))


def test_gaps_at_the_ends_are_held_not_refused(tmp_path):
    """A person who enters late or leaves early: those frames hold the nearest detection (no
    interpolation), so they are not a gap; the engine's default applies to prepare_keypoints too."""
    import gastrt
    p = write_gast_json(tmp_path / "late.json", {fi: [coco_pose(0)] for fi in range(1001, 1011)})
    r = lift_file(FakeEngine(17), p, size=(W, H))
    assert r.poses_3d.shape[1] == 1010 and r.valid[0].sum() == 10
    kp = np.zeros((400, 17, 2), np.float32)
    kp[:5] = kp[395:] = coco_pose(0)
    eng = FakeEngine(17)
    eng.receptive_field = 9
    with pytest.raises(gastrt.GastrtError, match=r"video frames 5\.\.394"):
        gastrt.prepare_keypoints(kp, size=(W, H), layout="coco17", engine=eng)
    assert gastrt.prepare_keypoints(kp, size=(W, H), layout="coco17").valid.sum() == 10   # no engine: no limit
    with pytest.raises(gastrt.GastrtError, match="max_gap"):
        gastrt.prepare_keypoints(kp, size=(W, H), layout="coco17", max_gap=-1)


def test_a_size_far_too_small_is_a_size_error_even_without_the_size_check(tmp_path):
    """--no-size-check cannot push pixel-scale values into the engine: the error names --size."""
    import gastrt
    kp = np.stack([coco_pose(t) for t in range(5)])
    with pytest.raises(gastrt.GastrtError, match=r"size is far too small.*--size"):
        gastrt.prepare_keypoints(kp, size=(16, 9), layout="coco17", check_size=False)


def test_cli_max_gap(tmp_path, fake_load, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = _gap_file(tmp_path)
    ap = _parser()
    args = ap.parse_args(["lift", "m.gastrt", p, "--size", "1280x720", "-o", "o.npz"])
    with pytest.raises(ValueError, match="--max-gap"):
        args.func(args)
    assert not os.path.exists("o.npz")
    args = ap.parse_args(["lift", "m.gastrt", p, "--size", "1280x720", "-o", "o.npz", "--max-gap", "400"])
    assert args.func(args) == 0 and os.path.exists("o.npz")
    with pytest.raises(SystemExit):
        ap.parse_args(["lift", "m.gastrt", p, "--max-gap", "-3"])
    assert "expected an integer >= 0" in capsys.readouterr().err


# ---- gastrt.prepare_keypoints: the public array helper (#15) -------------------------------------
def test_prepare_keypoints_on_an_array_equals_lift_of_the_same_file(tmp_path):
    import gastrt
    rng = np.random.default_rng(5)
    kp = np.stack([np.stack([coco_pose(t, p) for t in range(7)]) for p in range(2)])     # (2, 7, 17, 2)
    kp = kp + rng.uniform(-2, 2, kp.shape).astype(np.float32)
    kp[1, 3] = 0                                                                        # person 1 missing at t=3
    path = tmp_path / "k.npy"
    np.save(path, kp)
    via_file = lift_file(FakeEngine(17), path, size=(W, H), fmt="coco", flip=False)
    prep = gastrt.prepare_keypoints(kp, size=(W, H), layout="coco17", engine=FakeEngine(17))
    np.testing.assert_array_equal(prep.keypoints_2d, via_file.keypoints_2d)
    np.testing.assert_array_equal(prep.valid, via_file.valid)
    assert prep.valid.tolist()[1] == [True, True, True, False, True, True, True]
    # (T, K, 2) gives one person; scores as a third channel mark joints missing
    one = gastrt.prepare_keypoints(kp[0], size="1280x720", layout="coco")
    np.testing.assert_array_equal(one.keypoints_2d[0], via_file.keypoints_2d[0])
    sc = np.concatenate([kp[0], np.full(kp.shape[1:3] + (1,), 0.9, np.float32)], axis=-1)
    sc[2, :, 2] = 0
    assert gastrt.prepare_keypoints(sc, size=(W, H), layout="coco17").valid.tolist() == \
        [[True, True, False, True, True, True, True]]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(kpts=np.zeros((5, 17, 2)), size=(W, H), layout="coco17"), "every frame is missing"),
    (dict(kpts=np.ones((5, 17)), size=(W, H), layout="coco17"), "expected (T, J, 2|3)"),
    (dict(kpts=np.ones((5, 17, 2)) * 100, layout="coco17"), "--size"),
    (dict(kpts=np.ones((5, 17, 2)) * 100, size=(W, H), layout="nope"), "unknown layout 'nope'"),
    (dict(kpts=np.array([["a", "b"]] * 17), size=(W, H)), "expected numbers"),
    (dict(kpts=np.ones((5, 17, 2)) * 5000, size=(W, H), layout="coco17"), "outside the 1280x720 frame"),
])
def test_prepare_keypoints_bad_arrays_are_one_error(kwargs, needle):
    import gastrt
    kp = kwargs.pop("kpts")
    with pytest.raises(gastrt.GastrtError) as ei:
        gastrt.prepare_keypoints(kp, **kwargs)
    assert needle in str(ei.value) and "\n" not in str(ei.value)
