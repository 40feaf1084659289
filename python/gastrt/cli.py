"""`gastrt` command line: build, info, and the subcommands other modules register
(lift / render, bench, export, stream). User errors print one line and exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ._version import __version__
from .engine_file import PRECISIONS
from .errors import NativeError, shorten


def _subcommand_registrars() -> tuple:
    """add_parsers(subparsers) of the modules that contribute subcommands, in help order."""
    from .bench import add_parsers as bench
    from .evaluation import add_parsers as evaluate
    from .lifting import add_parsers as lift
    from .onnx_export import add_parsers as export
    from .ray.cli import add_parsers as serve  # imports no ray: its handlers do
    from .render import add_parsers as render
    from .stream.jsonl import add_parsers as stream
    return (lift, render, bench, evaluate, export, stream, serve)


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def cmd_build(args) -> int:
    from .builder import build

    if args.backend == "tensorrt":
        from .tensorrt_builder import build_tensorrt_cli
        return build_tensorrt_cli(args)
    if args.precision == "auto":
        from .bench.precision import build_auto
        out, _ = build_auto(args.checkpoint, args.output, causal=args.causal, allow_nonfinite=args.allow_nonfinite)
    else:
        out = build(args.checkpoint, args.output, causal=args.causal, precision=args.precision,
                    allow_nonfinite=args.allow_nonfinite)
    from .engine_file import read_engine
    meta, _ = read_engine(out, verify=False)
    h = meta["hyper"]
    print(f"detected   {_family_line(meta)}")
    print(f"joints     {meta['num_joints']} in, {meta['num_joints_out']} out"
          + (f" ({meta['skeleton']})" if meta.get("skeleton") else ""))
    print(f"receptive  {meta['receptive_field']} frames (filter widths {h['filter_widths']}), "
          f"{'causal' if meta['causal'] else 'symmetric'}")
    print(f"channels   {h['channels']}")
    print(f"parameters {meta['parameter_count']:,}")
    print(f"precision  {_precision_line(meta)}")
    print(f"wrote      {out} ({os.path.getsize(out):,} bytes)")
    return 0


def _precision_line(meta: dict, arithmetic_here: bool = False) -> str:
    """The engine's precision (and how --precision auto chose it); arithmetic_here: also what the
    native CPU runtime of this machine computes a 16-bit engine in (``gastrt info``)."""
    from .backends import arithmetic
    from .bench.precision import describe_choice

    how = describe_choice(meta.get("precision_choice"))
    line = meta["precision"] + (f" ({how})" if how else "")
    if meta["precision"] == "fp32" or not arithmetic_here:
        return line
    return line + f"; the native CPU runtime here computes in {arithmetic(meta['precision'])}"


def _family_line(meta: dict) -> str:
    from .families.detect import FAMILY_NAMES

    fam = FAMILY_NAMES.get(meta["family"], meta["family"])
    h = meta["hyper"]
    extra = ""
    if meta["family"] == "rie":
        extra = f", stage {h['stage']}, latent {h['latent']}"
    if h.get("trajectory"):
        extra += ", with trajectory model"
    return fam + extra


def _info_plan(args) -> int:
    from .backends.tensorrt_runner import plan_metadata, read_plan

    header, engines = read_plan(args.engine)
    plan_metadata(args.engine, header.get("meta"))   # crafted metadata: one EngineFileError
    if args.json:
        meta = {k: v for k, v in header.get("meta", {}).items() if k not in ("plans", "weight_shapes")}
        print(json.dumps(dict(header, meta=meta), indent=2, sort_keys=True, default=str))
        return 0
    meta = header.get("meta", {})
    print(f"engine      {args.engine} (TensorRT plan)")
    print(f"family      {_family_line(meta) if meta else '?'}")
    for k in ("receptive_field", "num_joints", "causal", "precision"):
        print(f"{k:<11} {meta.get(k)}")
    print(f"built with  TensorRT {header.get('tensorrt_version')} for {header.get('device_name')} "
          f"(sm_{header.get('compute_capability')})")
    print(f"engines     {', '.join(sorted(engines))}")
    print(f"file size   {os.path.getsize(args.engine):,} bytes")
    return 0


def cmd_info(args) -> int:
    from .backends.tensorrt_runner import is_tensorrt_plan
    from .engine import load

    if is_tensorrt_plan(args.engine):
        return _info_plan(args)
    eng = load(args.engine, backend="numpy")
    meta = eng.metadata
    if args.json:
        m = {k: v for k, v in meta.items() if k != "plans"}
        m["flops_per_frame"] = {mode: eng.flops_per_frame(mode) for mode in ("window", "sequence")}
        m["file_bytes"] = os.path.getsize(args.engine)
        m["stored_weight_count"] = _stored_weights(eng)
        print(json.dumps(m, indent=2, sort_keys=True))
        return 0
    h = meta["hyper"]
    seq_ok = "sequence" in eng.plans["pos"].modes
    rows = [
        ("engine", args.engine),
        ("family", _family_line(meta)),
        ("joints", f"{meta['num_joints']} in, {meta['num_joints_out']} out"
         + (f" ({meta['skeleton']})" if meta.get("skeleton") else "")),
        ("receptive field", f"{meta['receptive_field']} frames, widths {h['filter_widths']}, "
         f"{'causal (shift ' + str(meta['causal_shift']) + ')' if meta['causal'] else 'symmetric'}"),
        ("channels", str(h["channels"])),
        ("parameters", f"{meta['parameter_count']:,} trainable in the checkpoint; {_stored_weights(eng):,} values "
                       "stored after folding each BatchNorm into its convolution (what `gastrt export` counts)"),
        ("precision", _precision_line(meta, arithmetic_here=True)),
        ("FLOPs/frame window", _fmt_count(eng.flops_per_frame("window"))),
        ("FLOPs/frame sequence", _fmt_count(eng.flops_per_frame("sequence")) if seq_ok
         else "n/a (windows: encodes relative to each window's centre)"),
        ("file size", f"{os.path.getsize(args.engine):,} bytes"),
        ("source", f"{meta['source_name']} sha256 {meta['source_sha256'][:16]}…"),
        ("built by", f"gastrt {meta['gastrt_version']} (engine format {meta['format_version']})"),
    ]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0


def _stored_weights(eng) -> int:
    """Values the engine stores (BatchNorm folded into the convolutions, GAST projections packed)."""
    return int(sum(int(w.size) for w in eng.weights.values()))


# Python-API words in library messages, and what a command-line user types instead.
_CLI_WORDS = (("device='cpu'", "--device cpu"), ("device=\"cpu\"", "--device cpu"),
              ("gastrt.build_config()['cuda'] is False", "`python -c \"import gastrt; print(gastrt.build_config())\"` "
                                                         "shows cuda: false"))


def cli_words(msg: str) -> str:
    for api, cli in _CLI_WORDS:
        msg = msg.replace(api, cli)
    return msg


MAX_ERROR_CHARS = 285   # + "gastrt: error: " = 300


def one_line(msg: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message as one line of at most ``limit`` characters: line breaks become "; ",
    and an over-long message (a 50 MB key echoed back) keeps its start and its end."""
    return shorten("; ".join(part.strip() for part in msg.splitlines() if part.strip()), limit)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gastrt", description="Fast 2D->3D pose lifting engines "
                                "(GAST-Net, VideoPose3D, RIE).")
    p.add_argument("--version", action="version", version=f"gastrt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    b = sub.add_parser("build", help="checkpoint -> engine file")
    b.add_argument("checkpoint", help="checkpoint saved by the original training scripts (.bin/.pth)")
    b.add_argument("-o", "--output", help="engine path (default: CHECKPOINT with .gastrt)")
    b.add_argument("--causal", action="store_true", help="the checkpoint was trained with causal convolutions")
    b.add_argument("--precision", choices=PRECISIONS + ("auto",), default="fp32",
                   help="weight precision (default fp32); auto (CPU engines): build each, time them on this "
                        "machine and keep the fastest within its tolerance of fp32 (a few seconds)")
    b.add_argument("--allow-nonfinite", action="store_true",
                   help="build even when weights hold NaN / inf (the engine then outputs NaN)")
    b.add_argument("--backend", choices=("gastrt", "tensorrt"), default="gastrt",
                   help="gastrt engine file (default) or a TensorRT plan")
    b.add_argument("--min-batch", type=int, default=1)
    b.add_argument("--opt-batch", type=int, default=64)
    b.add_argument("--max-batch", type=int, default=4096)
    b.add_argument("--max-frames", type=int, default=None, help="TensorRT: longest sequence per profile")
    b.add_argument("--seq-max-batch", type=int, default=None, help="TensorRT: most sequences per call")
    b.add_argument("--no-sequence", action="store_true", help="TensorRT: window engine only")
    b.add_argument("--device", default="cuda", help="TensorRT: the GPU to build on: cuda, cuda:N or N (default cuda)")
    b.add_argument("--verbose", action="store_true", help="TensorRT: builder log")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("info", help="describe an engine file")
    i.add_argument("engine")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    for add_parsers in _subcommand_registrars():
        add_parsers(sub)
    from .ray.cli import wire_lift
    wire_lift(sub.choices["lift"])  # several inputs / a folder / --out-dir: the corpus job on Ray
    return p


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gastrt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gastrt info x | head`: the reader left; nothing to report
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        except (OSError, ValueError):
            pass
        return 0
    except (ValueError, OSError) as e:  # GastrtError, CheckpointError and friends are ValueErrors
        msg = str(e) or e.__class__.__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
        print(f"gastrt: error: {one_line(cli_words(msg))}", file=sys.stderr)
        return 2
    except NativeError as e:  # a failure inside the compiled runtime: one line, no traceback
        print(f"gastrt: error: {one_line(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
