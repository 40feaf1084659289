"""The native runtime under AddressSanitizer + UndefinedBehaviorSanitizer (#15).

Builds the extension with GASTRT_SANITIZE=address,undefined (CPU only: CUDA code is not
instrumented), puts it beside a copy of the Python sources, and runs the native tests
(tests/native, minus this file, and tests/test_engine_api.py) in a subprocess with the ASan
runtime preloaded; any ASan or UBSan finding halts that run, which fails this test. It takes
~3.5 minutes on 2 cores, so it runs in CI (CI=true) or when asked (GASTRT_TEST_SANITIZER=1);
in CI a missing toolchain is a failure, not a skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_CI = os.environ.get("CI", "").lower() == "true"
WANTED = IN_CI or os.environ.get("GASTRT_TEST_SANITIZER") == "1"
SANITIZERS = "address,undefined"

pytestmark = pytest.mark.skipif(not WANTED, reason="sanitizer build: runs with CI=true or GASTRT_TEST_SANITIZER=1")


def _need(ok: bool, what: str) -> None:
    if not ok:
        (pytest.fail if IN_CI else pytest.skip)(f"sanitizer build needs {what}")


def _runtime(cxx: str, name: str) -> str:
    out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else ""


def _tail(text: str, n: int = 6000) -> str:
    return text[-n:]


def test_native_tests_pass_under_asan_and_ubsan(tmp_path):
    cxx = shutil.which("g++")          # GCC's runtimes (libasan.so, libstdc++.so) are what gets preloaded
    _need(bool(cxx) and bool(shutil.which("cmake")), "g++ and cmake")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    try:
        import pybind11  # noqa: F401
    except ImportError:
        _need(False, "pybind11 (pip install pybind11)")
    asan = _runtime(cxx, "libasan.so")
    _need(bool(asan), "the compiler's libasan.so")
    # libstdc++ preloaded too: Python does not link it, and ASan's __cxa_throw interceptor must find
    # the real one when it starts (else every C++ throw is a "CHECK failed" abort)
    stdcxx = os.path.realpath(_runtime(cxx, "libstdc++.so") or "")
    _need(os.path.exists(stdcxx), "the compiler's libstdc++.so")

    build = tmp_path / "build"
    env = dict(os.environ, GASTRT_CUDA="OFF", GASTRT_SANITIZE=SANITIZERS)
    cfg = subprocess.run(["cmake", "-S", ROOT, "-B", str(build), *generator, "-DGASTRT_CUDA=OFF",
                          f"-DGASTRT_SANITIZE={SANITIZERS}", f"-DPython_EXECUTABLE={sys.executable}",
                          f"-DCMAKE_CXX_COMPILER={cxx}"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert cfg.returncode == 0, _tail(cfg.stdout + cfg.stderr)
    jobs = str(max(1, os.cpu_count() or 1))
    made = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True, text=True,
                          env=env, timeout=1800)
    assert made.returncode == 0, _tail(made.stdout + made.stderr)
    built = [f for f in os.listdir(build) if f.startswith("_native") and f.endswith(".so")]
    assert len(built) == 1, os.listdir(build)

    # the Python sources with the sanitized extension beside them, first on sys.path
    overlay = tmp_path / "overlay"
    shutil.copytree(os.path.join(ROOT, "python", "gastrt"), overlay / "gastrt",
                    ignore=shutil.ignore_patterns("__pycache__", "_native*.so", "*.pyd"))
    shutil.copy2(build / built[0], overlay / "gastrt" / built[0])

    # reports go to files: pytest captures fd 2, and a halting sanitizer leaves it no time to show it
    logs = tmp_path / "sanitizer"
    logs.mkdir()
    run_env = dict(os.environ, PYTHONPATH=str(overlay), LD_PRELOAD=f"{asan} {stdcxx}", GASTRT_TEST_SANITIZER="0",
                   CI="false",   # the child must not recurse into this test
                   ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:log_path={logs}/asan",
                   UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={logs}/ubsan")
    probe = subprocess.run([sys.executable, "-c", "import gastrt, json; c = gastrt.build_config(); "
                            "print(json.dumps([gastrt.__file__, c['sanitize'], c['native']]))"],
                           capture_output=True, text=True, env=run_env, cwd=str(tmp_path), timeout=300)
    assert probe.returncode == 0, _tail(probe.stdout + probe.stderr)
    where, sanitize, native = __import__("json").loads(probe.stdout.strip().splitlines()[-1])
    assert where.startswith(str(overlay)) and sanitize == SANITIZERS and native, probe.stdout

    native = os.path.join(ROOT, "tests", "native")
    tests = [os.path.join(native, f) for f in sorted(os.listdir(native))
             if f.startswith("test_") and f.endswith(".py") and f != os.path.basename(__file__)]
    tests.append(os.path.join(ROOT, "tests", "test_engine_api.py"))   # the API's paths into C++
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'pt'}", *tests],
                         capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=2400)
    out = res.stdout + res.stderr
    reports = "".join(p.read_text(errors="replace") for p in sorted(logs.iterdir()))
    assert not reports, _tail(reports) + "\n--- pytest ---\n" + _tail(out, 2000)
    assert res.returncode == 0, _tail(out)
    assert " passed" in out, _tail(out)
