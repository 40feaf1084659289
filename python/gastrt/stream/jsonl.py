"""``gastrt stream``: 2D keypoints as JSON lines on stdin -> 3D poses as JSON lines on stdout
(a pipe between a 2D detector and a consumer of 3D poses), over a :class:`~gastrt.stream.Stream`.

A layer above the stream package: it loads engines and converts keypoint layouts. The CLI loads
this module as a plugin (``add_parsers``); the ``gastrt.stream`` package does not import it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable

import numpy as np

from ..argtypes import positive_int
from ..engine import load
from ..errors import GastrtError
from ..keypoints import (FORMATS, engine_input_layout, guess_format, normalize_screen, parse_size, plan_layout,
                         present_mask)
from .core import Stream, StreamOutput

__all__ = ["add_parsers", "stream_jsonl"]

_CLI_DOC = """\
Read 2D keypoints as JSON lines on stdin, write 3D poses as JSON lines on stdout (a pipe between
a 2D detector and a consumer).

Input, one JSON object per line (blank lines are skipped):
  {"frame": 12, "size": [1920, 1080],
   "people": [{"id": 3, "keypoints": [[x, y], ...], "scores": [s, ...]}]}
  frame: optional label (default: the line's index); size: optional [width, height] in pixels
  (else --size); people: the detections of this frame (may be empty); id: a stable person id
  (default: the position in the list); keypoints: pixel [x, y] (or [x, y, score]) per joint of
  the --format layout; null, NaN, (0, 0) or a score <= 0 marks a missing joint.

Output, one JSON object per input line, in input order, as soon as every person in it is final
(lookahead frames later; at once for a causal engine):
  {"frame": 12, "people": [{"id": 3, "pose_3d": [[x, y, z], ...], "filled": false}]}
  pose_3d: camera space, the engine's output joints; filled: some joint of this person in this
  frame was missing and was held from the last frame (or, in a person's first frame, placed at
  the mean of the detected joints).

People map to slots: a new id takes a free slot; an id absent from a frame ends its sequence
(its remaining frames are flushed; if it comes back it starts a new sequence). An id that finds
no free slot is dropped (a warning on stderr, nothing in the output). A person with no detected
joint in a frame counts as absent. At end of input every sequence is flushed.
"""


class _Person:
    __slots__ = ("slot", "held")

    def __init__(self, slot: int):
        self.slot = slot
        self.held: np.ndarray | None = None   # last (filled) source-layout keypoints


def _parse_person(p: Any, i: int, where: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
    if not isinstance(p, dict):
        raise GastrtError(f"{where}: people[{i}] must be an object with 'keypoints'")
    pid = p.get("id", i)
    if not isinstance(pid, (int, str)) or isinstance(pid, bool):
        raise GastrtError(f"{where}: people[{i}].id must be an integer or a string")
    kp = p.get("keypoints")
    if not isinstance(kp, list) or not kp:
        raise GastrtError(f"{where}: people[{i}].keypoints must be a non-empty list of [x, y]")
    pts = np.full((len(kp), 2), np.nan, np.float64)
    sc = np.full(len(kp), np.nan, np.float64)
    have_sc = False
    for k, v in enumerate(kp):
        if v is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) not in (2, 3):
            raise GastrtError(f"{where}: people[{i}].keypoints[{k}] must be [x, y] or [x, y, score]")
        try:
            pts[k] = [np.nan if c is None else float(c) for c in v[:2]]
            if len(v) == 3:
                sc[k] = np.nan if v[2] is None else float(v[2])
                have_sc = True
        except (TypeError, ValueError):
            raise GastrtError(f"{where}: people[{i}].keypoints[{k}] is not numeric") from None
    scores = p.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != len(kp):
            raise GastrtError(f"{where}: people[{i}].scores must be a list with one score per keypoint")
        try:
            sc = np.array([np.nan if s is None else float(s) for s in scores], np.float64)
        except (TypeError, ValueError):
            raise GastrtError(f"{where}: people[{i}].scores is not numeric") from None
        have_sc = True
    return pid, pts, (sc if have_sc else None)


def stream_jsonl(engine, lines: Iterable[str], write, *, fmt: str = "auto", size=None, slots: int = 8,
                 flip: bool = False, warn=None) -> dict:
    """The ``gastrt stream`` loop: ``lines`` (an iterable of JSON strings) in, ``write(str)`` called
    with one JSON line (newline included) per finished input frame. Returns counters
    {"frames", "poses", "dropped"}. See ``_CLI_DOC`` for the schema."""
    if fmt != "auto" and fmt not in FORMATS:
        raise GastrtError(f"unknown keypoint format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    wh_default = parse_size(size)
    warn = warn or (lambda msg: print(f"gastrt: warning: {msg}", file=sys.stderr))
    stream = Stream(engine, slots=slots, flip=flip)
    j_eng = stream.num_joints
    engine_input = engine_input_layout(engine)
    layouts: dict[int, Any] = {}
    people: dict[Any, _Person] = {}            # id -> its slot, for the people being tracked
    free = list(range(slots))
    slot_owner: dict[int, Any] = {}            # slot -> id
    slot_lines: list[dict[int, int]] = [{} for _ in range(slots)]  # frame in the sequence -> input line
    dropped_ids: set = set()
    frames_buf = np.zeros((slots, j_eng, 2), np.float32)
    pending: dict[int, dict] = {}              # input line -> {"frame", "ids", "done": {id: person}}
    order: list[int] = []
    counters = {"frames": 0, "poses": 0, "dropped": 0}

    def take(out: StreamOutput) -> None:
        for s, fidx, pose, was_filled in out:
            pid = slot_owner[s]
            ent = pending[slot_lines[s].pop(fidx)]
            ent["done"][pid] = {"id": pid, "pose_3d": np.round(pose.astype(np.float64), 6).tolist(),
                                "filled": bool(was_filled)}
            counters["poses"] += 1

    def drain() -> None:
        while order:
            ent = pending[order[0]]
            if len(ent["done"]) < len(ent["ids"]):
                break
            del pending[order.pop(0)]
            ppl = [ent["done"][pid] for pid in ent["ids"]]
            write(json.dumps({"frame": ent["frame"], "people": ppl}, allow_nan=False) + "\n")
            counters["frames"] += 1

    def end_people(ids: list) -> None:
        """Flush the sequences of ``ids`` (one batched flush) and free their slots."""
        if not ids:
            return
        sl = [people.pop(pid).slot for pid in ids]
        take(stream.flush(sl))
        for s in sl:
            stream.reset(s)
            slot_owner.pop(s)
            slot_lines[s].clear()
            free.append(s)
        free.sort()

    line_no = 0
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        where = f"stdin line {line_no + 1}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise GastrtError(f"{where}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise GastrtError(f"{where}: not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("people", None), list):
            raise GastrtError(f"{where}: expected an object with a 'people' list")
        wh = wh_default
        if obj.get("size") is not None:
            wh = parse_size(obj["size"])
        if wh is None:
            raise GastrtError(f"{where}: no image size: pass --size WIDTHxHEIGHT or put \"size\": [w, h] "
                              "in the lines")
        label = obj.get("frame", line_no)
        dets: dict[Any, tuple[np.ndarray, bool, np.ndarray]] = {}
        for i, p in enumerate(obj["people"]):
            pid, pts, sc = _parse_person(p, i, where)
            if pid in dets:
                raise GastrtError(f"{where}: person id {pid!r} appears twice")
            nj = pts.shape[0]
            lp = layouts.get(nj)
            if lp is None:
                f_ = fmt if fmt != "auto" else guess_format(nj, "json", "stdin")
                lp = layouts[nj] = plan_layout(f_, nj, j_eng, engine_input=engine_input, source="stdin")
            sel = pts[lp.select]
            pres = present_mask(sel, None if sc is None else sc[lp.select])
            if not pres.any():
                continue                          # not detected in this frame: absent
            per = people.get(pid)
            missing = ~pres
            if missing.any():
                if per is not None and per.held is not None:
                    sel[missing] = per.held[missing]
                else:                             # first frame: the mean of the detected joints
                    sel[missing] = sel[pres].mean(axis=0)
            conv = lp.convert(sel.astype(np.float32)[None])[0]
            dets[pid] = (normalize_screen(conv, *wh), bool(missing.any()), sel)
        # people gone from this frame end their sequence (their slots become free)
        end_people([pid for pid in people if pid not in dets])
        # new people take free slots
        for pid in dets:
            if pid not in people:
                if not free:
                    if pid not in dropped_ids:
                        warn(f"{where}: no free slot for person {pid!r} ({slots} slots in use); dropped "
                             "(raise --slots)")
                        dropped_ids.add(pid)
                    counters["dropped"] += 1
                    continue
                s = free.pop(0)
                stream.reset(s)
                people[pid] = _Person(s)
                slot_owner[s] = pid
        present = np.zeros(slots, bool)
        filled = np.zeros(slots, bool)
        ids_here = []
        for pid, (kp, was_filled, sel) in dets.items():
            per = people.get(pid)
            if per is None:
                continue
            frames_buf[per.slot] = kp
            present[per.slot] = True
            filled[per.slot] = was_filled
            per.held = sel
            slot_lines[per.slot][stream.frames_pushed(per.slot)] = line_no
            ids_here.append(pid)
        pending[line_no] = {"frame": label, "ids": ids_here, "done": {}}
        order.append(line_no)
        if present.any():
            take(stream.push(frames_buf, present, filled))
        drain()
        line_no += 1
    end_people(list(people))
    drain()
    return counters


def _cmd_stream(args: argparse.Namespace) -> int:
    eng = load(args.engine, device=args.device, threads=args.threads)
    out = sys.stdout

    def write(s: str) -> None:
        out.write(s)
        out.flush()

    stream_jsonl(eng, sys.stdin, write, fmt=args.format, size=args.size, slots=args.slots, flip=args.flip)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``gastrt stream`` on an argparse subparsers object."""
    p = subparsers.add_parser("stream", help="lift JSON-lines 2D keypoints from stdin to 3D poses on stdout, "
                              "frame by frame", description=_CLI_DOC,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", help="engine file (.gastrt)")
    p.add_argument("--format", default="auto", choices=("auto",) + tuple(FORMATS),
                   help="2D joint layout of the keypoints (default: auto, from the joint count: 17 = COCO)")
    p.add_argument("--size", metavar="WxH", help="video resolution in pixels (or \"size\" in each line)")
    p.add_argument("--slots", type=positive_int, default=8,
                   help="people tracked at once (default 8); more are dropped with a warning")
    p.add_argument("--flip", action="store_true", help="test-time flip augmentation (2x the compute)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: where the per-frame columns are computed")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    p.set_defaults(func=_cmd_stream)
