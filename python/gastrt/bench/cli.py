"""The ``gastrt bench`` command: ``add_parsers`` registers it on the gastrt CLI."""
from __future__ import annotations

import argparse
from typing import Any

from .measure import MIN_TIMED
from .presets import PRESETS
from .report import check_out_dir, format_table, require_matplotlib, write_json, write_plot
from .run import (DEFAULT_BATCHES, DEFAULT_COMPARE, DEFAULT_MAX_TIME, DEFAULT_REPEAT, DEFAULT_SEQ_LEN, DEFAULT_WARMUP,
                  FULL_BATCHES, FULL_MAX_TIME, FULL_REPEAT, FULL_WARMUP, run_bench)
from .schema import MODES, PRECISIONS


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.json:
        check_out_dir(args.json, "--json", [args.target])
    if args.plot:
        check_out_dir(args.plot, "--plot", [args.target])
        require_matplotlib()  # fail before measuring, not after
    result = run_bench(args.target, device=args.device, batches=args.batch, mode=args.mode, seq_len=args.seq_len,
                       precision=args.precision, compare=args.compare, flip=args.flip, warmup=args.warmup,
                       repeat=args.repeat, max_time=args.max_time, threads=args.threads, backend=args.backend,
                       causal=args.causal, progress=None, full=args.full)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot and result["rows"]:
        write_plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 130 if result.get("interrupted") else 0


def add_parsers(subparsers: Any) -> None:
    """Register ``bench`` on an argparse subparsers object (``func(args) -> int``)."""
    p = subparsers.add_parser(
        "bench", help="latency / throughput of an engine vs eager PyTorch (and torch.compile)",
        description="Measure latency, throughput and achieved FLOP/s of a gastrt engine and, in the same run "
                    "and in interleaved rounds, of the eager PyTorch reference model (and torch.compile of it). "
                    "The default run takes about a minute on a 2-core CPU; --full runs the longer sweep. "
                    "Progress goes to stderr; Ctrl-C prints (and saves) the batches measured so far.",
        epilog=f"presets: {', '.join(PRESETS)}. Default batch sizes: "
               + "; ".join(f"{d} {m}: {','.join(map(str, v))}" for (d, m), v in DEFAULT_BATCHES.items())
               + ". With --full: " + "; ".join(f"{d} {m}: {','.join(map(str, v))}" for (d, m), v in FULL_BATCHES.items())
               + ".")
    p.add_argument("target", help="engine file, checkpoint, or a built-in preset (e.g. gast-27)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--batch", default=None, metavar="B1,B2,...",
                   help="batch sizes (windows, sequences or stream slots per call; default depends on device and mode)")
    p.add_argument("--mode", default="window", choices=MODES,
                   help="window: lift; sequence: lift_sequence; stream: Stream.push (default window)")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, metavar="N",
                   help=f"frames per sequence in sequence mode (default {DEFAULT_SEQ_LEN})")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="engine precision for presets / checkpoints (default fp32; an engine file's own)")
    p.add_argument("--compare", default=None, metavar="LIST",
                   help="contenders besides gastrt: eager, compile, tensorrt (GPU only), a comma-separated "
                        f"subset, or none (default: {DEFAULT_COMPARE}; with --full: eager,compile, plus tensorrt "
                        "on a GPU where it is installed)")
    p.add_argument("--full", action="store_true",
                   help=f"the longer sweep: more batch sizes, torch.compile, up to {FULL_REPEAT} rounds and "
                        f"{FULL_MAX_TIME:g} s per batch (minutes)")
    p.add_argument("--flip", action="store_true", help="flip test-time augmentation for every contender")
    p.add_argument("--warmup", type=float, default=None, metavar="S",
                   help=f"warm-up seconds per contender and batch after its first call (default {DEFAULT_WARMUP}, "
                        f"--full {FULL_WARMUP})")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help=f"interleaved rounds per batch at most (default {DEFAULT_REPEAT}, --full {FULL_REPEAT})")
    p.add_argument("--max-time", type=float, default=None, metavar="S",
                   help=f"stop the rounds of a batch after S seconds, once {MIN_TIMED} are in "
                        f"(default {DEFAULT_MAX_TIME:g}, --full {FULL_MAX_TIME:g})")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for gastrt and torch alike (default 1, so a busy machine slows every "
                        "contender alike; with --full: all available cores)")
    p.add_argument("--backend", choices=("auto", "native", "numpy"), default="auto",
                   help="gastrt CPU backend (default: native when built)")
    p.add_argument("--causal", action="store_true", help="TARGET is a checkpoint trained with causal convolutions")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON (schema: gastrt.bench docstring)")
    p.add_argument("--plot", metavar="OUT.png", help="throughput vs batch plot (needs matplotlib)")
    p.set_defaults(func=_cmd_bench)
