"""benchmarks/gpu_check.sh and its helpers without a GPU: the dry run finishes, every GPU step is
skipped by name, the summary comes last; the scripts it runs parse their arguments."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _run(args, tmp_path, **env):
    e = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"), GASTRT_SITE=str(tmp_path / "site"), **env)
    return subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=e, timeout=300)


def test_dry_run_skips_every_gpu_step(tmp_path):
    # no install step: the package under test is the one this interpreter imports
    pp = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(__import__("gastrt").__file__)),
                                     os.environ.get("PYTHONPATH", "")] if p)
    r = _run(["--dry-run", "config", "tests", "parity", "memcheck", "headline", "eager", "layers"], tmp_path,
             PYTHONPATH=pp)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    for step in ("tests", "parity", "memcheck", "headline", "eager", "layers"):
        assert f"=== {step}: skipped (no GPU)" in out
    assert "config     ok" in out
    summary = out.rindex("=== summary")
    assert "DRY RUN" in out[summary:] and out.rstrip().splitlines()[-1].startswith("layers")
    assert os.path.exists(tmp_path / "out" / "gpu_check.log")


def test_deadline_stops_starting_steps(tmp_path):
    r = _run(["--dry-run", "config"], tmp_path, DEADLINE_S="5")
    assert r.returncode == 1
    assert "not run, the 5s deadline is reached" in r.stdout
    assert "config     NOT RUN" in r.stdout


def test_missing_wheel_falls_back_to_a_build_and_says_so(tmp_path):
    """Without .whl/ and without a compiler the install step fails; the summary names the path."""
    if os.path.isdir(os.path.join(ROOT, ".whl")):
        pytest.skip("a prebuilt wheel is present in this checkout")
    r = _run(["--dry-run", "install"], tmp_path, STEP_TIMEOUT_BUILD="1")
    assert r.returncode == 1
    assert "no prebuilt wheel in .whl/" in r.stdout and "compiling here instead" in r.stdout
    assert "install path: FAILED" in r.stdout


@pytest.mark.parametrize("script", ["gpu_headline.py", "gpu_parity.py", "bench_gpu.py"])
def test_helpers_parse_their_arguments(script):
    r = subprocess.run([sys.executable, os.path.join(BENCH, script), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


def test_build_script_is_valid_bash():
    for s in ("build_gpu_wheel.sh", "gpu_check.sh"):
        r = subprocess.run(["bash", "-n", os.path.join(BENCH, s)], capture_output=True, text=True)
        assert r.returncode == 0, (s, r.stderr)


def test_headline_dry_run_reports_skips(tmp_path):
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_headline.py"), "--dry-run", "--cache",
                        str(tmp_path / "c"), "--json", str(tmp_path / "h.json")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== headline summary" in r.stdout and "engines built" in r.stdout
    import json
    assert json.load(open(tmp_path / "h.json"))["summary"]
