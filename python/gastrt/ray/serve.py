"""``gastrt serve``: an engine as a Ray Serve application (imports ray; load it lazily).

Deployments:

* ``GastrtLift`` (the HTTP ingress, N replicas or autoscaled): ``POST /lift``, ``GET /healthz``,
  ``GET /info``; concurrent /lift requests are batched into one engine call per (frames, flip)
  group with ``@serve.batch``; ``/stream/...`` is forwarded to the stream shard owning the session.
* ``GastrtStream{i}`` (one replica each): the streaming sessions. A session is one slot of a
  ``Stream`` (slots = max_sessions) held in that replica's memory, so every frame of a session
  must reach the same replica. Serve routes by load, not by key (its model multiplexing only
  *prefers* a replica), so stickiness comes from the topology: each shard is its own deployment
  with exactly one replica, and the ingress picks the shard by a stable hash of the session id.
  More shards = more sessions and CPUs; one shard by default.

Requests are prepared exactly as ``gastrt lift`` prepares an array file of the same data
(``prepare_keypoints``: joints at (0, 0) are missing and filled, layout conversion, [-1, 1]
normalisation) and lifted with ``lift_keypoints``. Bad input -> HTTP 400 {"error": the CLI's
one-line message}; anything else -> 500 with the message; a replica never dies of a request.
"""
import asyncio
import collections
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from ..engine import load
from ..errors import GastrtError
from ..keypoints import (FORMATS, LAYOUT_ALIASES, engine_input_layout, guess_format,
                        normalize_screen, parse_size, plan_layout)
from .. import lifting
from ..lifting import lift_keypoints, prepare_keypoints
from ..skeletons import skeleton_for
from .corpus import error_text, init_ray

# request layout names -> gastrt lift's --format values
LAYOUTS = LAYOUT_ALIASES   # the request's "layout" names
# what the response says about poses_3d: lifting's constants (the output files record the same)
UNITS = getattr(lifting, "UNITS", "m")
COORDINATE_FRAME = getattr(lifting, "COORDINATE_FRAME", "camera, root-relative")
MAX_KEYPOINTS = 4_000_000   # (P * T * K) per /lift request: bounds a replica's memory

app = FastAPI(title="gastrt", description="2D -> 3D pose lifting")


def joint_names(n: int) -> List[str]:
    try:
        names = list(getattr(skeleton_for(n), "names", ()) or ())
    except ValueError:   # a joint count without a known skeleton
        names = []
    return names or [f"joint_{i}" for i in range(n)]


def parse_request(body: Any, *, frame: bool = False) -> Tuple[np.ndarray, Tuple[int, int], str, bool]:
    """A /lift (or, frame=True, /stream) JSON body -> (keypoints float32, (w, h), fmt, flip).
    /lift keypoints: (T, K, 2) or (P, T, K, 2); /stream: one frame (K, 2). Raises GastrtError."""
    if not isinstance(body, dict):
        raise GastrtError("expected a JSON object {\"keypoints\": ..., \"size\": [w, h], \"layout\": ...}")
    if "keypoints" not in body:
        raise GastrtError("missing \"keypoints\"")
    want = "(K, 2)" if frame else "(T, K, 2) or (P, T, K, 2)"
    try:
        kp = np.asarray(body["keypoints"], dtype=np.float64)
    except (TypeError, ValueError):
        raise GastrtError(f"keypoints: expected a numeric array {want} in pixels (no nulls)") from None
    ok = kp.ndim == 2 if frame else kp.ndim in (3, 4)
    if not ok or kp.shape[-1] != 2 or 0 in kp.shape:
        raise GastrtError(f"keypoints: expected shape {want} in pixels, got {list(kp.shape)}")
    if kp.size > MAX_KEYPOINTS:
        raise GastrtError(f"keypoints: {kp.size // 2} points in one request, at most {MAX_KEYPOINTS // 2}; "
                          "split the request")
    bad = kp.size - int(np.isfinite(kp).sum())
    if bad:
        raise GastrtError(f"keypoints: {bad} non-finite values (NaN/inf); mark a missing joint as [0, 0], "
                          "as detector files do")
    if "size" not in body:
        raise GastrtError("missing \"size\": [width, height], the video's resolution in pixels")
    wh = parse_size(body["size"])
    layout = body.get("layout", "auto")
    if not isinstance(layout, str) or layout.lower() not in LAYOUTS:
        raise GastrtError(f"unknown layout {layout!r}: choose one of {', '.join(sorted(LAYOUTS))}")
    flip = body.get("flip", True)
    if not isinstance(flip, bool):
        raise GastrtError(f"flip must be true or false, got {flip!r}")
    return kp.astype(np.float32), wh, LAYOUTS[layout.lower()], flip


def prepare_request(engine: Any, kp: np.ndarray, wh: Tuple[int, int], fmt: str,
                    check_size: bool = True, max_gap: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """(T, K, 2) / (P, T, K, 2) pixels -> engine-ready (P, T, J, 2) and valid (P, T), exactly as
    `gastrt lift` prepares an .npy of the same array with --size and --format (check_size: the
    request's "size_check", as --size-check; max_gap: its "max_gap", as --max-gap)."""
    x = kp[None] if kp.ndim == 3 else kp
    prep = prepare_keypoints(x, engine=engine, fmt=fmt, size=wh, check_size=check_size, max_gap=max_gap)
    if len(prep.people) != x.shape[0]:   # keep the request's person axis: never-seen people are errors
        missing = sorted(set(range(x.shape[0])) - set(prep.people))
        raise GastrtError(f"keypoints: person(s) {missing} have no detected joint in any frame")
    return prep.keypoints_2d, prep.valid


def _error_response(e: BaseException) -> JSONResponse:
    user = isinstance(e, ValueError)   # GastrtError and friends: the caller's fault
    return JSONResponse({"error": error_text(e)}, status_code=400 if user else 500)


def _unwrap(e: BaseException) -> BaseException:
    """The user's exception inside a Ray error (RayTaskError carries it as .cause)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def engine_info(engine: Any, path: str) -> dict:
    md = {k: v for k, v in engine.metadata.items() if k != "plans"}
    return {"engine": path, "family": engine.family, "receptive_field": engine.receptive_field,
            "num_joints": engine.num_joints, "num_joints_out": engine.num_joints_out, "causal": engine.causal,
            "precision": engine.precision, "device": engine.device, "engine_input": engine_input_layout(engine),
            "joints": joint_names(engine.num_joints_out), "layouts": sorted(LAYOUTS), "formats": list(FORMATS),
            "metadata": md}


def _jsonable(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float64).tolist()   # float32 values exactly


@serve.deployment(name="GastrtStream", num_replicas=1, max_ongoing_requests=256)
class StreamShard:
    """Streaming sessions: session id -> (flip, slot) of one of two Streams (flip on / off)."""

    def __init__(self, engine_path: str, device: str = "cpu", threads: Optional[int] = 1,
                 max_sessions: int = 256, session_timeout_s: float = 60.0):
        self.engine = load(engine_path, device=device, threads=threads)
        self.max_sessions, self.timeout = int(max_sessions), float(session_timeout_s)
        self.streams: Dict[bool, Any] = {}
        self.free: Dict[bool, List[int]] = {}
        self.sessions: Dict[str, dict] = {}
        self.lock = asyncio.Lock()
        self.expired = 0

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self.sessions.items() if now - v["seen"] > self.timeout]:
            self._drop(sid)
            self.expired += 1

    def _drop(self, sid: str) -> None:
        v = self.sessions.pop(sid)
        self.streams[v["flip"]].reset(v["slot"])
        self.free[v["flip"]].append(v["slot"])

    def _open(self, sid: str, flip: bool, fmt: str, k: int) -> dict:
        if flip not in self.streams:
            self.streams[flip] = self.engine.stream(slots=self.max_sessions, flip=flip)
            self.free[flip] = list(range(self.max_sessions - 1, -1, -1))
        if not self.free[flip]:
            raise GastrtError(f"all {self.max_sessions} stream sessions of this shard are in use; close one "
                              "(DELETE /stream/SESSION) or wait for idle ones to expire")
        if fmt == "auto":   # as for /lift (an array: 17 joints need an explicit layout)
            fmt = guess_format(k, "array", "keypoints")
        plan = plan_layout(fmt, k, int(self.engine.num_joints), engine_input=engine_input_layout(self.engine),
                           source="keypoints")
        v = {"flip": flip, "slot": self.free[flip].pop(), "plan": plan, "k": k, "seen": time.monotonic()}
        self.sessions[sid] = v
        return v

    def _reply(self, sid: str, out: Any, slot: int, **extra: Any) -> dict:
        o = out.for_slot(slot)
        return {"session": sid, "frames": o.frames.tolist(), "poses_3d": _jsonable(o.poses),
                "filled": o.filled.tolist(), **extra}

    async def push(self, sid: str, body: Any) -> dict:
        """One frame {keypoints (K, 2) pixels, size, layout, flip (first frame only)} -> the
        poses that became final {frames, poses_3d (n, J, 3), filled}. Raises GastrtError."""
        async with self.lock:   # a Stream is not thread-safe; one push at a time per shard
            self._expire()
            kp, wh, fmt, flip = parse_request(body, frame=True)
            v = self.sessions.get(sid)
            if v is None:
                v = self._open(sid, flip, fmt, kp.shape[0])
            elif kp.shape[0] != v["k"]:
                raise GastrtError(f"keypoints: this session's frames have {v['k']} joints, got {kp.shape[0]}")
            v["seen"] = time.monotonic()
            plan = v["plan"]
            x = kp[plan.select].copy()
            x[(x == 0).all(axis=-1)] = np.nan   # (0, 0) = not detected: the stream holds its last value
            conv = normalize_screen(plan.convert(x[None, None]), *wh)[0, 0]
            stream = self.streams[v["flip"]]
            frames = np.zeros((stream.slots,) + conv.shape, np.float32)
            frames[v["slot"]] = conv
            present = np.zeros(stream.slots, bool)
            present[v["slot"]] = True
            out = stream.push(frames, present=present)
            return self._reply(sid, out, v["slot"])

    async def close(self, sid: str) -> dict:
        """Flush the session (its remaining frames) and free its slot."""
        async with self.lock:
            self._expire()
            v = self.sessions.get(sid)
            if v is None:
                raise KeyError(sid)
            out = self.streams[v["flip"]].flush(v["slot"])
            reply = self._reply(sid, out, v["slot"], closed=True)
            self._drop(sid)
            return reply

    async def stats(self) -> dict:
        return {"sessions": len(self.sessions), "max_sessions": self.max_sessions, "expired": self.expired,
                "session_timeout_s": self.timeout}


@serve.deployment(name="GastrtLift", max_ongoing_requests=256)
@serve.ingress(app)
class LiftServer:
    """HTTP ingress + /lift batching. Python handle: ``handle.lift.remote(body)`` -> the same
    dict as POST /lift (raises GastrtError for a bad request)."""

    def __init__(self, engine_path: str, shards: list, device: str = "cpu", threads: Optional[int] = 1,
                 max_batch_size: int = 32, batch_wait_s: float = 0.005):
        self.engine = load(engine_path, device=device, threads=threads)
        self.path = engine_path
        self.shards = list(shards)
        self.batch_sizes: collections.Counter = collections.Counter()
        self.max_batch_size, self.batch_wait_s = int(max_batch_size), float(batch_wait_s)
        self.lift_batch.set_max_batch_size(int(max_batch_size))
        self.lift_batch.set_batch_wait_timeout_s(float(batch_wait_s))
        try:   # the batch sizes as a Ray metric too (Prometheus via Ray's metrics export)
            from ray.util.metrics import Histogram
            self.metric = Histogram("gastrt_serve_batch_size", description="/lift requests per engine call",
                                    boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
        except Exception:  # noqa: BLE001  (metrics are optional)
            self.metric = None

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def lift_batch(self, items: list) -> list:
        """items: [(keypoints (P, T, J, 2), flip)] -> [poses (P, T, J_out, 3) or an exception].
        One engine call per (T, flip) group, people of all its requests stacked."""
        self.batch_sizes[len(items)] += 1
        if self.metric is not None:
            self.metric.observe(len(items))
        out: list = [None] * len(items)
        groups: dict = collections.defaultdict(list)
        for i, (x, flip) in enumerate(items):
            groups[(x.shape[1], flip)].append(i)
        for (_, flip), idx in groups.items():
            try:
                x = np.concatenate([items[i][0] for i in idx])
                y = await asyncio.to_thread(lift_keypoints, self.engine, x, flip=flip)
                s = 0
                for i in idx:
                    p = items[i][0].shape[0]
                    out[i] = y[s:s + p]
                    s += p
            except Exception as e:  # noqa: BLE001  (the requests get the error, the replica lives)
                for i in idx:
                    out[i] = e
        return out

    async def lift(self, body: Any) -> dict:
        """{keypoints, size, layout, flip} -> {poses_3d, valid, joints, units}. Raises GastrtError."""
        kp, wh, fmt, flip = parse_request(body)
        size_check = body.get("size_check", True)
        if not isinstance(size_check, bool):
            raise GastrtError(f"size_check must be true or false, got {size_check!r}")
        x, valid = prepare_request(self.engine, kp, wh, fmt, check_size=size_check,
                                   max_gap=body.get("max_gap"))
        y = await self.lift_batch((x, flip))
        if isinstance(y, BaseException):
            raise y
        single = kp.ndim == 3
        return {"poses_3d": _jsonable(y[0] if single else y), "valid": (valid[0] if single else valid).tolist(),
                "joints": joint_names(int(y.shape[-2])), "units": UNITS,
                "coordinate_frame": COORDINATE_FRAME}

    @app.post("/lift")
    async def http_lift(self, request: Request) -> Any:
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001
            return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
        try:
            return await self.lift(body)
        except Exception as e:  # noqa: BLE001
            return _error_response(e)

    def _shard(self, sid: str) -> Any:
        return self.shards[zlib.crc32(sid.encode()) % len(self.shards)]

    @app.post("/stream/{session}")
    async def http_push(self, session: str, request: Request) -> Any:
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001
            return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
        try:
            return await self._shard(session).push.remote(session, body)
        except Exception as e:  # noqa: BLE001
            return _error_response(_unwrap(e))

    @app.delete("/stream/{session}")
    async def http_close(self, session: str) -> Any:
        try:
            return await self._shard(session).close.remote(session)
        except Exception as e:  # noqa: BLE001
            e = _unwrap(e)
            if isinstance(e, KeyError):
                return JSONResponse({"error": f"no stream session {session!r} (closed, expired or never "
                                              "opened)"}, status_code=404)
            return _error_response(e)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info(self) -> dict:
        d = engine_info(self.engine, self.path)
        d["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        d["max_batch_size"], d["batch_wait_s"] = self.max_batch_size, self.batch_wait_s
        try:
            d["streams"] = [await s.stats.remote() for s in self.shards]
        except Exception as e:  # noqa: BLE001
            d["streams"] = error_text(e)
        return d


def build_app(engine_path: str, *, device: str = "cpu", threads: Optional[int] = 1, replicas: int = 1,
              autoscale: Optional[Tuple[int, int]] = None, max_batch_size: int = 32, batch_wait_s: float = 0.005,
              max_sessions: int = 256, session_timeout_s: float = 60.0, stream_shards: int = 1,
              num_cpus: Optional[float] = None, autoscaling_options: Optional[dict] = None) -> Any:
    """-> the Serve application (``serve.run(app, route_prefix='/')``). device 'cuda' reserves
    one GPU per replica; autoscale (min, max) replaces ``replicas``; autoscaling_options: more
    keys of Ray Serve's autoscaling_config (e.g. upscale_delay_s, look_back_period_s); num_cpus:
    CPUs reserved per replica (default ``threads``)."""
    import os

    path = os.path.abspath(os.fspath(engine_path))
    if not os.path.isfile(path):
        raise GastrtError(f"{engine_path}: engine file not found")
    on_gpu = str(device).startswith("cuda")
    res = {"num_gpus": 1} if on_gpu else {"num_cpus": num_cpus if num_cpus is not None else (threads or 1)}
    dev = "cuda" if on_gpu else "cpu"
    shards = [StreamShard.options(name=f"GastrtStream{i}", ray_actor_options=res).bind(
        path, dev, threads, max_sessions, session_timeout_s) for i in range(max(1, int(stream_shards)))]
    scale: dict = {"num_replicas": int(replicas)}
    if autoscale is not None:
        scale = {"autoscaling_config": {"min_replicas": int(autoscale[0]), "max_replicas": int(autoscale[1]),
                                        "target_ongoing_requests": max(2, int(max_batch_size)),
                                        **(autoscaling_options or {})}}
    return LiftServer.options(ray_actor_options=res, max_ongoing_requests=max(64, 4 * int(max_batch_size)),
                              **scale).bind(path, shards, dev, threads, max_batch_size, batch_wait_s)


def run_server(engine_path: str, *, host: str = "127.0.0.1", port: int = 8000, ray_address: Optional[str] = None,
               **opts: Any) -> int:
    """`gastrt serve`: start (or join) Ray, deploy, print the address, block until Ctrl-C, then
    tear the application down. -> exit status"""
    import ray

    application = build_app(engine_path, **opts)
    started = not ray.is_initialized()
    if started:
        init_ray(ray, ray_address)
    try:
        serve.start(http_options={"host": host, "port": int(port)})
        serve.run(application, name="gastrt", route_prefix="/", blocking=False)
        print(f"gastrt serve: {engine_path} on http://{host}:{port} (POST /lift, POST|DELETE /stream/SESSION, "
              "GET /info, GET /healthz); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("gastrt serve: stopping", flush=True)
        return 0
    finally:
        try:
            serve.delete("gastrt")
            if started:
                serve.shutdown()
        finally:
            if started:
                ray.shutdown()
