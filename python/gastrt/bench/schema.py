"""The JSON document of a bench run (its layout is documented, key by key, in the
``gastrt.bench`` docstring, which tests/test_bench.py checks every run against): schema name
and version, contender names, the empty row, and the [machine] section."""
from __future__ import annotations

import os
import platform
import subprocess

import numpy as np

from .._version import __version__
from ..backends import build_config, native_module
from ..engine_file import PRECISIONS  # noqa: F401  (re-exported: bench.PRECISIONS)

SCHEMA = "gastrt-bench"
SCHEMA_VERSION = 4

MODES = ("window", "sequence", "stream")
TORCH_CONTENDERS = ("eager", "compile")
ONNX_PEERS = ("ort", "openvino")     # the exported ONNX graph on ONNX Runtime / OpenVINO (CPU)
CONTENDERS = TORCH_CONTENDERS + ("tensorrt",) + ONNX_PEERS
LABELS = {"eager": "eager", "compile": "torch.compile", "tensorrt": "TensorRT",
          "ort": "ONNX Runtime (gx)", "openvino": "OpenVINO (gx)"}


def label(contender: str, backend_name: str) -> str:
    """The table label of a contender, e.g. "gastrt (native)", "torch.compile"."""
    return f"gastrt ({backend_name})" if contender == "gastrt" else LABELS[contender]


def new_document(created: str, machine: dict, config: dict, notes: list) -> dict:
    """The [top] section, rows still to come."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": created, "machine": machine,
            "config": config, "agreement": None, "agreement_tensorrt": None,
            "agreement_peers": {}, "notes": notes, "rows": [],
            "interrupted": False}


def new_row(contender: str, label: str, batch: int, frames_per_call: int, flops_per_frame: float) -> dict:
    """A [row] with every key, status "ok" and no numbers yet."""
    return {"contender": contender, "label": label, "batch": batch, "status": "ok", "error": None,
            "frames_per_call": frames_per_call, "flops_per_frame": flops_per_frame,
            "n": None, "first_call_s": None, "build_s": None, "latency_ms": None, "throughput_fps": None,
            "achieved_flops": None, "peak_mem_bytes": None, "peak_mem_source": None,
            "workspace_bytes": None, "speedup_vs_eager": None, "speedup_spread": None, "block": None}


# ---- [machine] -------------------------------------------------------------------------------------

def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git(args: list[str]) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        r = subprocess.run(["git", "-C", here] + args, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _git_info() -> tuple[str | None, bool | None]:
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    top = _git(["rev-parse", "--show-toplevel"])
    # only a checkout of gastrt itself (python/gastrt inside it), not a site-packages inside some repo
    if not top or os.path.normpath(os.path.join(top, "python", "gastrt")) != os.path.normpath(pkg):
        return None, None
    commit = _git(["rev-parse", "HEAD"])
    status = _git(["status", "--porcelain", "--untracked-files=no"])
    return commit, (None if status is None else bool(status))


def _gpu_info(torch, index: int) -> dict:
    info: dict = {"name": None, "index": index, "capability": None, "memory_bytes": None, "driver": None,
                  "cuda": None}
    try:
        info["name"] = native_module().cuda_device_name(index)
    except Exception:  # the GPU paths have not all run yet: a missing name must not fail the run
        pass
    if torch is not None and torch.cuda.is_available():
        try:
            p = torch.cuda.get_device_properties(index)
            info["name"] = info["name"] or p.name
            info["capability"] = f"{p.major}.{p.minor}"
            info["memory_bytes"] = int(p.total_memory)
            info["cuda"] = torch.version.cuda
        except Exception:
            pass
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            info["driver"] = r.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    if info["cuda"] is None:
        info["cuda"] = build_config().get("cuda_version")
    return info


def machine_info(torch=None, device: str = "cpu") -> dict:
    """The [machine] section: this host, the GPU of ``device`` ("cuda:N"), gastrt's build."""
    cfg = build_config()
    commit, dirty = _git_info()
    try:
        aff = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        aff = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    gpu = None
    if device.startswith("cuda"):
        gpu = _gpu_info(torch, int(device.split(":")[1]) if ":" in device else 0)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores": int(os.cpu_count() or 1),
        "cpu_affinity": aff,
        "memory_bytes": _mem_total(),
        "loadavg": load,
        "gpu": gpu,
        "gastrt_version": __version__,
        "gastrt_commit": commit,
        "gastrt_dirty": dirty,
        "gastrt_build": cfg,
        "blas": cfg.get("blas"),
        "torch_version": None if torch is None else str(torch.__version__),
        "numpy_version": np.__version__,
    }
