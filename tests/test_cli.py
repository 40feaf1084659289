"""`gastrt build` / `gastrt info`: output, atomic writes, one-line errors with non-zero exit."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from gastrt_testutil import assert_no_temp_files, subprocess_env  # noqa: E402
from gastrt.cli import main  # noqa: E402

SMALL = ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 8, "stage": 3})


def run_cli(*args):
    """gastrt in a fresh interpreter, the way a user runs it."""
    return subprocess.run([sys.executable, "-m", "gastrt", *args], env=subprocess_env(),
                          capture_output=True, text=True)


def test_build_and_info(tmp_path, ckpt_cache, capsys):
    ck = ckpt_cache(*SMALL, seed=4)
    out = str(tmp_path / "rie.gastrt")
    assert main(["build", ck, "-o", out, "--causal", "--precision", "fp16"]) == 0
    text = capsys.readouterr().out
    for needle in ("RIE, stage 2/3, latent 8", "receptive  9 frames", "causal", "parameters", "fp16", out):
        assert needle in text, (needle, text)
    assert main(["info", out]) == 0
    text = capsys.readouterr().out
    assert "FLOPs/frame window" in text and "n/a" in text  # RIE has no sequence form
    # the two parameter counts (checkpoint vs folded engine) are both named and explained
    assert "trainable in the checkpoint" in text and "folding each BatchNorm" in text
    assert main(["info", out, "--json"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "rie" and info["causal"] and info["flops_per_frame"]["window"] > 0
    assert 0 < info["stored_weight_count"] != info["parameter_count"]


def test_cli_messages_use_cli_words():
    from gastrt.cli import cli_words
    assert cli_words("no CUDA GPU is visible; use device='cpu'") == "no CUDA GPU is visible; use --device cpu"
    assert cli_words("plain message") == "plain message"


@pytest.mark.parametrize("args, needle", [
    (["build", "/nonexistent/ckpt.bin"], "/nonexistent/ckpt.bin"),
    (["info", "/nonexistent/x.gastrt"], "cannot open"),
])
def test_errors_are_one_line(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gastrt: error:") and needle in lines[0], r.stderr


def test_failed_build_leaves_no_file(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x80\x02not really a pickle")
    out = tmp_path / "out.gastrt"
    r = run_cli("build", str(bad), "-o", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not out.exists()
    assert_no_temp_files(tmp_path)


def test_failed_write_leaves_no_temp_file(tmp_path, ckpt_cache, monkeypatch, capsys):
    """The build succeeds and the write fails at its last step (the rename): one-line error
    naming the output, the temp file is removed."""
    out = tmp_path / "out.gastrt"
    ck = ckpt_cache("gast", {"num_joints": 17, "filter_widths": [3], "channels": 8}, seed=4)
    seen = []

    def failing_replace(src, dst, *a, **k):
        seen.append(src)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "replace", failing_replace)
    assert main(["build", ck, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gastrt: error:") and str(out) in err and "cannot write" in err and err.count("\n") == 1
    assert len(seen) == 1 and not os.path.exists(seen[0])   # it had written a temp file, then removed it
    assert not out.exists()
    assert_no_temp_files(tmp_path)


def test_usage_error_exit_code():
    r = run_cli("build")
    assert r.returncode == 2 and "usage" in r.stderr


def test_build_never_replaces_its_checkpoint_or_a_device(tmp_path, ckpt_cache, capsys):
    ck = ckpt_cache(*SMALL, seed=5)
    import shutil
    mine = tmp_path / "ck.bin"
    shutil.copy(ck, mine)
    before = mine.read_bytes()
    assert main(["build", str(mine), "-o", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite an input" in err and err.count("\n") == 1
    assert mine.read_bytes() == before
    link = tmp_path / "alias.gastrt"  # the same file under another name
    os.link(mine, link)
    assert main(["build", str(mine), "-o", str(link)]) == 2
    assert mine.read_bytes() == before
    if hasattr(os, "mkfifo"):  # a FIFO stands for any non-regular file (a device node, /dev/null)
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        assert main(["build", str(mine), "-o", str(fifo)]) == 2
        assert "not a regular file" in capsys.readouterr().err
        assert not os.path.isfile(fifo) and os.path.exists(fifo)  # still the FIFO
    assert main(["build", str(mine), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_broken_pipe_exits_quietly(tmp_path, ckpt_cache):
    ck = ckpt_cache(*SMALL, seed=6)
    out = str(tmp_path / "e.gastrt")
    assert main(["build", ck, "-o", out]) == 0
    # a reader that leaves at once: info's output hits a closed pipe
    p = subprocess.Popen([sys.executable, "-m", "gastrt", "info", out, "--json"], env=subprocess_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    rc = p.wait()
    assert rc == 0 and "Broken pipe" not in err and "Traceback" not in err, (rc, err)


def test_checkpoint_errors_are_gastrt_errors():
    from gastrt.checkpoint import CheckpointError
    from gastrt.errors import GastrtError
    assert issubclass(CheckpointError, GastrtError)
