"""`gastrt serve` (gastrt.ray.serve) on a local Ray Serve: concurrent /lift requests equal direct
engine calls and are batched, bad requests are 400s that leave the replica working, a stream
session equals lift_sequence, and the Python handle gives the HTTP result."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

# ray.data, not ray: with tests/ on sys.path, this folder would pass for a "ray" namespace package
pytest.importorskip("ray.data")
pytest.importorskip("ray.serve")

import gastrt  # noqa: E402
from gastrt.keypoints import RawKeypoints  # noqa: E402
from gastrt.lifting import lift_file, lift_keypoints, prepare_keypoints  # noqa: E402

SIZE = [1920, 1080]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ray_local, small_engine):
    """The app on a free port (replicas reserve half a CPU each: the test Ray has 2). -> base URL"""
    from ray import serve

    from gastrt.ray import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(small_engine, max_batch_size=16, batch_wait_s=0.05, num_cpus=0.5, session_timeout_s=30)
    serve.run(app, name="gastrt", route_prefix="/", blocking=False)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def call(base, method, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:   # Serve's proxy itself (e.g. a 404 before the app's routes are up)
            return e.code, {"proxy": text.decode(errors="replace")[:200]}


@pytest.fixture(scope="module")
def frames(baseball):
    doc = json.load(open(baseball[0]))
    return np.array([f["skeleton"][0]["pose"] for f in doc["data"]], np.float32)   # (277, 17, 2)


def _direct(engine, kp, flip=True):
    """What `gastrt lift` computes for an array file of these pixels (--format coco --size)."""
    x = kp[None] if kp.ndim == 3 else kp
    prep = prepare_keypoints(RawKeypoints(x, None, "array", "k", None, tuple(SIZE), {}),
                             num_joints=engine.num_joints, fmt="coco", size=SIZE)
    y = lift_keypoints(engine, prep.keypoints_2d, flip=flip)
    return y[0] if kp.ndim == 3 else y


def test_health_and_info(server, small_engine):
    assert call(server, "GET", "/healthz") == (200, {"status": "ok"})
    s, info = call(server, "GET", "/info")
    assert s == 200 and info["num_joints"] == 17 and info["family"] == "gast"
    assert len(info["joints"]) == 17 and info["max_batch_size"] == 16


def test_concurrent_clients_equal_direct_calls_and_batch(server, small_engine, frames):
    engine = gastrt.load(small_engine, threads=1)
    rng = np.random.default_rng(1)
    reqs = []
    for i in range(32):
        t = (40, 64)[i % 2]          # two lengths: two groups per batch
        s0 = int(rng.integers(0, 200))
        kp = frames[s0:s0 + t] * float(rng.uniform(0.7, 1.2)) + rng.uniform(-100, 100, 2).astype(np.float32)
        if i % 8 == 5:
            kp = np.stack([kp, kp + 50])    # two people in one request
        reqs.append(kp.astype(np.float32))
    with ThreadPoolExecutor(32) as ex:
        replies = list(ex.map(lambda kp: call(server, "POST", "/lift",
                                              {"keypoints": kp.tolist(), "size": SIZE, "layout": "coco17",
                                               "flip": True}), reqs))
    for kp, (status, r) in zip(reqs, replies):
        assert status == 200, r
        got = np.array(r["poses_3d"], np.float32)
        want = _direct(engine, kp)
        assert got.shape == want.shape
        # several requests share one engine call: equal up to the GEMMs' summation order
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
        assert r["units"] and len(r["joints"]) == 17
    s, info = call(server, "GET", "/info")
    sizes = {int(k): v for k, v in info["batch_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) >= 32
    assert max(sizes) > 1, sizes


def test_same_as_gastrt_lift_on_an_array_file(server, small_engine, frames, tmp_path):
    kp = frames[:50]
    path = tmp_path / "kp.npy"
    np.save(path, kp)
    want = lift_file(gastrt.load(small_engine, threads=1), str(path), fmt="coco", size="1920x1080")
    s, r = call(server, "POST", "/lift", {"keypoints": kp.tolist(), "size": SIZE, "layout": "coco17"})
    assert s == 200
    np.testing.assert_allclose(np.array(r["poses_3d"], np.float32), want.poses_3d[0], rtol=0,
                               atol=1e-5 * float(np.abs(want.poses_3d).max()))
    assert r["valid"] == want.valid[0].tolist()


@pytest.mark.parametrize("body, needle", [
    ({"keypoints": [[1.0, 2.0]], "size": SIZE, "layout": "coco17"}, "expected shape"),
    ({"keypoints": [[[1.0, 2.0]] * 17], "size": SIZE, "layout": "nope"}, "unknown layout"),
    ({"keypoints": [[[1.0, 2.0]] * 17], "size": [0, 10], "layout": "coco17"}, "image size must be positive"),
    ({"keypoints": [[[1.0, 2.0]] * 17], "layout": "coco17"}, "size"),
    ({"keypoints": [[[1.0, 2.0]] * 12], "size": SIZE, "layout": "coco17"}, "cannot feed an engine"),
    ({"keypoints": [[[1.0, 2.0]] * 17], "size": SIZE}, "could be COCO-17 or Human3.6M-17"),
    (b'{"keypoints": [[[NaN, 2.0]]], "size": [10, 10]}', "non-finite"),
    (b"{not json", "not valid JSON"),
    ({"keypoints": [[[100.0, 200.0]] * 17] * 3 + [[[0.0, 0.0]] * 17] * 10 + [[[100.0, 200.0]] * 17] * 3,
      "size": SIZE, "layout": "coco17", "max_gap": 9}, "video frames 3..12 (counted from 0; 10 frames) have no detection"),
    ({"keypoints": [[[100.0, 200.0]] * 17], "size": SIZE, "layout": "coco17", "max_gap": -1}, "max_gap"),
])
def test_bad_request_is_400_and_the_next_one_works(server, frames, body, needle):
    s, r = call(server, "POST", "/lift", body)
    assert s == 400, r
    assert needle in r["error"] and "\n" not in r["error"]
    s, r = call(server, "POST", "/lift", {"keypoints": frames[:20].tolist(), "size": SIZE, "layout": "coco17"})
    assert s == 200 and np.array(r["poses_3d"]).shape == (20, 17, 3)


def test_bad_request_message_is_the_cli_one(server, small_engine, tmp_path, capsys):
    from gastrt.cli import main

    path = tmp_path / "twelve.npy"
    np.save(path, np.ones((5, 12, 2), np.float32))
    assert main(["lift", small_engine, str(path), "--format", "coco", "--size", "1920x1080",
                 "-o", str(tmp_path / "o.npz")]) == 2
    cli = capsys.readouterr().err.strip().removeprefix("gastrt: error: ")
    s, r = call(server, "POST", "/lift", {"keypoints": np.ones((5, 12, 2)).tolist(), "size": SIZE,
                                         "layout": "coco17"})
    assert s == 400 and r["error"] == cli.replace(str(path), "keypoints")


def test_stream_session_equals_lift_sequence(server, small_engine, frames):
    engine = gastrt.load(small_engine, threads=1)
    kp = frames[:60]
    got_frames, got = [], []
    for f in kp:
        s, r = call(server, "POST", "/stream/cam-7", {"keypoints": f.tolist(), "size": SIZE, "layout": "coco17",
                                                      "flip": True})
        assert s == 200, r
        got_frames += r["frames"]
        got += r["poses_3d"]
    s, r = call(server, "DELETE", "/stream/cam-7")
    assert s == 200 and r["closed"]
    got_frames += r["frames"]
    got += r["poses_3d"]
    assert got_frames == list(range(len(kp)))
    want = _direct(engine, kp, flip=True)        # engine.lift_sequence over the prepared frames
    np.testing.assert_allclose(np.array(got, np.float32), want, rtol=0, atol=1e-4 * float(np.abs(want).max()))
    assert call(server, "DELETE", "/stream/cam-7")[0] == 404     # gone after the flush
    s, r = call(server, "POST", "/stream/cam-8", {"keypoints": [[[1.0, 2.0]]], "size": SIZE})
    assert s == 400 and "expected shape (K, 2)" in r["error"]
    s, r = call(server, "POST", "/stream/cam-8", {"keypoints": kp[0].tolist(), "size": SIZE, "layout": "coco17"})
    assert s == 200 and r["frames"] == []       # the shard still works


def test_python_handle(server, frames):
    from ray import serve

    handle = serve.get_app_handle("gastrt")
    body = {"keypoints": frames[:30].tolist(), "size": SIZE, "layout": "coco17"}
    r = handle.lift.remote(body).result()
    s, h = call(server, "POST", "/lift", body)
    assert s == 200 and r["poses_3d"] == h["poses_3d"]


def test_stream_sessions_expire_and_are_bounded(small_engine, frames):
    """The stream shard's session table, in-process (the deployment's class, no Serve)."""
    import asyncio
    import time

    from gastrt.errors import GastrtError
    from gastrt.ray.serve import StreamShard

    shard = StreamShard.func_or_class(small_engine, "cpu", 1, 2, 0.3)
    body = {"keypoints": frames[0].tolist(), "size": SIZE, "layout": "coco17"}
    run = asyncio.run
    run(shard.push("a", body))
    run(shard.push("b", body))
    with pytest.raises(GastrtError, match="all 2 stream sessions"):
        run(shard.push("c", body))
    time.sleep(0.4)
    run(shard.push("c", body))                       # a and b expired: their slots are free
    stats = run(shard.stats())
    assert stats["sessions"] == 1 and stats["expired"] == 2
    with pytest.raises(KeyError):
        run(shard.close("a"))
    assert run(shard.close("c"))["closed"]


def test_serve_command_starts_and_stops_on_ctrl_c(small_engine, tmp_path):
    """`gastrt serve ENGINE --port P` in a fresh process with its own local Ray: it answers
    /healthz, and SIGINT shuts it down cleanly (exit 0, no traceback)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = _free_port()
    code = ("import argparse, sys; from gastrt.ray.cli import add_parsers; p = argparse.ArgumentParser(); "
            "add_parsers(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(gastrt.__file__)) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", small_engine, "--port", str(port),
                             "--max-sessions", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = call(f"http://127.0.0.1:{port}", "GET", "/healthz")[0]
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)   # not listening yet, or the proxy is up before the app's routes
        assert status == 200, proc.stderr.read() if proc.poll() is not None else "no answer"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopping" in out and "Traceback" not in err
