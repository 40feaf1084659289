"""gastrt on Ray: corpus throughput and Serve latency on this machine.

    PYTHONPATH=python python3 benchmarks/bench_ray.py [--engine gast-27] [--files 12] [--rounds 3]
                                                     [--serve-frames 27] [--json out.json]

Corpus (the same N copies of ../shared/data/gast_baseball_coco17.json, shifted, 277 frames each):
  * loop-cli    a shell loop of single-process `gastrt lift FILE -o OUT` (one process per file,
                all cores; timed on the first 4 files and scaled to N)
  * loop-api    one process: lift_file + save_result per file, engine loaded once, 1 thread
  * ray         gastrt.ray.lift_corpus on a warm local Ray (one 1-thread engine actor per CPU)
  Rounds are interleaved (loop-api, ray, loop-cli per round); each is reported as median and
  min-max frames/s. Ray's cold start (ray.init) is reported once. Overhead per file:
  (ray wall - loop-api wall) / N, and the median per-file seconds inside Ray's tasks.

Serve (POST /lift, one person, --serve-frames frames, COCO-17 pixels, flip on):
  * direct      prepare + lift_keypoints in this process, C threads calling one engine
  * serve       HTTP to `gastrt serve` on the same Ray (1 replica, batching on)
  at C = 1, 8, 32 concurrent clients, interleaved per round: p50 / p99 latency (ms) and
  requests/s, median over rounds with min-max.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "gast_baseball_coco17.json"))
SIZE = "1920x1080"


def machine() -> str:
    model, cores = platform.processor() or "?", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {cores} logical CPUs, {platform.system()} {platform.release()}"


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s: dict, unit: str = "", digits: int = 0) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def make_corpus(d: str, n: int) -> list[str]:
    doc = json.load(open(SHARED))
    paths = []
    for i in range(n):
        c = json.loads(json.dumps(doc))
        for f in c["data"]:
            for s in f["skeleton"]:
                s["pose"] = [[x + 3 * i, y - 2 * i] for x, y in s["pose"]]
        p = os.path.join(d, f"clip{i:03d}.json")
        with open(p, "w") as fh:
            json.dump(c, fh)
        paths.append(p)
    return paths


def bench_corpus(engine: str, files: list[str], work: str, rounds: int) -> dict:
    import ray

    import gastrt
    from gastrt.lifting import lift_file, save_result
    from gastrt.ray import lift_corpus

    frames = 277 * len(files)
    res: dict = {"files": len(files), "frames": frames, "loop_api": [], "ray": [], "loop_cli": [],
                 "ray_task_seconds": []}
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": env["PYTHONPATH"]}})
    from ray.data import DataContext
    DataContext.get_current().enable_progress_bars = False
    res["ray_init_s"] = time.perf_counter() - t
    res["actors"] = int(ray.cluster_resources().get("CPU", 1))    # lift_corpus's default pool: 1 per CPU
    out = os.path.join(work, "ray_out")
    t = time.perf_counter()
    lift_corpus(engine, files, out, size=SIZE, progress=False)     # first job: actor start, imports
    res["ray_first_job_s"] = time.perf_counter() - t
    for r in range(rounds):
        eng = gastrt.load(engine, threads=1)
        d = os.path.join(work, "loop"); shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
        t = time.perf_counter()
        for f in files:
            save_result(lift_file(eng, f, size=SIZE), os.path.join(d, os.path.basename(f) + "_3d.npz"))
        res["loop_api"].append(time.perf_counter() - t)

        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        df = lift_corpus(engine, files, out, size=SIZE, progress=False)
        res["ray"].append(time.perf_counter() - t)
        assert (df["status"] == "ok").all()
        res["ray_task_seconds"].extend(df["seconds"].tolist())
        res.setdefault("ray_idle", []).append(res["ray"][-1] - float(df["seconds"].sum()) / res["actors"])

        if r == 0 or len(files) <= 40:
            t = time.perf_counter()
            sub = files[:min(len(files), 4)]
            for f in sub:
                subprocess.run([sys.executable, "-m", "gastrt", "lift", engine, f, "-o",
                                os.path.join(d, "cli.npz"), "--size", SIZE], check=True, env=env,
                               capture_output=True)
            res["loop_cli"].append((time.perf_counter() - t) * len(files) / len(sub))
        print(f"  corpus round {r + 1}/{rounds}: loop-api {res['loop_api'][-1]:.2f} s, ray {res['ray'][-1]:.2f} s"
              + (f", loop-cli {res['loop_cli'][-1]:.2f} s (scaled)" if res["loop_cli"] else ""), file=sys.stderr)
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed_clients(fn, clients: int, requests: int) -> tuple[list[float], float]:
    lat: list[float] = []

    def one(_):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(one, range(requests)))
    return lat, time.perf_counter() - t


def bench_serve(engine: str, rounds: int, levels=(1, 8, 32), frames: int = 27) -> dict:
    from ray import serve

    import gastrt
    from gastrt.keypoints import RawKeypoints
    from gastrt.lifting import lift_keypoints, prepare_keypoints
    from gastrt.ray import build_app

    doc = json.load(open(SHARED))
    kp = np.array([f["skeleton"][0]["pose"] for f in doc["data"]][:frames], np.float32)
    body = json.dumps({"keypoints": kp.tolist(), "size": [1920, 1080], "layout": "coco17", "flip": True}).encode()
    eng = gastrt.load(engine, threads=1)

    def direct():
        d = json.loads(body)
        x = np.asarray(d["keypoints"], np.float32)[None]
        prep = prepare_keypoints(RawKeypoints(x, None, "array", "k", None, (1920, 1080), {}),
                                 num_joints=eng.num_joints, fmt="coco", size=(1920, 1080))
        y = lift_keypoints(eng, prep.keypoints_2d, flip=True)
        json.dumps({"poses_3d": y[0].astype(np.float64).tolist()})

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(engine, max_batch_size=32, batch_wait_s=0.005), name="gastrt", route_prefix="/",
              blocking=False)
    url = f"http://127.0.0.1:{port}/lift"

    def http():
        req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()

    for _ in range(4):
        http()
        direct()
    res: dict = {"frames_per_request": frames, "levels": {}}
    for c in levels:
        n = max(16, 2 * c)
        rows = {"direct": {"p50": [], "p99": [], "rps": []}, "serve": {"p50": [], "p99": [], "rps": []}}
        for r in range(rounds):
            for name, fn in (("direct", direct), ("serve", http)):
                lat, wall = _timed_clients(fn, c, n)
                rows[name]["p50"].append(1e3 * float(np.percentile(lat, 50)))
                rows[name]["p99"].append(1e3 * float(np.percentile(lat, 99)))
                rows[name]["rps"].append(n / wall)
        res["levels"][c] = {k: {m: spread(v) for m, v in d.items()} for k, d in rows.items()}
        print(f"  serve C={c}: direct {fmt(res['levels'][c]['direct']['rps'])} req/s, serve "
              f"{fmt(res['levels'][c]['serve']['rps'])} req/s", file=sys.stderr)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info") as r:
        res["batch_sizes"] = json.loads(r.read())["batch_sizes"]
    serve.shutdown()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="gast-27", help="engine file or bench preset (default gast-27)")
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--serve-frames", type=int, default=27, help="frames per /lift request (default 27)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-serve", action="store_true")
    args = ap.parse_args()
    if not os.path.isfile(SHARED):
        print(f"bench_ray: {SHARED} is missing", file=sys.stderr)
        return 2
    engine = args.engine
    if not os.path.isfile(engine):
        from gastrt.bench.presets import preset_engine
        engine = preset_engine(engine)
    import ray

    out = {"machine": machine(), "engine": args.engine, "ray": ray.__version__}
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "in"))
        files = make_corpus(os.path.join(work, "in"), args.files)
        c = bench_corpus(engine, files, work, args.rounds)
        if not args.skip_serve:
            out["serve"] = bench_serve(engine, args.rounds, frames=args.serve_frames)
        ray.shutdown()
    fr = c["frames"]
    out["corpus"] = {
        "files": c["files"], "frames": fr, "ray_init_s": c["ray_init_s"], "ray_first_job_s": c["ray_first_job_s"],
        "loop_api_fps": spread([fr / w for w in c["loop_api"]]), "ray_fps": spread([fr / w for w in c["ray"]]),
        "loop_cli_fps": spread([fr / w for w in c["loop_cli"]]) if c["loop_cli"] else None,
        # wall time not spent in the tasks' own work (read + lift + write), per file and actor slot:
        # scheduling, actor start-up and engine loading, data transfer
        "ray_overhead_per_file_ms": spread([1e3 * v / c["files"] for v in c["ray_idle"]]),
        "ray_task_seconds_per_file_ms": spread([1e3 * s for s in c["ray_task_seconds"]]),
    }
    co = out["corpus"]
    print(f"machine: {out['machine']}; engine {args.engine}; ray {out['ray']}")
    print(f"corpus: {co['files']} files, {fr} frames; median (min-max) over {args.rounds} interleaved rounds")
    print(f"  loop of `gastrt lift` processes  {fmt(co['loop_cli_fps'])} frames/s" if co["loop_cli_fps"] else "")
    print(f"  loop in one process (lift_file)  {fmt(co['loop_api_fps'])} frames/s")
    print(f"  gastrt.ray.lift_corpus (warm)     {fmt(co['ray_fps'])} frames/s")
    print(f"  ray.init {co['ray_init_s']:.1f} s; first job {co['ray_first_job_s']:.1f} s; Ray overhead "
          f"(wall - task work / actors) {fmt(co['ray_overhead_per_file_ms'], ' ms', 1)} per file; work per file "
          f"in Ray tasks {fmt(co['ray_task_seconds_per_file_ms'], ' ms', 1)}")
    if "serve" in out:
        s = out["serve"]
        print(f"serve: POST /lift, {s['frames_per_request']} frames, flip; batch sizes formed {s['batch_sizes']}")
        print(f"  {'clients':>7}  {'contender':<7}  {'p50 ms':>22}  {'p99 ms':>22}  {'req/s':>22}")
        for c_, d in s["levels"].items():
            for name in ("direct", "serve"):
                print(f"  {c_:>7}  {name:<7}  {fmt(d[name]['p50'], '', 1):>22}  {fmt(d[name]['p99'], '', 1):>22}  "
                      f"{fmt(d[name]['rps'], '', 2):>22}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
