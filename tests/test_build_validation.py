"""`gastrt build` refuses checkpoints that would give an unusable engine (issue #15): values a
model cannot have, named by key; state dicts whose tensors do not fit together (one line, no
traceback); "builds" means "runs". Every case is a real checkpoint mutated in one place."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt.errors import GastrtError  # noqa: E402
from gastrt.cli import main  # noqa: E402
from gastrt.reference.factory import make_checkpoint  # noqa: E402

VP3D = ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3, 3],
                        "channels": 16, "trajectory": False})
GAST = ("gast", {"num_joints": 17, "filter_widths": [3], "channels": 8})
RIE = ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 8, "stage": 3})


def _save(tmp_path, family_config, mutate, name="ck.bin"):
    ck = make_checkpoint(*family_config, seed=1)
    mutate(ck["model_pos"])
    path = tmp_path / name
    torch.save(ck, path)
    return str(path)


def _build_fails(tmp_path, path, match, capsys):
    out = tmp_path / "out.gastrt"
    with pytest.raises(GastrtError, match=match):  # CheckpointError, or the family's CheckpointMismatch
        gastrt.build(path, out)
    assert not out.exists()
    assert main(["build", path, "-o", str(out)]) == 2          # the CLI: one line, exit 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and len(err) < 400, err
    assert not out.exists()


def _set(key, fn):
    def mutate(sd):
        sd[key] = fn(sd[key])
    return mutate


@pytest.mark.parametrize("family_config, mutate, match", [
    (VP3D, _set("expand_conv.weight", lambda w: w.index_fill(1, torch.tensor([3]), float("nan"))),
     r"expand_conv\.weight holds 48 NaN / inf values \(of 1632\)"),
    (GAST, _set("layers_graph_conv.0.global_graph_layer.attentions.0.C_k",
                lambda w: w.fill_(float("inf"))), r"C_k holds \d+ NaN / inf"),
    (VP3D, _set("expand_bn.running_var", lambda v: v.index_fill(0, torch.tensor([2, 5]), -1.0)),
     r"expand_bn\.running_var has 2 negative BatchNorm variance"),
    (VP3D, _set("shrink.weight", lambda w: torch.complex(w, w)), "complex numbers"),
], ids=["nan-weight", "inf-gast", "negative-var", "complex"])
def test_values_a_model_cannot_have(tmp_path, capsys, family_config, mutate, match):
    _build_fails(tmp_path, _save(tmp_path, family_config, mutate), match, capsys)


def test_allow_nonfinite_builds_anyway(tmp_path):
    path = _save(tmp_path, VP3D, _set("expand_conv.weight", lambda w: w.fill_(float("nan"))))
    out = gastrt.build(path, tmp_path / "nan.gastrt", allow_nonfinite=True)
    y = gastrt.load(out, backend="numpy").lift(np.zeros((1, 9, 17, 2), np.float32))
    assert np.isnan(y).all()


def _drop(key):
    def mutate(sd):
        del sd[key]
    return mutate


@pytest.mark.parametrize("family_config, mutate, match", [
    (GAST, _drop("layers_graph_conv.0.global_graph_layer.attentions.0.phi.weight"), "phi.weight|missing"),
    (GAST, _set("layers_graph_conv.0.global_graph_layer.attentions.0.C_k", lambda w: w.sum()), "do not fit|C_k"),
    (VP3D, _set("expand_conv.weight", lambda w: w[:, :0]), "no input joints|do not fit|expand_conv"),
    (VP3D, _set("shrink.weight", lambda w: w[:0]), "do not fit|shrink"),
    (VP3D, _set("layers_conv.0.weight", lambda w: w[:, :12]), "do not fit|layers_conv|channel"),
    (RIE, _set("LocalLayer_Torso.shrink.weight", lambda w: w[:, :5]), "do not fit|shrink|channel"),
], ids=["gast-missing-key", "gast-0d-Ck", "vp3d-expand-0-in", "vp3d-shrink-0-out", "vp3d-chain", "rie-shrink"])
def test_inconsistent_state_dicts_fail_the_build(tmp_path, capsys, family_config, mutate, match):
    _build_fails(tmp_path, _save(tmp_path, family_config, mutate), match, capsys)


def test_hostile_key_is_not_echoed_in_full(tmp_path, capsys):
    big = "x" * 5_000_000
    path = _save(tmp_path, VP3D, lambda sd: sd.__setitem__(big + ".weight", torch.full((2,), float("nan"))))
    out = tmp_path / "o.gastrt"
    assert main(["build", path, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err) < 400 and "5,000,007 characters" in err, err[:300]


@pytest.mark.parametrize("where", ["extra-key", "tuple-key"])
def test_hostile_keys_are_not_echoed_in_full_by_the_api_either(tmp_path, where):
    """Found by the #15 audit: the CLI line was short, but the exception itself carried the 5 MB
    key (CheckpointMismatch 'unexpected key ...')."""
    big = "y" * 5_000_000
    if where == "extra-key":
        path = _save(tmp_path, VP3D, lambda sd: sd.__setitem__(big + ".weight", torch.zeros(2)))
    else:
        path = _save(tmp_path, VP3D, lambda sd: sd.__setitem__(big, torch.zeros(2)))
    with pytest.raises(gastrt.GastrtError) as ei:
        gastrt.build(path, str(tmp_path / "o.gastrt"))
    assert len(str(ei.value)) <= 2000 and " ... " in str(ei.value), len(str(ei.value))


def test_good_checkpoints_still_build(tmp_path):
    for fc in (VP3D, GAST, RIE):
        path = _save(tmp_path, fc, lambda sd: None, name=f"{fc[0]}.bin")
        eng = gastrt.load(gastrt.build(path, tmp_path / f"{fc[0]}.gastrt"), backend="numpy")
        rf = eng.receptive_field
        assert np.isfinite(eng.lift(np.zeros((2, rf, 17, 2), np.float32))).all()
