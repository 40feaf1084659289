import json
import os

import numpy as np
import pytest

from gastrt.keypoints import convert as cv
from gastrt.keypoints.formats import detect_container, read_keypoints, read_videopose3d
from kp_helpers import BASEBALL17, BASEBALL133, coco_pose, wholebody_pose, write_gast_json


def test_gast_json_coco17(tmp_path):
    # frame 2 absent, person 1 only in frame 3, an empty-bbox skeleton in frame 1
    p = write_gast_json(tmp_path / "k.json", {
        1: [coco_pose(0), None],
        3: [coco_pose(2), coco_pose(2, 1)],
        4: [coco_pose(3)],
    })
    assert detect_container(p) == "gast-json"
    r = read_keypoints(p)
    assert r.container == "gast-json" and r.size is None and r.extra["label"] == "test"
    assert r.keypoints.shape == (2, 4, 17, 2) and r.scores.shape == (2, 4, 17)
    np.testing.assert_array_equal(r.keypoints[0, 0], coco_pose(0))
    np.testing.assert_array_equal(r.keypoints[0, 1], 0)       # frame 2 absent
    np.testing.assert_array_equal(r.keypoints[1, 0], 0)       # empty bbox skipped
    np.testing.assert_array_equal(r.keypoints[1, 2], coco_pose(2, 1))
    assert r.scores[0, 0, 0] == pytest.approx(0.9) and r.scores[0, 1, 0] == 0


def test_gast_json_wholebody(tmp_path):
    p = write_gast_json(tmp_path / "w.json", {1: [wholebody_pose(0)], 2: [wholebody_pose(1)]})
    r = read_keypoints(p)
    assert r.keypoints.shape == (1, 2, 133, 2)
    assert cv.guess_format(r.num_joints, r.container) == "wholebody"


def _openpose_person(coco, n):
    """Embed a COCO-17 pose in OpenPose order with n = 18 or 25 joints (x, y, c flat)."""
    inv = cv.OPENPOSE18_TO_COCO17 if n == 18 else cv.BODY25_TO_COCO17
    arr = np.zeros((n, 3), np.float32)
    arr[inv, :2] = coco
    arr[inv, 2] = 0.8
    if n == 25:
        arr[19:25, :2] = wholebody_pose()[17:23]
        arr[19:25, 2] = 0.7
    return arr.reshape(-1).tolist()


@pytest.mark.parametrize("n", [18, 25])
def test_openpose_directory(tmp_path, n):
    d = tmp_path / "op"
    d.mkdir()
    for t in (0, 1, 3):  # frame 2 has no file, frame 1 has nobody
        people = [] if t == 1 else [{"person_id": [-1],
                                     "pose_keypoints_2d": _openpose_person(coco_pose(t), n)}]
        (d / f"clip_{t:012d}_keypoints.json").write_text(json.dumps(
            {"version": 1.3, "people": people}))
    assert detect_container(str(d)) == "openpose-json"
    r = read_keypoints(str(d))
    assert r.keypoints.shape == (1, 4, n, 2) and r.fmt_hint == "openpose"
    sel = cv.plan_layout("openpose", n, 17).select
    np.testing.assert_array_equal(r.keypoints[0, 0][sel], coco_pose(0))
    np.testing.assert_array_equal(r.keypoints[0, 3][sel], coco_pose(3))
    assert (r.scores[0, 1] == 0).all() and (r.scores[0, 2] == 0).all()


def test_openpose_single_file(tmp_path):
    f = tmp_path / "one_000000000007_keypoints.json"
    people = [{"pose_keypoints_2d": _openpose_person(coco_pose(0, i), 25)} for i in range(2)]
    f.write_text(json.dumps({"people": people}))
    r = read_keypoints(str(f))
    assert r.keypoints.shape == (2, 1, 25, 2) and r.container == "openpose-json"


def test_mmpose_inferencer_and_demo_layouts(tmp_path):
    def inst(t, i=0):
        return {"keypoints": coco_pose(t, i).tolist(), "keypoint_scores": [0.9] * 17,
                "bbox": [[0, 0, 1, 1]], "bbox_score": 0.99}
    # MMPoseInferencer video output: 0-based frame ids, every frame listed
    frames = [{"frame_id": 0, "instances": [inst(0), inst(0, 1)]},
              {"frame_id": 1, "instances": []},
              {"frame_id": 2, "instances": [inst(2)]}]
    a = tmp_path / "inferencer.json"
    a.write_text(json.dumps(frames))
    r = read_keypoints(str(a))
    assert r.container == "mmpose-json" and r.keypoints.shape == (2, 3, 17, 2)
    np.testing.assert_array_equal(r.keypoints[0, 2], coco_pose(2))
    np.testing.assert_array_equal(r.keypoints[1, 0], coco_pose(0, 1))
    assert (r.scores[:, 1] == 0).all()
    # topdown_demo_with_mmdet --save-predictions: 1-based ids, meta_info
    b = tmp_path / "demo.json"
    b.write_text(json.dumps({"meta_info": {"dataset_name": "coco", "num_keypoints": 17},
                             "instance_info": [dict(f, frame_id=f["frame_id"] + 1)
                                               for f in frames]}))
    rb = read_keypoints(str(b))
    np.testing.assert_array_equal(rb.keypoints, r.keypoints)
    assert rb.fmt_hint == "coco"
    # one image's instance list
    c = tmp_path / "image.json"
    c.write_text(json.dumps([inst(0)]))
    assert read_keypoints(str(c)).keypoints.shape == (1, 1, 17, 2)


def _write_vp3d(path, videos):
    """Exactly the layout of VideoPose3D's data/prepare_data_2d_custom.py."""
    metadata = {"layout_name": "coco", "num_joints": 17,
                "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]],
                "video_metadata": {}}
    output = {}
    for name, (kp, w, h) in videos.items():
        output[name] = {"custom": [kp.astype("float32")]}
        metadata["video_metadata"][name] = {"w": w, "h": h}
    np.savez_compressed(path, positions_2d=output, metadata=metadata)
    return str(path)


def test_videopose3d_npz(tmp_path):
    seq = np.stack([coco_pose(t) for t in range(5)])
    p = _write_vp3d(tmp_path / "data_2d_custom_myvideos.npz", {"clip.mp4": (seq, 1280, 720)})
    assert detect_container(p) == "videopose3d-npz"
    r = read_keypoints(p)
    assert r.size == (1280, 720) and r.fmt_hint == "coco" and r.extra["video"] == "clip.mp4"
    np.testing.assert_array_equal(r.keypoints[0], seq)
    p2 = _write_vp3d(tmp_path / "two.npz", {"a": (seq, 640, 480), "b": (seq[:3], 320, 240)})
    with pytest.raises(ValueError, match="--npz-video"):
        read_keypoints(p2)
    rb = read_keypoints(p2, video="b")
    assert rb.size == (320, 240) and rb.num_frames == 3


def test_arrays(tmp_path):
    seq = np.stack([coco_pose(t) for t in range(4)])
    np.save(tmp_path / "a.npy", seq)
    r = read_keypoints(tmp_path / "a.npy")
    assert r.container == "array" and r.keypoints.shape == (1, 4, 17, 2) and r.scores is None
    both = np.stack([seq, seq + 1])
    with_score = np.concatenate([both, np.full(both.shape[:-1] + (1,), 0.5, np.float32)], -1)
    np.save(tmp_path / "b.npy", with_score)
    rb = read_keypoints(tmp_path / "b.npy")
    assert rb.keypoints.shape == (2, 4, 17, 2) and rb.scores.shape == (2, 4, 17)
    np.savez(tmp_path / "c.npz", keypoints=seq, size=np.array([800, 600]), format="coco")
    rc = read_keypoints(tmp_path / "c.npz")
    assert rc.size == (800, 600) and rc.fmt_hint == "coco"


@pytest.mark.skipif(not os.path.exists(BASEBALL17), reason="shared baseball data not present")
def test_real_gast_files():
    r = read_keypoints(BASEBALL17)
    assert r.keypoints.shape == (1, 277, 17, 2) and r.extra["label"] == "baseball"
    assert (r.scores > 0).all()
    if os.path.exists(BASEBALL133):
        w = read_keypoints(BASEBALL133)
        assert w.keypoints.shape == (1, 277, 133, 2)


def test_videopose3d_npz_refuses_code(tmp_path):
    """The npz's pickled dicts are rebuilt by a restricted unpickler: no code runs."""
    import os

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.npz"
    np.savez(path, positions_2d=np.array({"v": Evil()}, dtype=object), metadata=np.array({}, dtype=object))
    with pytest.raises(ValueError, match="refusing to load"):
        read_videopose3d(str(path))
    assert not marker.exists()


def test_openpose_folder_records_its_first_frame_number(tmp_path):
    """A folder written with --frame_first 5 (or trimmed): frame 0 of the result is video frame 5,
    which render --overlay needs to stay aligned."""
    import json as _json

    from gastrt.keypoints import read_keypoints
    d = tmp_path / "op"
    d.mkdir()
    for f in (5, 6, 8):
        person = {"pose_keypoints_2d": [float(v) for v in range(75)]}
        (d / f"clip_{f:012d}_keypoints.json").write_text(_json.dumps({"people": [person]}))
    raw = read_keypoints(str(d))
    assert raw.extra["frame_start"] == 5 and raw.keypoints.shape[1] == 4  # frames 5..8, 7 missing


@pytest.mark.parametrize("indices", [[1, 10_000_000], [10_000_000], [3, 200_005]])
def test_frame_numbers_far_apart_are_refused_not_allocated(tmp_path, indices):
    """A 17 kB GAST-Net JSON whose frame_index jumps to 10^7 took 9 GB and hung (issue #15)."""
    import json as _json
    import resource

    from gastrt.keypoints import read_keypoints
    pose = [[float(j), float(j)] for j in range(17)]
    doc = {"label": {}, "data": [{"frame_index": i, "skeleton": [{"pose": pose, "score": [1.0] * 17}]}
                                 for i in indices]}
    p = tmp_path / "far.json"
    p.write_text(_json.dumps(doc))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"jumps from .* frames without data"):
        read_keypoints(str(p))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing big allocated


def test_infinite_frame_index_is_one_error(tmp_path):
    from gastrt.keypoints import read_keypoints
    p = tmp_path / "inf.json"
    p.write_text('{"label": {}, "data": [{"frame_index": Infinity, "skeleton": []}]}')
    with pytest.raises(ValueError, match="frame_index is not an integer"):
        read_keypoints(str(p))


# ---- .npy / .npz headers are checked before anything is allocated --------------------------------

def _npy_bytes(a) -> bytes:
    import io
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_npy_header_declaring_a_huge_shape_is_one_error(tmp_path):
    raw = _npy_bytes(np.zeros((2, 17, 2), np.float32)).replace(b"(2, 17, 2)", b"(200000000, 17, 2)")
    p = tmp_path / "huge.npy"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=r"declares shape \(200000000, 17, 2\).*above the 512 MiB limit"):
        read_keypoints(str(p))


def test_npz_member_declaring_more_than_it_holds_is_one_error(tmp_path):
    import zipfile
    raw = _npy_bytes(np.zeros((3, 17, 2), np.float32)).replace(b"(3, 17, 2)", b"(300, 17, 2)")
    p = tmp_path / "lie.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("keypoints.npy", raw)
    with pytest.raises(ValueError, match=r"keypoints: declares shape \(300, 17, 2\).*holds only"):
        read_keypoints(str(p))


def test_corrupt_npy_header_and_object_arrays_are_one_error(tmp_path):
    p = tmp_path / "bad.npy"
    p.write_bytes(_npy_bytes(np.zeros((2, 17, 2), np.float32)).replace(b"'descr'", b"'de(scr'"))
    with pytest.raises(ValueError, match="not a readable numpy array header"):
        read_keypoints(str(p))
    q = tmp_path / "obj.npy"
    np.save(q, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds Python objects"):
        read_keypoints(str(q))


def test_npz_with_a_damaged_member_header_is_one_error(tmp_path):
    """Found by the fuzz suite: a flipped byte in a member's compression field made zipfile raise
    NotImplementedError ("That compression method is not supported")."""
    import zipfile
    p = tmp_path / "k.npz"
    np.savez(p, keypoints=np.stack([coco_pose(t) for t in range(3)]))
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = z.infolist()[0]
    # the local header's compression method (offset 8) and the central directory's (offset 10)
    data[info.header_offset + 8] = 77
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 10] = 77
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"k\.npz"):
        read_keypoints(str(p))


@pytest.mark.parametrize("meta", [float("inf"), [1, 2], "coco", 5])
def test_mmpose_meta_info_that_is_not_an_object_is_one_error(tmp_path, meta):
    p = tmp_path / "mm.json"
    p.write_text(json.dumps({"meta_info": meta, "instance_info": [
        {"frame_id": 1, "instances": [{"keypoints": coco_pose(0).tolist(), "keypoint_scores": [0.9] * 17}]}]}))
    with pytest.raises(ValueError, match="'meta_info' must be an object"):
        read_keypoints(str(p))


def test_deeply_nested_json_is_one_error(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100000 + "0" + "]" * 100000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_keypoints(str(p))


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["data"][0]["skeleton"][0].__setitem__("bbox", 5), r"data\[0\]\.skeleton\[0\]\.bbox must be a list"),
    (lambda d: d["data"][0].__setitem__("skeleton", 5), r"data\[0\]\.skeleton must be a list"),
    (lambda d: d["data"][1].__setitem__("frame_index", 2 ** 70), "frame_index 1180591620717411303424 is out of range"),
])
def test_gast_json_odd_fields_are_one_error(tmp_path, edit, needle):
    p = write_gast_json(tmp_path / "k.json", {1: [coco_pose(0)], 2: [coco_pose(1)]})
    doc = json.load(open(p))
    edit(doc)
    with open(p, "w") as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match=needle):
        read_keypoints(p)


def test_huge_frame_numbers_in_every_container_are_one_error(tmp_path):
    mm = tmp_path / "mm.json"
    mm.write_text(json.dumps([{"frame_id": 0, "instances": []},
                              {"frame_id": 2 ** 70, "instances": [{"keypoints": coco_pose(0).tolist(),
                                                                     "keypoint_scores": [0.9] * 17}]}]))
    with pytest.raises(ValueError, match="frame_id .* is out of range"):
        read_keypoints(str(mm))
    d = tmp_path / "op"
    d.mkdir()
    for n in (0, 10 ** 24):
        (d / f"vid_{n:012d}_keypoints.json").write_text(json.dumps(
            {"version": 1.3, "people": [{"pose_keypoints_2d": [1.0, 2.0, 0.9] * 25}]}))
    with pytest.raises(ValueError, match="out of range"):
        read_keypoints(str(d))


def test_npz_arrays_inflating_together_past_the_limit_are_refused_before_reading(tmp_path):
    """Found by the #15 audit: two members each under the per-file cap (a 1.5 MB npz -> 3.6 GB RSS)."""
    import resource
    import zipfile
    p = tmp_path / "bomb.npz"
    n = 288 << 20                                               # 288 MiB of zeros per member
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in ("keypoints", "scores"):
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                h = repr({"descr": "<f4", "fortran_order": False, "shape": (n // 4,)}).encode()
                h += b" " * (-(len(h) + 11) % 64) + b"\n"
                f.write(np.lib.format.magic(1, 0) + len(h).to_bytes(2, "little") + h)
                chunk = b"\x00" * (16 << 20)
                for _ in range(n // len(chunk)):
                    f.write(chunk)
    assert os.path.getsize(p) < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"bomb\.npz: its arrays declare 576 MiB together, above the 512 MiB limit"):
        read_keypoints(str(p))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb


def test_npz_member_that_is_not_npy_is_refused(tmp_path):
    """Found by review: numpy also reads a bare 'keypoints' member, which the header checks skipped."""
    import zipfile
    p = tmp_path / "bare.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("keypoints", _npy_bytes(np.stack([coco_pose(t) for t in range(3)])))
    with pytest.raises(ValueError, match="member 'keypoints' is not a .npy array"):
        read_keypoints(str(p))
