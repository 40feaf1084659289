"""`gastrt serve` scaled out on a local Ray Serve: the lift deployment autoscales up under load
(--autoscale MIN,MAX), and stream sessions spread over several shards (--stream-shards N), each
session equal to lift_sequence over its frames."""
from __future__ import annotations

import json
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

# ray.data, not ray: with tests/ on sys.path, this folder would pass for a "ray" namespace package
pytest.importorskip("ray.data")
pytest.importorskip("ray.serve")

import gastrt  # noqa: E402
from test_ray_serve import SIZE, _direct, _free_port, call  # noqa: E402

APP = "gastrt-scale"


@pytest.fixture(scope="module")
def scaled(ray_local, small_engine):
    """Autoscaled 1..2 lift replicas (quick to scale up) and 2 stream shards, a quarter CPU each
    (the test Ray has 2 CPUs). -> base URL"""
    from ray import serve

    from gastrt.ray import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(small_engine, autoscale=(1, 2), max_batch_size=2, batch_wait_s=0.02, num_cpus=0.25,
                    stream_shards=2, autoscaling_options={"upscale_delay_s": 1.0, "look_back_period_s": 2.0,
                                                          "metrics_interval_s": 0.5})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def frames(baseball):
    doc = json.load(open(baseball[0]))
    return np.array([f["skeleton"][0]["pose"] for f in doc["data"]], np.float32)   # (277, 17, 2)


def _running_lift_replicas() -> int:
    from ray import serve

    dep = serve.status().applications[APP].deployments["GastrtLift"]
    return int(dep.replica_states.get("RUNNING", 0))


def test_lift_replicas_autoscale_up_under_load(scaled, small_engine, frames):
    engine = gastrt.load(small_engine, threads=1)
    body = {"keypoints": frames[:40].tolist(), "size": SIZE, "layout": "coco17", "flip": False}
    want = _direct(engine, frames[:40], flip=False)
    assert _running_lift_replicas() == 1
    stop = threading.Event()
    bad: list = []

    def client():
        while not stop.is_set():
            try:
                s, r = call(scaled, "POST", "/lift", body)
            except Exception as e:  # noqa: BLE001 (a dead client must fail the test, not hide)
                bad.append(("exception", repr(e)[:200]))
                return
            if s != 200 or not np.allclose(np.array(r["poses_3d"], np.float32), want, rtol=0,
                                           atol=1e-5 * float(np.abs(want).max())):
                bad.append((s, str(r)[:200]))

    peak = 1
    with ThreadPoolExecutor(24) as ex:
        futures = [ex.submit(client) for _ in range(24)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and peak < 2 and not bad:
            time.sleep(0.5)
            peak = max(peak, _running_lift_replicas())
        stop.set()
        for f in futures:
            f.result()
    assert not bad, bad[:3]
    assert peak == 2, "the lift deployment did not scale up to 2 replicas under 24 clients"


def test_stream_sessions_spread_over_shards(scaled, small_engine, frames):
    engine = gastrt.load(small_engine, threads=1)
    # two session ids the ingress hashes to different shards (crc32 % 2, as GastrtLift._shard)
    ids = {}
    i = 0
    while len(ids) < 2:
        sid = f"cam-{i}"
        ids.setdefault(zlib.crc32(sid.encode()) % 2, sid)
        i += 1
    clips = {ids[0]: frames[:50], ids[1]: frames[100:137]}

    def run(sid):
        got = []
        for f in clips[sid]:
            s, r = call(scaled, "POST", f"/stream/{sid}", {"keypoints": f.tolist(), "size": SIZE,
                                                           "layout": "coco17", "flip": True})
            assert s == 200, r
            got += r["poses_3d"]
        return got

    with ThreadPoolExecutor(2) as ex:
        got = dict(zip(clips, ex.map(run, clips)))
    s, info = call(scaled, "GET", "/info")
    assert s == 200 and len(info["streams"]) == 2
    assert sorted(st["sessions"] for st in info["streams"]) == [1, 1]     # one session per shard
    for sid, kp in clips.items():
        s, r = call(scaled, "DELETE", f"/stream/{sid}")
        assert s == 200 and r["closed"]
        out = np.array(got[sid] + r["poses_3d"], np.float32)
        want = _direct(engine, kp, flip=True)
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))
