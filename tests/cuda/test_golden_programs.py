"""The CUDA programs the lowering emits are byte-identical to the recorded golden ones
(golden_programs.json, from golden_programs.py): every bench preset and test model, window /
sequence / stream, every precision and both GAST paths. The CUDA code has not run on a GPU, so a
change to how program records are written must prove itself here. After an intended change to
the programs, regenerate the file with ``python tests/cuda/golden_programs.py`` and say why in
the commit."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

import golden_programs  # noqa: E402


def test_programs_match_the_golden_digests(tmp_path):
    with open(golden_programs.GOLDEN) as fh:
        want = json.load(fh)
    got = golden_programs.collect(str(tmp_path))
    assert sorted(got) == sorted(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    differ = [k for k in want if got[k] != want[k]]
    assert not differ, f"{len(differ)} of {len(want)} programs differ, e.g. {differ[:5]}: {got[differ[0]]}"
