"""The Ray layer is optional: gastrt, gastrt.ray and its CLI module import without ray, and the
commands say which extra to install (one line, no traceback). Runs without ray installed."""
from __future__ import annotations

import os
import subprocess
import sys

import gastrt

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gastrt.__file__)))
# make `import ray` / `import pandas` fail as if they were not installed
BLOCK = "import sys; sys.modules['ray'] = None; sys.modules['pandas'] = None; "


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, env=env)


def test_imports_without_ray():
    r = _run("import gastrt, gastrt.ray, gastrt.ray.cli, gastrt.ray.corpus, gastrt.ray.inputs; "
             "assert 'ray' not in [m for m in sys.modules if sys.modules[m] is not None]; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_commands_name_the_extra_without_ray(tmp_path):
    code = ("import argparse, sys\n"
            "from gastrt.errors import GastrtError\n"
            "from gastrt.ray.cli import add_parsers, corpus_main\n"
            "p = argparse.ArgumentParser(); add_parsers(p.add_subparsers())\n"
            "for f in (lambda: corpus_main(argparse.Namespace(engine='e', input=['x'], out_dir='o')),\n"
            "          lambda: p.parse_args(['serve', 'e.gastrt']).func(p.parse_args(['serve', 'e.gastrt']))):\n"
            "    try:\n"
            "        f()\n"
            "    except GastrtError as e:\n"
            "        print(e)\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("needs the ray extra: pip install 'gastrt[ray]'" in l for l in lines), lines
