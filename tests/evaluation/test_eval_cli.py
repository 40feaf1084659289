"""`gastrt eval` end to end with random-weight engines on synthetic files in the originals'
layouts: the table, the JSON (same numbers), and one-line errors with exit status 2."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import gastrt
import gastrt.cli
from eval_helpers import write_h36m, write_humaneva
from gastrt.evaluation import add_parsers
from gastrt.evaluation.datasets import load_eval_data
from gastrt.evaluation.run import evaluate
from gastrt_testutil import assert_no_temp_files


@pytest.fixture
def cli(monkeypatch, capsys):
    """gastrt.cli.main with `eval` registered (unless the CLI already registers it) -> (rc, out, err)."""
    orig = gastrt.cli._subcommand_registrars

    def registrars():
        regs = orig()
        return regs if add_parsers in regs else regs + (add_parsers,)
    monkeypatch.setattr(gastrt.cli, "_subcommand_registrars", registrars)

    def run(*argv):
        rc = gastrt.cli.main(["eval", *map(str, argv)])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.fixture(scope="module")
def h36m_files(tmp_path_factory):
    return write_h36m(str(tmp_path_factory.mktemp("cli-h36m")))[:2]


def table_rows(text: str) -> dict:
    """Action -> [MPJPE, P-MPJPE, N-MPJPE, MPJVE] strings of the printed table(s), first occurrence."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+(?:\d+\s+\d+\s+)?(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)$", line)
        if m:
            rows.setdefault(m.group(1), list(m.groups()[1:]))
    return rows


def test_h36m_end_to_end(cli, h36m_files, eval_engines, tmp_path):
    p3, p2 = h36m_files
    out_json = tmp_path / "r.json"
    rc, out, err = cli(eval_engines["h36m"], "--data-3d", p3, "--data-2d", p2, "--json", out_json,
                       "--backend", "numpy", "--threads", 1)
    assert rc == 0, err
    rows = table_rows(out)
    assert list(rows) == ["Walking", "Sitting", "Directions", "Average"], out
    for line in ("Protocol #1   (MPJPE) action-wise average:", "Velocity      (MPJVE) action-wise average:"):
        assert line in out
    assert "Walking: 16 sequences" in err           # progress on stderr
    doc = json.loads(out_json.read_text())
    assert doc["format"] == "gastrt-eval/1" and doc["dataset"] == "h36m" and doc["units"] == "mm"
    assert doc["flip"] is True and doc["flip_symmetry"] == "engine" and doc["subjects"] == ["S9", "S11"]
    (group,) = doc["groups"]
    # the table prints the JSON's numbers (1 decimal, MPJVE 2)
    for a in group["actions"] + [dict(group["average"], action="Average")]:
        want = [f"{a['mpjpe']:.1f}", f"{a['p_mpjpe']:.1f}", f"{a['n_mpjpe']:.1f}", f"{a['mpjve']:.2f}"]
        assert rows[a["action"]] == want
        assert all(np.isfinite(a[m]) and a[m] > 0 for m in ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve"))
    assert group["average"]["mpjpe"] == pytest.approx(np.mean([a["mpjpe"] for a in group["actions"]]))
    assert f"Protocol #1   (MPJPE) action-wise average: {round(group['average']['mpjpe'], 1)} mm" in out
    assert_no_temp_files(tmp_path)
    # the same numbers as the library loop with the engine as predictor
    engine = gastrt.load(eval_engines["h36m"], backend="numpy")
    (lib,) = evaluate(load_eval_data("h36m", p3, p2), lambda x: engine.lift_sequence(x, flip=True))
    assert [a.mpjpe for a in lib.actions] == pytest.approx([a["mpjpe"] for a in group["actions"]], rel=1e-6)


def test_h36m_options(cli, h36m_files, eval_engines):
    p3, p2 = h36m_files
    rc, out, err = cli(eval_engines["h36m"], "--data-3d", p3, "--data-2d", p2, "--subjects", "S11",
                       "--actions", "Walk", "--actions", "Dir", "--no-flip", "--by-subject", "--verbose", "--quiet")
    assert rc == 0, err
    assert err == ""
    assert "Evaluating on subject S11" in out and "flip TTA off" in out
    assert "----Walking----" in out and "Test time augmentation: False" in out   # run.py's own log
    assert list(table_rows(out)) == ["Walking", "Directions", "Average"]


def test_humaneva_end_to_end(cli, eval_engines, tmp_path):
    p3, p2, _ = write_humaneva(str(tmp_path))
    out_json = tmp_path / "he.json"
    rc, out, err = cli(eval_engines["humaneva"], "--dataset", "humaneva", "--data-3d", p3, "--data-2d", p2,
                       "--json", out_json, "--backend", "numpy")
    assert rc == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["by_subject"] is True and doc["actions_filter"] == ["Walk", "Jog", "Box"]
    assert [g["subject"] for g in doc["groups"]] == ["Validate/S1", "Validate/S2", "Validate/S3"]
    for g in doc["groups"]:
        assert [a["action"] for a in g["actions"]] == ["Walking", "Jog", "Box"]
        assert g["actions"][0]["sequences"] == 6        # two Walking chunks x 3 cameras, merged
    cells = [a["mpjpe"] for g in doc["groups"] for a in g["actions"]]
    assert doc["average"]["mpjpe"] == pytest.approx(np.mean(cells))
    assert out.count("Evaluating on subject") == 3 and "All subjects" in out


def one_line_error(rc, out, err, needle):
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gastrt: error:") and needle in lines[0], err


def test_errors_are_one_line(cli, h36m_files, eval_engines, tmp_path):
    p3, p2 = h36m_files
    eng = eval_engines["h36m"]
    base = ("--data-3d", p3, "--data-2d", p2)
    one_line_error(*cli(eng, *base, "--subjects", "S9,S7"), "positions_3d has no subject 'S7'")
    one_line_error(*cli(eng, *base, "--json", tmp_path / "nope" / "r.json"), "does not exist")
    one_line_error(*cli(tmp_path / "missing.gastrt", *base), "missing.gastrt")
    one_line_error(*cli(eng, "--data-3d", tmp_path / "none.npz", "--data-2d", p2), "none.npz: no such file")
    # the HumanEva engine (15 joints) on Human3.6M data
    one_line_error(*cli(eval_engines["humaneva"], *base), "the engine predicts 15 joints; Human3.6M evaluation "
                   "supports 17 or 19 (a HumanEva engine: --dataset humaneva)")
    # swapped files
    one_line_error(*cli(eng, "--data-3d", p2, "--data-2d", p3), "no 'positions_3d' array")
    # NaN in the ground truth
    bad3 = tmp_path / "nan3d.npz"
    d = np.load(p3, allow_pickle=True)["positions_3d"].item()
    d["S11"]["Sitting 2"][3, 0, 2] = np.nan
    np.savez_compressed(bad3, positions_3d=d)
    one_line_error(*cli(eng, "--data-3d", bad3, "--data-2d", p2),
                   "positions_3d['S11']['Sitting 2']: 1 non-finite values (NaN/inf), the first in frame 3")
    # a pickle that would run code
    evil = tmp_path / "evil.npz"
    np.savez(evil, positions_3d=np.array({"S9": Hostile()}, dtype=object))
    one_line_error(*cli(eng, "--data-3d", evil, "--data-2d", p2), "refusing to load posix.system")
    # a 2D file without keypoints_symmetry: flip needs it, --no-flip does not
    nosym = tmp_path / "nosym.npz"
    np.savez_compressed(nosym, positions_2d=np.load(p2, allow_pickle=True)["positions_2d"].item())
    one_line_error(*cli(eng, "--data-3d", p3, "--data-2d", nosym), "keypoints_symmetry'] is needed")
    assert cli(eng, "--data-3d", p3, "--data-2d", nosym, "--no-flip", "--quiet")[0] == 0


class Hostile:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))
