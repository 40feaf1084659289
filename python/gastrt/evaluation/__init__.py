"""`gastrt eval`: the standard Human3.6M / HumanEva-I evaluation of the originals (VideoPose3D
run.py; GAST-Net and RIE reuse it) on an engine, from the npz files their data preparation writes.

    gastrt eval model.gastrt --dataset h36m --data-3d data_3d_h36m.npz \\
        --data-2d data_2d_h36m_cpn_ft_h36m_dbb.npz [--subjects S9,S11] [--json out.json]

    from gastrt.evaluation import load_eval_data, engine_predictor, evaluate
    data = load_eval_data("h36m", "data_3d_h36m.npz", "data_2d_h36m_gt.npz")
    results = evaluate(data, my_predictor)          # any (T, J, 2) -> (T, J, 3) callable

Modules: ``npz`` (restricted reader for the pickled dicts), ``cameras`` (calibration),
``datasets`` (layouts and preprocessing), ``metrics`` (loss.py's four errors), ``run``
(evaluation loop, table, JSON), ``cli`` (``gastrt eval``).
"""
from .cli import add_parsers
from .datasets import EvalData, EvalSequence, load_eval_data, project_to_2d, world_to_camera
from .metrics import mean_velocity_error, mpjpe, n_mpjpe, p_mpjpe
from .run import (ActionResult, GroupResult, engine_predictor, evaluate, flip_tta, format_table,
                  report_document, write_json)

__all__ = [
    "add_parsers", "EvalData", "EvalSequence", "load_eval_data", "project_to_2d", "world_to_camera",
    "mean_velocity_error", "mpjpe", "n_mpjpe", "p_mpjpe", "ActionResult", "GroupResult",
    "engine_predictor", "evaluate", "flip_tta", "format_table", "report_document", "write_json",
]
