"""Command line of the Ray layer: the corpus mode of ``gastrt lift`` (``add_corpus_arguments``
+ ``corpus_main``) and ``gastrt serve`` (``add_parsers``). Importing this module never imports
ray: the handlers do, and say which extra to install when it is missing."""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Any

from ..argtypes import positive_int
from ..errors import GastrtError


def _autoscale(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 1,4), got {text!r}") from None
    if lo < 0 or hi < max(lo, 1):
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return lo, hi


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _add(p: argparse.ArgumentParser, flag: str, **kw: Any) -> None:
    """add_argument unless the parser has the flag already (lift's own --device, --threads)."""
    if not any(flag in a.option_strings for a in p._actions):
        p.add_argument(flag, **kw)


def add_ray_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on this Ray cluster (bare --ray: the one `ray start` set up here, i.e. "
                        "'auto'); default: the cluster in RAY_ADDRESS, else a local Ray started "
                        "for this command")


def add_corpus_arguments(p: argparse.ArgumentParser) -> None:
    """The corpus-mode options of ``gastrt lift`` (the per-file ones -- --size, --format, --flip,
    --people, --world, --video -- are lift's own)."""
    _add(p, "--out-dir", metavar="DIR",
                   help="corpus mode: one output per input under DIR (names from the inputs' relative "
                        "paths) and DIR/manifest.parquet; re-running skips inputs already done")
    add_ray_argument(p)
    _add(p, "--inputs", metavar="MANIFEST", action="append", default=None,
                   help="CSV or Parquet list of inputs: columns path [, width, height] (relative paths "
                        "are relative to the manifest)")
    _add(p, "--threads", type=positive_int, default=1, metavar="N",
                   help="CPU threads per engine actor (default 1; one actor per N CPUs, less one CPU "
                        "for reading)")
    _add(p, "--actors", type=positive_int, default=None, metavar="N",
                   help="engine actors (default: one per GPU with --device cuda, else CPUs // threads - 1)")
    _add(p, "--device", default="cpu", help="cpu, or cuda: one GPU per engine actor")
    _add(p, "--retry-failed", action="store_true",
                   help="re-lift inputs an earlier run recorded as failed (default: skip them)")
    _add(p, "--json-output", action="store_true", help="write .json outputs instead of .npz")


def _inputs_of(args: argparse.Namespace) -> list:
    paths = getattr(args, "input", None) or []
    return [paths] if isinstance(paths, str) else list(paths)


def is_corpus_mode(args: argparse.Namespace) -> bool:
    """Several inputs, a manifest, --out-dir, a glob, or a folder that is not one OpenPose video."""
    from .inputs import is_openpose_dir

    paths = _inputs_of(args)
    if getattr(args, "out_dir", None) or getattr(args, "inputs", None) or len(paths) != 1:
        return True
    p = paths[0]
    if os.path.isdir(p):
        return not is_openpose_dir(p)
    return not os.path.exists(p) and glob.has_magic(p)


def wire_lift(lift_parser: argparse.ArgumentParser) -> None:
    """Give ``gastrt lift`` its corpus mode: INPUT takes one or more paths, the corpus options
    are added, and the command runs ``corpus_main`` in corpus mode (``is_corpus_mode``), else
    lift's own handler on the single input. Call after lifting.add_parsers."""
    for a in lift_parser._actions:
        if a.dest == "input" and not a.option_strings:
            a.nargs = "+"
            a.metavar = "INPUT"
            a.help = ("keypoint file or OpenPose output directory; several files, folders (searched "
                      "recursively) or globs lift a corpus into --out-dir (on Ray)")
    add_corpus_arguments(lift_parser)
    single = lift_parser.get_default("func")

    def run(args: argparse.Namespace) -> int:
        if is_corpus_mode(args):
            if getattr(args, "output", None):
                raise GastrtError("-o/--output names one output file; with several inputs, a folder or a glob "
                                  "use --out-dir DIR")
            return corpus_main(args)
        return single(argparse.Namespace(**dict(vars(args), input=_inputs_of(args)[0])))

    lift_parser.set_defaults(func=run)


def corpus_main(args: argparse.Namespace) -> int:
    """``gastrt lift ENGINE PATH... --out-dir DIR`` -> exit status (1 when any input failed).
    args: engine, input (one path or a list), out_dir, inputs, ray, threads, actors, device,
    retry_failed, json_output, and lift's format, size, flip, people, world, npz_video, device."""
    from .corpus import lift_corpus, require_ray

    require_ray("gastrt lift --out-dir")
    paths = _inputs_of(args) + list(getattr(args, "inputs", None) or [])
    if not paths:
        raise GastrtError("give keypoint files, folders or globs, or --inputs MANIFEST")
    if not getattr(args, "out_dir", None):
        raise GastrtError("several inputs, a folder or a glob need --out-dir DIR (where the outputs and "
                          "manifest.parquet go)")
    import ray

    started = not ray.is_initialized()
    try:
        df = lift_corpus(args.engine, paths, args.out_dir, size=getattr(args, "size", None),
                         fmt=getattr(args, "format", "auto"), flip=getattr(args, "flip", True),
                         people=getattr(args, "people", None), world=getattr(args, "world", False),
                         video=getattr(args, "npz_video", None) or getattr(args, "video", None),
                         device=getattr(args, "device", "cpu") or "cpu",
                         check_size=getattr(args, "size_check", True),
                         max_gap=getattr(args, "max_gap", None),
                         threads=getattr(args, "threads", 1), actors=getattr(args, "actors", None),
                         ray_address=getattr(args, "ray", None),
                         output_ext=".json" if getattr(args, "json_output", False) else ".npz",
                         retry_failed=getattr(args, "retry_failed", False), progress=sys.stderr.isatty())
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    for r in df[df["status"] == "error"].itertuples():
        print(f"gastrt: error: {r.error}", file=sys.stderr)
    print(f"{df.attrs['summary']}; manifest {df.attrs['manifest']}")
    return 1 if (df["status"] == "error").any() else 0


# --- gastrt serve --------------------------------------------------------------------------------

def _cmd_serve(args: argparse.Namespace) -> int:
    from .corpus import require_ray

    require_ray("gastrt serve", ("ray.serve", "fastapi"))
    from .serve import run_server

    if not os.path.isfile(args.engine):
        raise GastrtError(f"{args.engine}: engine file not found")
    return run_server(args.engine, host=args.host, port=args.port, ray_address=args.ray,
                      replicas=args.replicas, autoscale=args.autoscale, device=args.device,
                      threads=args.threads, max_batch_size=args.max_batch_size,
                      batch_wait_s=args.batch_wait_ms / 1000.0, max_sessions=args.max_sessions,
                      session_timeout_s=args.session_timeout, stream_shards=args.stream_shards)


def add_parsers(subparsers: Any) -> None:
    """Register ``serve`` on an argparse subparsers object (``func(args) -> int``)."""
    p = subparsers.add_parser(
        "serve", help="serve an engine over HTTP on Ray Serve (batched /lift, streaming sessions)",
        description="Ray Serve deployment of an engine. POST /lift {keypoints (T,K,2) or (P,T,K,2) pixels, "
                    "size [w,h], layout, flip} -> {poses_3d, joints, units}; POST /stream/SESSION one frame "
                    "{keypoints (K,2), size, layout} -> the poses that became final; DELETE /stream/SESSION "
                    "flushes it; GET /healthz, GET /info (engine metadata and batch sizes). Needs the ray "
                    "extra (pip install 'gastrt[ray]'); starts a local Ray unless --ray names a cluster. "
                    "Ctrl-C stops it.")
    p.add_argument("engine", help="engine file (.gastrt)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=positive_int, default=8000, help="HTTP port (default 8000)")
    add_ray_argument(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--replicas", type=positive_int, default=1, metavar="N", help="lift replicas (default 1)")
    g.add_argument("--autoscale", type=_autoscale, default=None, metavar="MIN,MAX",
                   help="autoscale the lift replicas between MIN and MAX on ongoing requests")
    _add(p, "--device", default="cpu", help="cpu, or cuda: one GPU per replica")
    _add(p, "--threads", type=positive_int, default=1, metavar="N", help="CPU threads per replica")
    p.add_argument("--max-batch-size", type=positive_int, default=32, metavar="N",
                   help="most /lift requests batched into one engine call (default 32)")
    p.add_argument("--batch-wait-ms", type=_positive_float, default=5.0, metavar="MS",
                   help="how long a batch waits for more requests (default 5 ms)")
    p.add_argument("--max-sessions", type=positive_int, default=256, metavar="N",
                   help="stream sessions per stream shard (default 256)")
    p.add_argument("--session-timeout", type=_positive_float, default=60.0, metavar="S",
                   help="drop a stream session idle for S seconds (default 60)")
    p.add_argument("--stream-shards", type=positive_int, default=1, metavar="N",
                   help="stream deployments (one replica each; sessions hash to one; default 1)")
    p.set_defaults(func=_cmd_serve)
