"""The ``gastrt eval`` command: ``add_parsers`` registers it on the gastrt CLI."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..engine_file import check_output_path
from ..errors import GastrtError
from .datasets import SPECS, load_eval_data, spec
from .run import engine_predictor, evaluate, format_original, format_table, report_document, write_json


def _names(values) -> list[str] | None:
    """'A,B' (or the option repeated) -> ['A', 'B']; '*' -> None (everything), as run.py's -a."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if not out:
        raise GastrtError("--actions / --subjects: empty list")
    return None if out == ["*"] else out


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..engine import load

    sp = spec(args.dataset)
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(d):   # fail before the evaluation, not after
            raise GastrtError(f"--json {args.json}: directory {d} does not exist")
        check_output_path(args.json, [p for p in (args.engine, args.data_3d, args.data_2d) if os.path.exists(p)])
    subjects = _names(args.subjects) or list(sp.default_subjects)
    actions = _names(args.actions) if args.actions else (list(sp.default_actions) if sp.default_actions else None)
    by_subject = sp.default_by_subject if args.by_subject is None else args.by_subject
    engine = load(args.engine, device=args.device, threads=args.threads, backend=args.backend)
    data = load_eval_data(args.dataset, args.data_3d, args.data_2d, subjects, actions,
                          num_joints_in=engine.num_joints, num_joints_out=engine.num_joints_out)
    predict, flip_mode = engine_predictor(engine, data, flip=not args.no_flip, path_2d=args.data_2d)

    def progress(subject, action, n):
        if not args.quiet:
            print(f"  {subject + ' ' if subject else ''}{action}: {n} sequences", file=sys.stderr, flush=True)

    results = evaluate(data, predict, by_subject=by_subject, action_filter=actions, progress=progress)
    doc = report_document(results, data, engine=engine, flip=not args.no_flip, flip_mode=flip_mode,
                          by_subject=by_subject, action_filter=actions,
                          paths={"data_3d": args.data_3d, "data_2d": args.data_2d})
    if args.verbose:
        print(format_original(doc))
    for note in data.notes:
        print(f"note: {note}")
    print(format_table(doc))
    if args.json:
        write_json(doc, args.json)
        print(f"wrote {args.json}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``eval`` on an argparse subparsers object (``func(args) -> int``)."""
    p = subparsers.add_parser(
        "eval", help="Human3.6M / HumanEva-I accuracy of an engine (MPJPE, P-MPJPE, N-MPJPE, MPJVE)",
        description="The originals' final evaluation (VideoPose3D run.py --evaluate): every test "
                    "sequence lifted whole, flip test-time augmentation, errors per action and their "
                    "action-wise average, in mm. Reads the npz files of VideoPose3D's data preparation.",
        epilog="defaults: " + "; ".join(
            f"{k}: subjects {','.join(s.default_subjects)}, actions "
            f"{','.join(s.default_actions) if s.default_actions else 'all'}"
            f"{', per subject' if s.default_by_subject else ''}" for k, s in SPECS.items()))
    p.add_argument("engine", help="engine file (gastrt build CHECKPOINT)")
    p.add_argument("--dataset", choices=tuple(SPECS), default="h36m", help="default h36m")
    p.add_argument("--data-3d", required=True, metavar="NPZ", help="data_3d_h36m.npz / data_3d_humaneva15.npz")
    p.add_argument("--data-2d", required=True, metavar="NPZ",
                   help="2D keypoints, e.g. data_2d_h36m_cpn_ft_h36m_dbb.npz or data_2d_h36m_gt.npz")
    p.add_argument("--subjects", action="append", metavar="LIST",
                   help="test subjects, comma-separated (default: the dataset's test subjects)")
    p.add_argument("--actions", action="append", metavar="LIST",
                   help="action prefixes, comma-separated, as run.py -a ('Walk' keeps Walking, WalkDog, "
                        "WalkTogether); '*' for all")
    p.add_argument("--by-subject", action=argparse.BooleanOptionalAction, default=None,
                   help="errors per subject (default: on for humaneva, off for h36m)")
    p.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation")
    p.add_argument("--json", metavar="OUT.json", help="also write the numbers as JSON")
    p.add_argument("--verbose", action="store_true", help="also print run.py's per-action log")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument("--backend", choices=("native", "numpy"), default=None,
                   help="CPU backend (default: native when built)")
    p.set_defaults(func=_cmd_eval)
