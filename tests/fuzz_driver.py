"""Seeded mutation campaign over gastrt's untrusted inputs, run in a child process by
tests/test_fuzz.py (a crash or a memory blow-up then fails that test instead of killing pytest).

    python fuzz_driver.py KIND SEED CASES WORKDIR       KIND: checkpoint | engine | keypoints

WORKDIR holds the seed inputs the test wrote (base checkpoints, engine, keypoint files). Every
case mutates one of them, runs it through the CLI in this process (``gastrt.cli.main``) and,
where the CLI accepted it, through the Python API. A case fails when:
  * anything escapes ``main`` (a traceback), or it returns other than 0 / 2;
  * an error is not ONE line of at most MAX_ERROR characters starting ``gastrt: error:``;
  * it runs longer than CASE_SECONDS (a hang);
  * a mutated engine file loads (checksums on) and lifts to anything but the original's bits
    (a silent wrong result);
  * the API raises anything but a GastrtError on a file the CLI accepted or refused.
Prints one JSON object: {"cases": n, "failures": [...], "max_rss_mb": ...}.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import signal
import sys
import zipfile

import numpy as np

MAX_ERROR = 300
CASE_SECONDS = 20


class Hang(BaseException):
    """Raised by the per-case alarm; a BaseException, so no reader's `except Exception` hides it."""


def _alarm(signum, frame):
    raise Hang()


# ---- mutators ------------------------------------------------------------------------------------
INTERESTING = [0, 1, -1, 2**31, -2**31, 2**63, 10**7, 10**9, 10**30, 1e308, -1e308, 0.5, -0.0,
               float("nan"), float("inf"), float("-inf"), "", "x" * 1000, None, True, [], {}, [[1]], {"a": 1}]


def flip_bytes(rng: random.Random, data: bytes, lo: int = 0, hi: int | None = None) -> tuple[bytes, str]:
    buf = bytearray(data)
    hi = len(buf) if hi is None else min(hi, len(buf))
    n = rng.randint(1, 4)
    where = [rng.randrange(lo, hi) for _ in range(n)]
    for i in where:
        buf[i] = rng.randrange(256)
    return bytes(buf), f"flip {n} byte(s) at {where}"


def truncate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    n = rng.randrange(0, len(data))
    return data[:n], f"truncate to {n}"


def splice(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randrange(len(data))
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return data[:i] + junk + data[i + rng.randint(0, 64):], f"splice {len(junk)} bytes at {i}"


def bytes_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.7:
        return flip_bytes(rng, data)
    if r < 0.85:
        return truncate(rng, data)
    return splice(rng, data)


def json_paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            yield from json_paths(v, path + (i,))


def json_mutation(rng: random.Random, obj) -> tuple[object, str]:
    """Replace one node of a JSON document by an odd value (or delete / deepen it)."""
    obj = json.loads(json.dumps(obj))
    paths = [p for p in json_paths(obj) if p]
    path = rng.choice(paths)
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    r = rng.random()
    if r < 0.1 and isinstance(parent, dict):
        del parent[path[-1]]
        return obj, f"delete {list(path)}"
    if r < 0.15:
        depth = rng.choice([50, 990, 5000, 100000])   # 990: just under the interpreter's limit
        parent[path[-1]] = Deep(depth)
        return obj, f"nest {list(path)} {depth} deep"
    v = rng.choice(INTERESTING)
    parent[path[-1]] = v
    return obj, f"set {list(path)} = {v!r:.40}"


class Deep:
    """A list nested ``depth`` deep, written by hand (json.dumps would recurse)."""

    def __init__(self, depth: int):
        self.depth = depth


def dumps(obj) -> bytes:
    deep = []

    def swap(o):   # Deep -> a placeholder string, spliced in as text afterwards
        if isinstance(o, Deep):
            deep.append(o.depth)
            return f"@@DEEP{len(deep) - 1}@@"
        if isinstance(o, dict):
            return {k: swap(v) for k, v in o.items()}
        if isinstance(o, list):
            return [swap(v) for v in o]
        return o
    text = json.dumps(swap(obj), allow_nan=True)
    for k, d in enumerate(deep):
        text = text.replace(f'"@@DEEP{k}@@"', "[" * d + "0" + "]" * d)
    return text.encode()


def zip_member_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Flip bytes inside one member of a zip checkpoint and rewrite it with valid CRCs, so the
    mutation reaches the unpickler / tensor reader instead of stopping at the zip layer."""
    src = zipfile.ZipFile(io.BytesIO(data))
    names = src.namelist()
    victim = rng.choice(names)
    what = "empty member, unchanged"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for name in names:
            body = src.read(name)
            if name == victim and body:
                body, what = bytes_mutation(rng, body)
            dst.writestr(name, body)
    return out.getvalue(), f"member {victim}: {what}"


# ---- the run -------------------------------------------------------------------------------------
def run_cli(argv) -> tuple[int, str]:
    from gastrt.cli import main

    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:   # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, err.getvalue()


def check_cli(rc, err) -> str | None:
    if rc not in (0, 2):
        return f"exit {rc}: {err[-300:]!r}"
    if rc == 2:
        lines = err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("gastrt: error: "):
            return f"not one error line: {err[-400:]!r}"
        if len(lines[0]) > MAX_ERROR:
            return f"error line of {len(lines[0])} characters: {lines[0][:120]!r}..."
    return None


def cli_case(argv, output: str, what: str) -> tuple[int, str | None]:
    """Run the CLI on a mutated input whose result goes to ``output`` -> (exit code, what is
    wrong or None): the exit / error-line contract, and nothing written when it refused."""
    rc, err = run_cli(argv)
    bad = check_cli(rc, err)
    if bad is None and rc == 2 and os.path.exists(output):
        bad = f"refused, yet {what} was written"
    return rc, bad


@contextlib.contextmanager
def case_files(path: str, data: bytes, *outputs: str):
    """Write one case's mutated input to ``path``; afterwards remove it and any ``outputs``."""
    with open(path, "wb") as f:
        f.write(data)
    try:
        yield
    finally:
        for p in (path, *outputs):
            if os.path.exists(p):
                os.remove(p)


def case_checkpoint(rng, work, i, ctx):
    import gastrt

    base = rng.choice(["gast_zip.bin", "vp_legacy.bin", "rie_zip.bin"])
    data = open(os.path.join(work, base), "rb").read()
    if base.endswith("zip.bin") and rng.random() < 0.6:
        data, what = zip_member_mutation(rng, data)
    else:
        data, what = bytes_mutation(rng, data)
    ctx["what"] = f"{base}: {what}"
    ck = os.path.join(work, f"m{i}.bin")
    eng = os.path.join(work, f"m{i}.gastrt")
    with case_files(ck, data, eng):
        rc, bad = cli_case(["build", ck, "-o", eng], eng, "an engine file")
        if bad is None and rc == 0:
            e = gastrt.load(eng, backend="numpy")
            x = np.random.default_rng(i).standard_normal((2, e.receptive_field, e.num_joints, 2)).astype(np.float32) * 0.3
            e.lift(x)
        return bad


def _engine_header_span(data: bytes) -> int:
    n = int.from_bytes(data[:8], "little")
    return 8 + n


def case_engine(rng, work, i, ctx):
    import gastrt

    data = open(os.path.join(work, "base.gastrt"), "rb").read()
    ref = np.load(os.path.join(work, "base_out.npy"))
    x = np.load(os.path.join(work, "base_in.npy"))
    hdr = _engine_header_span(data)
    r = rng.random()
    verify = True
    if r < 0.45:
        data, what = flip_bytes(rng, data, 0, hdr)          # the header (JSON) region
    elif r < 0.75:
        data, what = bytes_mutation(rng, data)
    else:   # a structural header edit, loaded WITHOUT verification: the validation must hold
        header = json.loads(data[8:hdr])
        header, what = json_mutation(rng, header)
        body = dumps(header)
        body += b" " * (-len(body) % 8)
        data = len(body).to_bytes(8, "little") + body + data[hdr:]
        verify = False
    ctx["what"] = f"engine: {what} (verify={verify})"
    p = os.path.join(work, f"m{i}.gastrt")
    with case_files(p, data):
        bad = None
        if verify:
            rc, err = run_cli(["info", p])
            bad = check_cli(rc, err)
        if bad is None:
            try:
                e = gastrt.load(p, backend="numpy", verify=verify)
                y = e.lift(x)
                if verify and not np.array_equal(y, ref):
                    bad = f"silent wrong result: max diff {float(np.nanmax(np.abs(y - ref))):.3g}"
            except gastrt.GastrtError:
                pass
        return bad


def case_keypoints(rng, work, i, ctx):
    base = rng.choice(["k.json", "k.npy", "k.npz", "mm.json"])
    data = open(os.path.join(work, base), "rb").read()
    if base.endswith(".json") and rng.random() < 0.7:
        obj, what = json_mutation(rng, json.loads(data))
        data = dumps(obj)
    elif base.endswith(".npy") and rng.random() < 0.5:
        data, what = flip_bytes(rng, data, 0, 128)           # the .npy header
    else:
        data, what = bytes_mutation(rng, data)
    ctx["what"] = f"{base}: {what}"
    p = os.path.join(work, f"m{i}{os.path.splitext(base)[1]}")
    out = os.path.join(work, f"m{i}_3d.npz")
    with case_files(p, data, out):
        _, bad = cli_case(["lift", os.path.join(work, "small.gastrt"), p, "--size", "1280x720", "-o", out],
                          out, "an output")
        return bad


CASES = {"checkpoint": case_checkpoint, "engine": case_engine, "keypoints": case_keypoints}


def main(kind: str, seed: int, cases: int, work: str) -> dict:
    import warnings
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(seed)
    failures = []
    for i in range(cases):
        sub = random.Random(rng.randrange(2**63))
        ctx = {"what": f"case {i} (before its mutation)"}
        signal.alarm(CASE_SECONDS)
        try:
            bad = CASES[kind](sub, work, i, ctx)   # ctx["what"]: the mutation, set before it runs
        except Hang:
            bad = f"ran over {CASE_SECONDS} s"
        except BaseException as e:   # anything escaping is a finding, with its mutation
            bad = f"{type(e).__name__}: {str(e)[:200]}"
        finally:
            signal.alarm(0)
        if bad:
            failures.append({"case": i, "mutation": ctx["what"], "problem": bad})
    return {"cases": cases, "failures": failures, "max_rss_mb": round(peak_rss_mb(), 1)}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    exec from the forking parent, so a child of a 2 GB pytest process would report 2 GB."""
    from gastrt.bench.measure import proc_status_bytes

    hwm = proc_status_bytes("VmHWM")
    return hwm / 2**20 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    kind, seed, cases, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps(main(kind, seed, cases, work)))
