"""The originals' final evaluation (VideoPose3D run.py ``evaluate`` / ``run_evaluation``; GAST-Net
trainval.py and RIE run.py are copies), with predictions from any callable.

Per action group (``datasets.action_group``: 'Walking 1' and 'Walking' -> 'Walking'), every
camera's whole sequence is lifted at once (edge-padded, as UnchunkedGenerator does); each metric
of a sequence is weighted by its frame count T, the sums divided by the action's frames; the
reported average is the plain mean over actions ("action-wise average"). Errors are in mm.

A predictor maps one sequence's keypoints (T, J_in, 2) to poses (T, J_out, 3); ``Engine.lift_sequence``
is one. Flip test-time augmentation is the predictor's business: :func:`engine_predictor` uses the
engine's own flip when its symmetry is the data's, else :func:`flip_tta` with the data's."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..engine_file import atomic_write
from ..errors import GastrtError
from ..skeletons import flip_joints, flip_permutation, merge_flipped
from .datasets import SPECS, EvalData, action_group, action_selected
from .metrics import mean_velocity_error, mpjpe, n_mpjpe, p_mpjpe

Predictor = Callable[[np.ndarray], np.ndarray]
METRICS = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")
LABELS = {"mpjpe": "MPJPE", "p_mpjpe": "P-MPJPE", "n_mpjpe": "N-MPJPE", "mpjve": "MPJVE"}
FORMAT = "gastrt-eval/1"


@dataclass
class ActionResult:
    """One action group's errors in mm, over ``sequences`` camera views and ``frames`` frames."""
    action: str
    sequences: int
    frames: int
    mpjpe: float
    p_mpjpe: float
    n_mpjpe: float
    mpjve: float


@dataclass
class GroupResult:
    """One run_evaluation(): all test subjects together (subject None) or one subject."""
    subject: str | None
    actions: list[ActionResult]

    @property
    def average(self) -> dict[str, float]:
        return mean_over(self.actions)


def mean_over(actions) -> dict[str, float]:
    """The action-wise average of every metric (np.mean over the actions, as run.py)."""
    return {m: float(np.mean([getattr(a, m) for a in actions])) for m in METRICS}


# -- predictors ------------------------------------------------------------------------------------

def flip_tta(predict: Predictor, kps_left, kps_right, joints_left, joints_right) -> Predictor:
    """The originals' test-time flip around any predictor: also predict the mirrored input
    (x negated, left/right keypoints swapped), mirror that prediction back (left/right joints
    swapped, x negated) and average the two."""
    def run(x: np.ndarray) -> np.ndarray:
        y = np.asarray(predict(x), dtype=np.float32)
        yf = np.asarray(predict(flip_joints(x, flip_permutation(x.shape[-2], kps_left, kps_right))),
                        dtype=np.float32)
        return merge_flipped(y, yf, flip_permutation(y.shape[-2], joints_left, joints_right))
    return run


def engine_predictor(engine, data: EvalData, flip: bool, path_2d: str = "the 2D file") -> tuple[Predictor, str | None]:
    """-> (predictor, how flip is done: None, 'engine' or 'data'). The originals flip the input
    with the 2D file's ``keypoints_symmetry`` and the output with the 3D skeleton's joints; the
    engine's own flip (one batch of 2) is used when its symmetry is exactly that."""
    if not flip:
        return engine.lift_sequence, None
    if data.kps_left is None:
        raise GastrtError(f"{path_2d}: metadata['keypoints_symmetry'] is needed for the flip "
                          "test-time augmentation (or pass --no-flip)")
    same = (list(engine.kps_left) == data.kps_left and list(engine.kps_right) == data.kps_right
            and list(engine.joints_left) == data.joints_left and list(engine.joints_right) == data.joints_right)
    if same:
        return (lambda x: engine.lift_sequence(x, flip=True)), "engine"
    p_in = flip_permutation(data.num_joints_in, data.kps_left, data.kps_right)
    p_out = flip_permutation(data.num_joints_out, data.joints_left, data.joints_right)

    def both(x: np.ndarray) -> np.ndarray:   # plain and mirrored as one batch of 2
        y = engine.lift_sequence(np.stack([x, flip_joints(x, p_in)]))
        return merge_flipped(y[0], y[1], p_out)
    return both, "data"


# -- evaluation ------------------------------------------------------------------------------------

def groups(data: EvalData, by_subject: bool, action_filter=None) -> list[tuple[str | None, dict]]:
    """run.py's all_actions / all_actions_by_subject: [(subject or None, {group: [(subject, action)]})],
    groups in order of first appearance (subjects as requested, actions in the 3D file's order)."""
    out: dict = {}
    for subject, action in data.sequences:
        if not action_selected(action, action_filter):
            continue
        g = out.setdefault(subject if by_subject else None, {})
        g.setdefault(action_group(action), []).append((subject, action))
    return list(out.items())


def evaluate_action(name: str, seqs, predict: Predictor) -> ActionResult:
    """evaluate() of run.py on one action group's sequences (list of EvalSequence)."""
    sums = dict.fromkeys(METRICS, 0.0)
    frames = vel_frames = 0
    for s in seqs:
        pred = np.asarray(predict(s.keypoints))
        target = s.target
        where = f"{s.subject} {s.action!r} camera {s.camera}"
        if pred.shape != target.shape:
            raise GastrtError(f"{where}: the prediction has shape {pred.shape}, expected {target.shape}")
        if not np.isfinite(pred).all():
            raise GastrtError(f"{where}: the prediction holds non-finite values (NaN/inf)")
        t = target.shape[0]
        sums["mpjpe"] += t * mpjpe(pred, target)
        sums["n_mpjpe"] += t * n_mpjpe(pred, target)
        sums["p_mpjpe"] += t * p_mpjpe(pred, target)
        if t >= 2:   # a 1-frame sequence has no velocity (run.py would average an empty array: NaN)
            sums["mpjve"] += t * mean_velocity_error(pred, target)
            vel_frames += t
        frames += t
    if not frames:
        raise GastrtError(f"action {name!r}: no frames to evaluate")
    vals = {m: sums[m] / frames * 1000 for m in ("mpjpe", "p_mpjpe", "n_mpjpe")}
    vals["mpjve"] = sums["mpjve"] / vel_frames * 1000 if vel_frames else float("nan")
    for m, v in vals.items():
        if not np.isfinite(v):
            detail = ("every sequence has a single frame" if m == "mpjve" else
                      "a predicted or true pose collapses to a point" if m in ("p_mpjpe", "n_mpjpe") else "")
            raise GastrtError(f"action {name!r}: {LABELS[m]} is undefined" + (f" ({detail})" if detail else ""))
    return ActionResult(name, len(seqs), frames, **vals)


def evaluate(data: EvalData, predict: Predictor, by_subject: bool = False, action_filter=None,
             progress: Callable[[str | None, str, int], None] | None = None) -> list[GroupResult]:
    """Every action group of ``data`` (optionally filtered, optionally per subject) through
    ``predict`` -> [GroupResult]. progress(subject, action group, sequence count) before each."""
    results = []
    for subject, acts in groups(data, by_subject, action_filter):
        rows = []
        for name, keys in acts.items():
            seqs = [s for k in keys for s in data.sequences[k]]
            if progress:
                progress(subject, name, len(seqs))
            rows.append(evaluate_action(name, seqs, predict))
        results.append(GroupResult(subject, rows))
    if not results:
        raise GastrtError("no action to evaluate")
    return results


# -- reporting -------------------------------------------------------------------------------------

def report_document(results: list[GroupResult], data: EvalData, *, engine=None, flip: bool,
                    flip_mode: str | None, by_subject: bool, action_filter, paths: dict) -> dict:
    """The JSON document: per group, every action's metrics (mm) and their action-wise average;
    ``average``: the single group's, or with by_subject the mean over all (subject, action) cells."""
    cells = [a for g in results for a in g.actions]
    doc = {
        "format": FORMAT,
        "dataset": data.dataset,
        "engine": None if engine is None else {
            "path": engine.path, "family": engine.family, "receptive_field": engine.receptive_field,
            "causal": engine.causal, "precision": engine.precision,
            "num_joints": engine.num_joints, "num_joints_out": engine.num_joints_out},
        **paths,
        "subjects": data.subjects,
        "actions_filter": list(action_filter) if action_filter else None,
        "flip": flip,
        "flip_symmetry": flip_mode,
        "by_subject": by_subject,
        "units": "mm",
        "notes": data.notes,
        "groups": [{"subject": g.subject, "actions": [asdict(a) for a in g.actions], "average": g.average}
                   for g in results],
        "average": mean_over(cells),
    }
    return doc


def _summary(avg: dict) -> list[str]:
    # run_evaluation()'s closing lines, rounded the same way
    return [f"Protocol #1   (MPJPE) action-wise average: {round(avg['mpjpe'], 1)} mm",
            f"Protocol #2 (P-MPJPE) action-wise average: {round(avg['p_mpjpe'], 1)} mm",
            f"Protocol #3 (N-MPJPE) action-wise average: {round(avg['n_mpjpe'], 1)} mm",
            f"Velocity      (MPJVE) action-wise average: {round(avg['mpjve'], 2)} mm"]


def format_table(doc: dict) -> str:
    """Per group: a row per action and an 'Average' row (mm), then run.py's summary lines."""
    title = SPECS[doc["dataset"]].title
    flip = f"flip TTA {'on' if doc['flip'] else 'off'}"
    lines = [f"{title}, subjects {','.join(doc['subjects'])}, {flip}; errors in mm"]
    for g in doc["groups"]:
        if g["subject"] is not None:
            lines += ["", f"Evaluating on subject {g['subject']}"]
        w = max(12, *(len(a["action"]) for a in g["actions"]))
        lines.append(f"{'Action':<{w}} {'Seqs':>5} {'Frames':>8} {'MPJPE':>8} {'P-MPJPE':>8} "
                     f"{'N-MPJPE':>8} {'MPJVE':>7}")
        for a in g["actions"] + [dict(g["average"], action="Average", sequences=None, frames=None)]:
            seqs = "" if a["sequences"] is None else a["sequences"]
            frames = "" if a["frames"] is None else a["frames"]
            lines.append(f"{a['action']:<{w}} {seqs:>5} {frames:>8} {a['mpjpe']:8.1f} {a['p_mpjpe']:8.1f} "
                         f"{a['n_mpjpe']:8.1f} {a['mpjve']:7.2f}")
        lines += _summary(g["average"])
    if len(doc["groups"]) > 1:
        lines += ["", "All subjects (mean over every subject-action cell):"] + _summary(doc["average"])
    return "\n".join(lines)


def format_original(doc: dict) -> str:
    """run.py's own log: evaluate()'s block per action, then the action-wise averages."""
    lines = []
    for g in doc["groups"]:
        if g["subject"] is not None:
            lines.append(f"Evaluating on subject {g['subject']}")
        for a in g["actions"]:
            lines += [f"----{a['action']}----", f"Test time augmentation: {doc['flip']}",
                      f"Protocol #1 Error (MPJPE): {a['mpjpe']} mm",
                      f"Protocol #2 Error (P-MPJPE): {a['p_mpjpe']} mm",
                      f"Protocol #3 Error (N-MPJPE): {a['n_mpjpe']} mm",
                      f"Velocity Error (MPJVE): {a['mpjve']} mm", "----------"]
        lines += _summary(g["average"])
        if g["subject"] is not None:
            lines.append("")
    return "\n".join(lines)


def write_json(doc: dict, path: str) -> None:
    """The document as indented JSON, written atomically (temp file + rename)."""
    data = (json.dumps(doc, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))
