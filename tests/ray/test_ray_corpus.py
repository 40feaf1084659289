"""gastrt.ray.lift_corpus / the corpus mode of `gastrt lift` on a local Ray: outputs equal the
single-process `gastrt lift`, corrupt inputs become manifest rows, re-runs skip, and a killed
engine actor is restarted by Ray with every output still written."""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

# ray.data, not ray: with tests/ on sys.path, this folder would pass for a "ray" namespace package
pytest.importorskip("ray.data")
pd = pytest.importorskip("pandas")

import gastrt  # noqa: E402
from gastrt.lifting import add_parsers as lift_add_parsers, lift_file, load_result  # noqa: E402
from gastrt.ray import lift_corpus  # noqa: E402
from gastrt.ray.cli import wire_lift  # noqa: E402
from gastrt.ray.corpus import COLUMNS, MANIFEST_NAME  # noqa: E402

SIZE = "1920x1080"
N_CORRUPT = 2


def _gast_variant(doc: dict, *, scale=1.0, shift=(0.0, 0.0), frames=None, gap=None, people=1) -> dict:
    """A GAST-Net JSON copy: poses scaled/shifted, the first `frames` frames, frames in `gap`
    (a range) without a skeleton, and `people` persons per frame (shifted copies)."""
    d = copy.deepcopy(doc)
    data = d["data"][:frames] if frames else d["data"]
    for f in data:
        base = f["skeleton"][0]
        skels = []
        for p in range(people):
            pose = [[x * scale + shift[0] + 150 * p, y * scale + shift[1] + 20 * p] for x, y in base["pose"]]
            bb = base["bbox"]
            skels.append({"pose": pose, "score": base["score"],
                          "bbox": [bb[0] + 150 * p, bb[1], bb[2] + 150 * p, bb[3]]})
        f["skeleton"] = [] if gap is not None and f["frame_index"] in gap else skels
    d["data"] = data
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, baseball):
    """>= 40 keypoint files in nested folders (GAST-Net JSON COCO-17 and WholeBody-133, .npz
    arrays) + 2 corrupt ones. -> (root folder, [relative paths of the good files], [corrupt])"""
    b17, b133 = baseball
    root = tmp_path_factory.mktemp("corpus") / "videos"
    doc17 = json.load(open(b17))
    doc133 = json.load(open(b133))
    rng = np.random.default_rng(0)
    good = []

    def put(rel, text=None, arr=None):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if arr is not None:
            np.savez(p, **arr)
        else:
            p.write_text(text)
        good.append(rel)

    for i in range(30):
        kw = dict(scale=float(rng.uniform(0.6, 1.3)), shift=tuple(rng.uniform(-200, 200, 2)),
                  frames=int(rng.integers(20, 278)))
        if i % 5 == 1:
            kw["gap"] = range(10, 10 + int(rng.integers(3, 15)))
        if i % 7 == 3:
            kw["people"] = 2 + i % 2
        put(f"{['a', 'b', 'c/deep'][i % 3]}/clip{i:02d}.json", json.dumps(_gast_variant(doc17, **kw)))
    for i in range(6):
        d = _gast_variant(doc133, scale=1.0 - 0.05 * i, frames=60 + 30 * i)
        put(f"wholebody/wb{i}.json", json.dumps(d))
    base = np.array([f["skeleton"][0]["pose"] for f in doc17["data"]], np.float32)
    for i in range(6):
        arr = base[: 40 + 20 * i] * (1 + 0.1 * i)
        put(f"arrays/arr{i}.npz", arr={"keypoints": arr, "size": np.array([1920, 1080]),
                                        "format": np.array("coco")})
    # the same stem twice in one folder: names stay distinct
    put("a/clip00.npz", arr={"keypoints": base[:30], "size": np.array([1280, 720]), "format": np.array("coco")})
    (root / "broken").mkdir()
    (root / "broken" / "truncated.json").write_text(json.dumps(doc17)[:5000])
    (root / "broken" / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    (root / "notes.txt").write_text("not a keypoint file: ignored")
    corrupt = ["broken/truncated.json", "broken/garbage.npz"]
    assert len(good) >= 40
    return root, good, corrupt


def _lift_parser():
    """`gastrt lift` as cli.py wires it: lifting.add_parsers + gastrt.ray.cli.wire_lift."""
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    lift_add_parsers(sub)
    wire_lift(sub.choices["lift"])
    return p


def _lift(*argv) -> int:
    """`gastrt lift ARGV...` through the wired parser, as gastrt.cli.main would run it."""
    args = _lift_parser().parse_args(["lift", *map(str, argv)])
    return args.func(args)


def _cli_args(engine, inputs, out_dir, **kw):
    argv = ["lift", engine, *map(str, inputs)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return _lift_parser().parse_args(argv + ["--out-dir", str(out_dir)])


def _single_process(engine, path, tmp_path, capsys):
    """`gastrt lift ENGINE PATH -o X.npz --size ...` in this process -> LiftResult."""
    from gastrt.cli import main

    out = tmp_path / "single.npz"
    assert main(["lift", engine, path, "-o", str(out), "--size", SIZE]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return load_result(out)


def _assert_same(a, b):
    """Whole outputs bit-equal: poses, 2D inputs, masks and metadata. The actors run 1 thread
    and `gastrt lift` all cores; the native runtime's results do not depend on the thread count
    (tests/native/test_thread_invariance.py)."""
    for k in ("valid", "keypoints_2d", "poses_3d"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.metadata == b.metadata


@pytest.fixture(scope="module")
def first_run(ray_local, small_engine, corpus, tmp_path_factory):
    root, good, corrupt = corpus
    out = tmp_path_factory.mktemp("out") / "lifted"
    t0 = time.perf_counter()
    status = _lift(small_engine, root, "--out-dir", out, "--size", SIZE)
    return out, status, time.perf_counter() - t0


def test_corpus_outputs_equal_single_process_lift(first_run, corpus, small_engine, tmp_path, capsys):
    out, status, _ = first_run
    root, good, corrupt = corpus
    df = pd.read_parquet(out / MANIFEST_NAME)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == len(good) + len(corrupt)
    ok = df[df["status"] == "ok"]
    assert len(ok) == len(good)
    one_thread = gastrt.load(small_engine, threads=1)
    assert len(set(ok["output"])) == len(ok)          # one distinct output per input
    for row in ok.itertuples():
        got = load_result(row.output)
        want = _single_process(small_engine, row.input, tmp_path, capsys)
        _assert_same(got, want)
        # and with an in-process engine of the actors' thread count (--threads 1)
        same = lift_file(one_thread, row.input, size=SIZE)
        np.testing.assert_array_equal(got.poses_3d, same.poses_3d)
        assert row.persons == got.poses_3d.shape[0] and row.frames == got.poses_3d.shape[1]
        assert row.seconds > 0 and row.output_bytes == os.path.getsize(row.output)
    assert int(ok["persons"].max()) >= 2                 # the multi-person files
    assert os.path.isfile(out / "c" / "deep" / "clip02_3d.npz")
    assert {os.path.basename(p) for p in ok["output"] if "/a/" in p} >= {"clip00.json_3d.npz",
                                                                         "clip00.npz_3d.npz"}
    # no temp files left behind
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.startswith(".")]


def test_corrupt_inputs_are_manifest_rows_and_exit_1(first_run, corpus, small_engine, tmp_path, capsys):
    out, status, _ = first_run
    root, good, corrupt = corpus
    assert status == 1
    df = pd.read_parquet(out / MANIFEST_NAME).set_index("input")
    from gastrt.cli import main

    for rel in corrupt:
        path = os.path.join(str(root), rel)
        row = df.loc[path]
        assert row["status"] == "error" and row["output"] == ""
        # the same one line `gastrt lift` prints for that file
        assert main(["lift", small_engine, path, "-o", str(tmp_path / "x.npz"), "--size", SIZE]) == 2
        err = capsys.readouterr().err
        assert err == f"gastrt: error: {row['error']}\n"
    assert not [p for p in os.listdir(out) if "broken" in p and os.listdir(out / p)]


def test_second_run_skips_everything_and_changes_nothing(first_run, corpus, small_engine, capsys):
    out, _, _ = first_run
    root, good, corrupt = corpus
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    before = {f: os.stat(f).st_mtime_ns for f in files}
    manifest = pd.read_parquet(out / MANIFEST_NAME)
    t0 = time.perf_counter()
    args = _cli_args(small_engine, [root], out, size=SIZE)
    status = args.func(args)
    assert status == 1
    assert time.perf_counter() - t0 < 60  # no lifting (a busy 2-core CI machine is slow)
    assert f"{len(good) + len(corrupt)} skipped" in capsys.readouterr().out
    after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(out) for f in fs}
    assert after == before
    pd.testing.assert_frame_equal(pd.read_parquet(out / MANIFEST_NAME), manifest)
    df = lift_corpus(small_engine, root, out, size=SIZE)
    assert df.attrs["skipped"] == len(good) + len(corrupt)


def test_changed_input_is_lifted_again(ray_local, small_engine, corpus, tmp_path, capsys):
    root, good, _ = corpus
    src = os.path.join(str(root), good[0])
    mine = tmp_path / "in" / "one.json"
    mine.parent.mkdir()
    mine.write_text(open(src).read())
    out = tmp_path / "out"
    df = lift_corpus(small_engine, str(mine.parent), out, size=SIZE, progress=False)
    assert list(df["status"]) == ["ok"] and df.attrs["skipped"] == 0
    doc = json.loads(mine.read_text())
    doc["data"] = doc["data"][:15]
    mine.write_text(json.dumps(doc))
    df = lift_corpus(small_engine, str(mine.parent), out, size=SIZE, progress=False)
    assert df.attrs["skipped"] == 0 and int(df["frames"].iloc[0]) == 15


def test_manifest_input_with_sizes(ray_local, small_engine, corpus, tmp_path, capsys):
    root, good, _ = corpus
    rels = [g for g in good if g.endswith(".json")][:3]
    csv = tmp_path / "list.csv"
    pd.DataFrame({"path": [os.path.join(str(root), r) for r in rels], "width": [1280, 640, 1920],
                  "height": [720, 480, 1080]}).to_csv(csv, index=False)
    # 640x480 is too small for these keypoints: the size check names it in the manifest
    df = lift_corpus(small_engine, str(csv), tmp_path / "checked", progress=False)
    assert list(df["status"]) == ["ok", "error", "ok"]
    assert "outside the 640x480 frame" in df["error"].iloc[1]
    # per-file sizes from the manifest, the check off (as --no-size-check)
    df = lift_corpus(small_engine, str(csv), tmp_path / "out", progress=False, check_size=False)
    assert list(df["status"]) == ["ok"] * 3
    for row, (w, h) in zip(df.itertuples(), [(1280, 720), (640, 480), (1920, 1080)]):
        want = lift_file(gastrt.load(small_engine, threads=1), row.input, size=(w, h), check_size=False)
        got = load_result(row.output)
        np.testing.assert_array_equal(got.poses_3d, want.poses_3d)
        assert got.metadata["size"] == [w, h]


def test_bad_options_are_one_clear_error(ray_local, small_engine, tmp_path):
    from gastrt.errors import GastrtError

    with pytest.raises(GastrtError, match="engine file not found"):
        lift_corpus(str(tmp_path / "nope.gastrt"), str(tmp_path), tmp_path / "o")
    with pytest.raises(GastrtError, match="no keypoint files"):
        lift_corpus(small_engine, str(tmp_path), tmp_path / "o")
    with pytest.raises(GastrtError, match="WIDTHxHEIGHT"):
        lift_corpus(small_engine, str(tmp_path), tmp_path / "o", size="big")


def _worker_pids(ray):
    from ray.util.state import list_actors

    acts = list_actors(filters=[("state", "=", "ALIVE")], detail=True, raise_on_missing_output=False)
    return [a.pid for a in acts if "LiftWorker" in (a.class_name or "") and a.pid]


def test_killed_actor_is_restarted_and_the_job_completes(ray_local, small_engine, corpus, first_run, tmp_path):
    root, good, corrupt = corpus
    first_out, _, _ = first_run
    out = tmp_path / "killed"
    result, errors = {}, []

    def job():
        try:
            result["df"] = lift_corpus(small_engine, root, out, size=SIZE, progress=False, batch_size=1)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=job)
    th.start()
    killed, done_at_kill = None, None
    deadline = time.monotonic() + 120
    while th.is_alive() and time.monotonic() < deadline and killed is None:
        n_out = sum(f.endswith("_3d.npz") for _, _, fs in os.walk(out) for f in fs) if out.exists() else 0
        if n_out >= 3:
            pids = _worker_pids(ray_local)
            if pids:
                killed, done_at_kill = pids[0], n_out
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    th.join(timeout=180)
    assert not errors, errors
    assert killed is not None, "the job ended before an actor could be killed"
    assert done_at_kill < len(good), "killed after the last output: nothing was retried"
    df = result["df"]
    assert (df["status"] == "ok").sum() == len(good)
    assert (df["status"] == "error").sum() == len(corrupt)
    first = pd.read_parquet(first_out / MANIFEST_NAME).set_index("input")
    for row in df[df["status"] == "ok"].itertuples():
        _assert_same(load_result(row.output), load_result(first.loc[row.input, "output"]))
    assert killed not in _worker_pids(ray_local)


def test_wired_lift_keeps_single_file_mode(small_engine, corpus, tmp_path, capsys):
    """One file (or one OpenPose folder) without --out-dir is today's `gastrt lift`; several
    inputs without --out-dir, or -o with a corpus, are one clear error."""
    from gastrt.errors import GastrtError

    root, good, _ = corpus
    one = os.path.join(str(root), good[0])
    assert _lift(small_engine, one, "-o", tmp_path / "one.npz", "--size", SIZE) == 0
    assert "wrote" in capsys.readouterr().out
    want = lift_file(small_engine, one, size=SIZE)
    np.testing.assert_array_equal(load_result(tmp_path / "one.npz").poses_3d, want.poses_3d)
    with pytest.raises(GastrtError, match="need --out-dir"):
        _lift(small_engine, one, one, "--size", SIZE)
    with pytest.raises(GastrtError, match="use --out-dir"):
        _lift(small_engine, root, "-o", tmp_path / "x.npz", "--out-dir", tmp_path / "o")
