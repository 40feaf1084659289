"""`gastrt bench`: latency and throughput of a gastrt engine against the eager PyTorch reference
model, ``torch.compile`` of it and (on a GPU) TensorRT, measured in the same run, as a table,
JSON and a plot.

    gastrt bench gast-27                                   # built-in preset (random weights)
    gastrt bench model.gastrt --batch 1,64 --json r.json   # an engine file: gastrt alone
    gastrt bench ckpt.bin --mode sequence --plot r.png     # a checkpoint, built on the fly

    from gastrt.bench import run_bench, format_table
    result = run_bench("gast-27", batches=[1, 64])         # -> dict: the JSON document below
    print(format_table(result))

TARGET is an engine file (``.gastrt``), a checkpoint of the original training scripts (built into
a temporary engine; ``--causal`` for causal checkpoints) or a built-in preset: ``gast-27``,
``gast-81``, ``gast-243``, ``videopose3d-27``, ``videopose3d-81``, ``videopose3d-243``, ``rie-243``,
each also as ``<name>-causal``. Presets are the shipped architectures with seeded random weights
in the original layout (weights do not change the arithmetic); they need torch to be generated
and are cached under ``~/.cache/gastrt/presets/`` (``$GASTRT_CACHE_DIR/presets`` when set),
keyed by preset, precision and gastrt version, so a second run starts at once. An engine file
holds lowered weights (BatchNorm folded), so the eager / compile comparison needs a checkpoint
or a preset; without torch, bench measures gastrt alone and says why.

Contenders. ``gastrt``: the engine (``Engine.lift`` / ``lift_sequence`` / ``Stream.push`` on
NumPy arrays; on a GPU, the backend's device-array path on torch CUDA tensors, so no contender
pays host copies). ``eager``: ``factory.build_model(optimized=True)`` (the strided single-frame
model) in window and stream mode, ``optimized=False`` (the dilated full-sequence model) in
sequence mode; RIE has no sequence form, so its sequence mode is one window per frame for every
contender, in chunks of 4096 windows like the engine. ``compile``: ``torch.compile`` of the eager
model (default mode on CPU, ``mode="max-autotune", dynamic=False`` on CUDA); a failure is
reported in its row and the run goes on. All torch work runs under ``torch.inference_mode``,
``torch.set_num_threads(threads)``; the engine is loaded with ``threads=threads``. On CPU the
torch contenders compute in fp32 (so does gastrt's CPU runtime: fp16 / bf16 engines round the
weights only); on CUDA they run in the engine's precision. ``tensorrt`` (GPU only; by default
when TensorRT, cuda-python and onnx are installed): a TensorRT engine built per batch size from
the same gastrt engine (its ONNX export; optimization profile fixed at that batch, build time in
``build_s``), run on the same torch device tensors and stream (``TensorRTBackend.run_device``);
its output is checked against eager (or gastrt) in ``agreement_tensorrt``. Flip (``--flip``) is
the originals' test-time augmentation for every contender (a batch of [x, mirrored x],
un-mirror, average).

Modes and the batch axis. ``window``: batch = windows [B, RF, J, 2] -> B output frames per call.
``sequence``: batch = sequences (people) of ``--seq-len`` frames, edge padded inside the timed
call -> B * seq_len frames per call. ``stream``: batch = stream slots; one call = one
``push`` of one frame per slot -> B frames; eager / compile do what a live pipeline without
gastrt does, the window model on the B newest windows. On CUDA a push stays host to host (NumPy
frames in, poses out, one graph replay; the events bracket a synchronous call) while the torch
contenders get device tensors. Default batch sizes depend on the
device and mode (``DEFAULT_BATCHES``): a 4096-window batch of gast-27 is 1.5 TFLOP, minutes on
a laptop CPU.

Timing. Per (batch, contender) cell: the first call is timed on its own (``first_call_s``:
torch.compile compiles there), then warm-up calls run for ``--warmup`` seconds (untimed), then
``--repeat`` timed calls, stopping early once ``--max-time`` seconds have passed and at least
``min(repeat, 3)`` calls are in. Inputs rotate among up to 8 pre-generated random input sets.
CPU: ``time.perf_counter`` around each call. CUDA: ``torch.cuda.Event`` pairs on the current
stream, synchronised after each call (latency, not pipelined throughput). Latency percentiles
are NumPy's linear-interpolation percentiles of the timed calls; throughput = frames per call /
median latency; achieved FLOP/s = analytic FLOPs per frame (``plan.flops_per_frame``, doubled
with flip; stream: ``Stream.flops_per_push``) * frames / median latency. The same analytic count
is used for the torch contenders (the work the model needs, not what torch happens to execute).
Speed-up = eager median / contender median, same batch, same run.

Memory (``peak_mem_bytes``). Host: the growth of the process's peak RSS during the cell over its
RSS at the start of the cell (peak reset through ``/proc/self/clear_refs``; source
``rss_hwm``), or, where the peak cannot be reset, the growth of ``getrusage`` maxrss (source
``maxrss_delta``, a lower bound). Inputs, weights and buffers kept from earlier cells are not
counted; for torch.compile the cell starts after its first call (compilation is not the model's
memory). CUDA: ``torch.cuda.max_memory_allocated`` growth (``cuda_max_allocated``), plus the
engine's arena for gastrt (``arena+cuda_max_allocated``). ``workspace_bytes``: what the engine
itself reports (native backend ``workspace_bytes``, stream ``ring_bytes``), else null.

The CUDA path (events, device arrays, max-autotune, cuda memory) has not been run on a GPU yet.
``run_bench`` calls ``torch._dynamo.reset()`` at its end when it compiled anything.

JSON document (``--json``; ``run_bench``'s return value). Every key below is always present
(null where it does not apply); the type column is what ``tests/test_bench.py`` checks.

[top]
schema            str              always "gastrt-bench"
schema_version    int              2 (2 added agreement_tensorrt and the rows' build_s)
created           str              ISO 8601 UTC time the run started
machine           object           [machine]
config            object           [config]
agreement         object|null      [agreement]: gastrt vs eager outputs on one input, or null
agreement_tensorrt object|null     [agreement_tensorrt]: TensorRT vs eager (or gastrt), or null
notes             list             strings: why a comparison is missing, load warnings, ...
rows              list             [row], one per contender per batch size, in run order

[machine]
platform          str              platform.platform()
python            str              Python version
cpu_model         str|null         "model name" of /proc/cpuinfo (platform.processor() elsewhere)
cpu_cores         int              os.cpu_count()
cpu_affinity      int|null         cores this process may run on
memory_bytes      int|null         MemTotal
loadavg           list|null        1, 5, 15-minute load averages at the start (noise indicator)
gpu               object|null      null on CPU; else name, index, capability, memory_bytes, driver, cuda
gastrt_version    str              gastrt.__version__
gastrt_commit     str|null         git HEAD of the checkout gastrt runs from (null when installed)
gastrt_dirty      bool|null        the checkout has uncommitted changes to tracked files
gastrt_build      object           gastrt.build_config() (native, blas, cuda, compiler, ...)
blas              str|null         the native runtime's BLAS per build_config
torch_version     str|null         null without torch
numpy_version     str              numpy.__version__

[config]
target            str              as given
target_kind       str              "preset", "checkpoint" or "engine"
engine_path       str              the engine measured (a temp or cache path for the other kinds)
family            str              "gast", "videopose3d" or "rie"
receptive_field   int              frames
num_joints        int              input joints
parameter_count   int              parameters of the checkpoint
causal            bool             causal engine
device            str              "cpu" or "cuda:N"
backend           str              gastrt backend: "native", "numpy" or "cuda"
mode              str              "window", "sequence" or "stream"
seq_len           int|null         frames per sequence (sequence mode)
batches           list             batch sizes, in run order
precision         str              engine precision: "fp32", "fp16" or "bf16"
torch_dtype       str|null         dtype of the torch contenders; null without them
compare           list             contenders asked for besides gastrt: "eager", "compile", "tensorrt"
flip              bool             flip test-time augmentation
warmup_s          float            warm-up seconds per cell
repeat            int              timed calls per cell (at most)
max_time_s        float            seconds per cell after which timing stops (3 calls at least)
threads           int              CPU threads for every contender
input_sets        int              pre-generated input sets rotated per cell (at most)

[agreement]
batch             int              batch size of the check
max_rel_err       float            max |gastrt - eager| / max |eager|

[agreement_tensorrt]
batch             int              batch size of the check
reference         str              "eager" (when it runs) or "gastrt"
max_rel_err       float            max |TensorRT - reference| / max |reference|

[row]
contender         str              "gastrt", "eager", "compile" or "tensorrt"
label             str              table label, e.g. "gastrt (native)", "torch.compile"
batch             int              batch size
status            str              "ok", "failed" (error says why) or "skipped"
error             str|null         why the row has no numbers
frames_per_call   int              output frames one call produces
flops_per_frame   float            analytic FLOPs per output frame this contender needs
n                 int|null         timed calls
first_call_s      float|null       seconds of the first call (compilation included)
build_s           float|null       seconds building this row's TensorRT engine; null for the others
latency_ms        object|null      [latency_ms]
throughput_fps    float|null       output frames per second at the median latency
achieved_flops    float|null       FLOP/s at the median latency
peak_mem_bytes    int|null         see Memory above
peak_mem_source   str|null         "rss_hwm", "maxrss_delta", "cuda_max_allocated", "arena+cuda_max_allocated"
workspace_bytes   int|null         engine-reported workspace (gastrt rows only)
speedup_vs_eager  float|null       eager median / this median (same batch); null without eager

[latency_ms]
p50               float            median call latency, milliseconds
p90               float            90th percentile
p99               float            99th percentile
mean              float            mean
min               float            fastest call
max               float            slowest call
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._version import __version__
from .errors import GastrtError

__all__ = ["run_bench", "format_table", "write_json", "write_plot", "add_parsers", "PRESETS",
           "BASE_PRESETS", "SCHEMA", "SCHEMA_VERSION", "DEFAULT_BATCHES", "parse_batches",
           "preset_engine", "preset_cache_dir"]

SCHEMA = "gastrt-bench"
SCHEMA_VERSION = 2

BASE_PRESETS = ("gast-27", "gast-81", "gast-243", "videopose3d-27", "videopose3d-81",
                "videopose3d-243", "rie-243")
PRESETS = tuple(p for b in BASE_PRESETS for p in (b, b + "-causal"))

MODES = ("window", "sequence", "stream")
TORCH_CONTENDERS = ("eager", "compile")
CONTENDERS = TORCH_CONTENDERS + ("tensorrt",)
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_BATCHES = {
    ("cpu", "window"): (1, 8, 64, 512),
    ("cpu", "sequence"): (1, 4),
    ("cpu", "stream"): (1, 8, 64),
    ("cuda", "window"): (1, 8, 64, 512, 4096),
    ("cuda", "sequence"): (1, 8, 64),
    ("cuda", "stream"): (1, 64, 1024),
}
DEFAULT_SEQ_LEN = 1000
DEFAULT_WARMUP = 0.5
DEFAULT_REPEAT = 50
DEFAULT_MAX_TIME = 3.0
MIN_TIMED = 3
MAX_INPUT_SETS = 8
INPUT_SET_BYTES = 256 << 20
SEQ_CHUNK = 4096          # windows per call for RIE sequences (as Engine.lift_sequence)
_LABELS = {"eager": "eager", "compile": "torch.compile", "tensorrt": "TensorRT"}


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------

def parse_batches(spec) -> list[int]:
    """'1,8,64' (or a list of ints) -> [1, 8, 64]: positive, duplicates dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int] = []
    for it in items:
        s = it.strip() if isinstance(it, str) else it
        try:
            if isinstance(s, bool):
                raise ValueError
            v = int(s)
            if isinstance(s, float) and v != s:
                raise ValueError
        except (TypeError, ValueError):
            raise GastrtError(f"--batch: expected comma-separated positive integers such as 1,8,64, "
                              f"got {spec!r}") from None
        if v < 1:
            raise GastrtError(f"--batch: batch sizes must be positive, got {v} in {spec!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise GastrtError(f"--batch: no batch sizes in {spec!r}")
    return out


def _parse_compare(spec) -> list[str]:
    if spec is None:
        return list(TORCH_CONTENDERS)
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if items in ([], ["none"]):
        return []
    out = []
    for s in items:
        if s not in CONTENDERS:
            raise GastrtError(f"--compare: unknown contender {s!r}: expected a comma-separated subset "
                              f"of {','.join(CONTENDERS)} (or 'none')")
        if s not in out:
            out.append(s)
    return out


def _positive_number(v, what: str, allow_zero: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise GastrtError(f"{what}: expected a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise GastrtError(f"{what}: expected a {'non-negative' if allow_zero else 'positive'} number, got {v!r}")
    return f


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool):
        raise GastrtError(f"{what}: expected a positive integer, got {v!r}")
    try:
        i = int(v)
        if isinstance(v, float) and i != v:
            raise ValueError
    except (TypeError, ValueError):
        raise GastrtError(f"{what}: expected a positive integer, got {v!r}") from None
    if i < 1:
        raise GastrtError(f"{what}: expected a positive integer, got {v!r}")
    return i


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _import_torch():
    """torch, or None when it is not installed (tests patch this)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _stream_available() -> bool:
    try:
        mod = importlib.import_module("gastrt.stream")
    except ImportError:
        return False
    return hasattr(mod, "Stream")


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------

def preset_cache_dir() -> str:
    root = os.environ.get("GASTRT_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "gastrt")
    return os.path.join(root, "presets")


def _split_preset(name: str) -> tuple[str, bool]:
    if name.endswith("-causal"):
        return name[:-len("-causal")], True
    return name, False


def _preset_seed(base: str) -> int:
    return zlib.crc32(base.encode()) % 100000


def _preset_weights(base: str):
    from .reference import factory
    family, config = factory.PRESETS[base]
    return family, dict(config), factory.random_state_dict(family, config, seed=_preset_seed(base))


def _engine_ok(path: str) -> bool:
    from .engine_file import read_engine
    try:
        read_engine(path, verify=True)
    except (GastrtError, OSError):
        return False
    return True


def preset_engine(name: str, precision: str = "fp32", notes: list | None = None) -> str:
    """Path of the engine of a built-in preset, building it (seeded random weights in the
    original checkpoint layout) into the cache on first use. Needs torch to build."""
    from .engine_file import FORMAT_VERSION
    from .plan import PLAN_VERSION

    if name not in PRESETS:
        raise GastrtError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    if precision not in PRECISIONS:
        raise GastrtError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    d = preset_cache_dir()
    fname = f"{name}-{precision}-gastrt{__version__}-f{FORMAT_VERSION}p{PLAN_VERSION}.gastrt"
    path = os.path.join(d, fname)
    if os.path.isfile(path) and _engine_ok(path):
        return path
    torch = _import_torch()
    if torch is None:
        raise GastrtError(f"preset {name!r} needs torch to generate its weights, which is not installed "
                          "(pip install gastrt[torch]); or bench an engine file")
    from .engine import build
    try:
        os.makedirs(d, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=d, prefix=".probe-", delete=True)
        probe.close()
    except OSError as e:
        d = tempfile.mkdtemp(prefix="gastrt-presets-")
        path = os.path.join(d, fname)
        if notes is not None:
            notes.append(f"preset cache {preset_cache_dir()} is not writable ({e.strerror or e}); "
                         f"built into {d} (not reused)")
    base, causal = _split_preset(name)
    _, _, sd = _preset_weights(base)
    with tempfile.TemporaryDirectory(prefix="gastrt-preset-") as tmp:
        ck = os.path.join(tmp, f"{base}.bin")
        torch.save({"model_pos": sd}, ck)
        build(ck, path, causal=causal, precision=precision)
    return path


def _is_checkpoint_file(path: str) -> bool:
    """Torch checkpoints are zip archives or legacy pickles; anything else is taken for an engine
    (whose reader then says clearly what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _config_from_hyper(family: str, hyper: dict) -> dict:
    """The factory config dict of a lowered checkpoint (its hyper-parameters)."""
    if family == "gast":
        return {"num_joints": int(hyper["num_joints"]), "filter_widths": list(hyper["filter_widths"]),
                "channels": int(hyper["channels"])}
    if family == "videopose3d":
        return {"num_joints_in": int(hyper["num_joints_in"]), "in_features": 2,
                "num_joints_out": int(hyper["num_joints_out"]), "filter_widths": list(hyper["filter_widths"]),
                "channels": int(hyper["channels"]), "trajectory": False}
    if family == "rie":
        return {"num_joints": int(hyper.get("num_joints", 17)), "filter_widths": list(hyper["filter_widths"]),
                "channels": int(hyper["channels"]), "latent": int(hyper["latent"]),
                "stage": 3 if str(hyper["stage"]) != "1" else 1}
    raise GastrtError(f"unknown family {family!r}")


@dataclass
class _Target:
    kind: str                     # preset | checkpoint | engine
    engine_path: str
    family: str | None = None
    config: dict | None = None
    state_dict: dict | None = None  # model_pos as torch tensors, for the eager model
    why_no_torch: str | None = None
    tmpdir: Any = None


def _resolve_target(target: str, precision: str | None, causal: bool, want_torch: bool, torch,
                    notes: list) -> _Target:
    path = os.fspath(target)
    if os.path.exists(path):
        if os.path.isdir(path):
            raise GastrtError(f"{path}: is a directory; expected an engine file, a checkpoint or a preset name")
        if not _is_checkpoint_file(path):
            if causal:
                raise GastrtError("--causal applies to checkpoints; an engine file records whether it is causal")
            return _Target("engine", path, why_no_torch="an engine file holds lowered weights (BatchNorm folded); "
                           "bench its checkpoint or a preset to compare with eager PyTorch / torch.compile")
        from .engine import build
        from .engine_file import read_engine
        tmp = tempfile.TemporaryDirectory(prefix="gastrt-bench-")
        eng_path = build(path, os.path.join(tmp.name, "engine.gastrt"), causal=causal,
                         precision=precision or "fp32")
        meta, _ = read_engine(eng_path, verify=False)
        t = _Target("checkpoint", eng_path, meta["family"], _config_from_hyper(meta["family"], meta["hyper"]),
                    tmpdir=tmp)
        if want_torch and torch is not None:
            from .checkpoint import load_state_dicts
            pos, _, _ = load_state_dicts(path)
            t.state_dict = {k: torch.from_numpy(np.array(v)) for k, v in pos.items()}
        return t
    if target in PRESETS:
        if causal:
            raise GastrtError(f"--causal applies to checkpoints; use the preset {_split_preset(target)[0]}-causal")
        # a cached engine needs no torch; building one does (preset_engine says so)
        eng_path = preset_engine(target, precision or "fp32", notes)
        t = _Target("preset", eng_path)
        if want_torch and torch is not None:
            t.family, t.config, t.state_dict = _preset_weights(_split_preset(target)[0])
        return t
    raise GastrtError(f"{target!r}: no such file, and not a built-in preset (presets: {', '.join(PRESETS)})")


# ---------------------------------------------------------------------------------------------
# machine information
# ---------------------------------------------------------------------------------------------

def _cpu_model() -> str | None:
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
    here = os.path.dirname(os.path.abspath(__file__))
    top = _git(["rev-parse", "--show-toplevel"])
    # only a checkout of gastrt itself (python/gastrt inside it), not a site-packages inside some repo
    if not top or os.path.normpath(os.path.join(top, "python", "gastrt")) != os.path.normpath(here):
        return None, None
    commit = _git(["rev-parse", "HEAD"])
    status = _git(["status", "--porcelain", "--untracked-files=no"])
    return commit, (None if status is None else bool(status))


def _gpu_info(torch, index: int, eng) -> dict:
    info: dict = {"name": None, "index": index, "capability": None, "memory_bytes": None, "driver": None,
                  "cuda": None}
    try:
        info["name"] = eng.backend.device_name
    except Exception:
        pass
    if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
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
        from . import build_config
        info["cuda"] = build_config().get("cuda_version")
    return info


def machine_info(torch=None, device: str = "cpu", eng=None) -> dict:
    from . import build_config

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
        gpu = _gpu_info(torch, int(device.split(":")[1]) if ":" in device else 0, eng)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
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


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------

class _MemProbe:
    """Peak host RSS growth over one cell (VmHWM after resetting it via /proc/self/clear_refs;
    getrusage maxrss growth where that is not possible)."""

    def __init__(self):
        self.source = "maxrss_delta"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if self._status("VmHWM") is not None:
                self.source = "rss_hwm"
        except OSError:
            pass
        self.base = 0

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    @staticmethod
    def _maxrss() -> int:
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r) * (1 if sys.platform == "darwin" else 1024)

    def start(self) -> None:
        if self.source == "rss_hwm":
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.source = "maxrss_delta"
            else:
                self.base = self._status("VmRSS") or 0
                return
        try:
            self.base = self._maxrss()
        except Exception:
            self.base = 0

    def stop(self) -> tuple[int | None, str]:
        if self.source == "rss_hwm":
            hwm = self._status("VmHWM")
            return (None if hwm is None else max(0, hwm - self.base)), self.source
        try:
            return max(0, self._maxrss() - self.base), self.source
        except Exception:
            return None, self.source


class _CudaMemProbe:
    def __init__(self, torch, dev, extra: Callable[[], int | None] | None = None):
        self.torch, self.dev, self.extra = torch, dev, extra
        self.base = 0

    def start(self) -> None:
        self.torch.cuda.synchronize(self.dev)
        self.torch.cuda.reset_peak_memory_stats(self.dev)
        self.base = self.torch.cuda.memory_allocated(self.dev)

    def stop(self) -> tuple[int | None, str]:
        self.torch.cuda.synchronize(self.dev)
        peak = max(0, self.torch.cuda.max_memory_allocated(self.dev) - self.base)
        if self.extra is None:
            return int(peak), "cuda_max_allocated"
        try:
            arena = self.extra()
        except Exception:
            arena = None
        if arena is None:
            return int(peak), "cuda_max_allocated"
        return int(peak + arena), "arena+cuda_max_allocated"


@dataclass
class _Runner:
    """One contender at one batch size: call(x) runs one timed unit of work."""
    name: str
    label: str
    call: Callable[[Any], Any]
    inputs: list
    frames_per_call: int
    flops_per_frame: float
    workspace: Callable[[], int | None] | None = None
    compiles: bool = False
    device_bytes: Callable[[], int | None] | None = None   # device memory the contender holds itself
    build_s: float | None = None                           # seconds building its engine (TensorRT)


class _CellFailed(Exception):
    pass


class _Progress:
    """A one-line stderr progress bar; silent when stderr is not a TTY."""

    def __init__(self, total: int, stream=None, enabled: bool | None = None, width: int = 24):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            try:
                enabled = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                enabled = False
        self.enabled, self.total, self.width = enabled, max(1, total), width
        self.done = 0
        self._last = 0.0
        self._len = 0

    def show(self, what: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        filled = self.width * self.done // self.total
        line = f"bench [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {what}"
        pad = max(0, self._len - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._len = len(line)

    def step(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self.enabled and self._len:
            self.stream.write("\r" + " " * self._len + "\r")
            self.stream.flush()
            self._len = 0


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def _short(e: BaseException, limit: int = 240) -> str:
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _measure(run: _Runner, *, warmup: float, repeat: int, max_time: float, timer, mem,
             progress: _Progress, what: str) -> dict:
    """first call, time-based warm-up, timed calls -> the numeric fields of a row."""
    inputs = run.inputs
    k = len(inputs)
    if not run.compiles:
        mem.start()
    t0 = time.perf_counter()
    run.call(inputs[0])
    timer.sync()
    first = time.perf_counter() - t0
    if run.compiles:  # torch.compile compiles in its first call: not the model's memory
        mem.start()
    i = 1
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        run.call(inputs[i % k])
        i += 1
        progress.show(f"{what} warm-up")
    timer.sync()
    times: list[float] = []
    floor = min(repeat, MIN_TIMED)
    start = time.perf_counter()
    for r in range(repeat):
        times.append(timer.time(run.call, inputs[i % k]))
        i += 1
        progress.show(f"{what} {r + 1}/{repeat}")
        if len(times) >= floor and time.perf_counter() - start > max_time:
            break
    peak, source = mem.stop()
    ms = np.asarray(times, dtype=np.float64) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    fps = run.frames_per_call / (p50 / 1e3)
    ws = None
    if run.workspace is not None:
        try:
            ws = run.workspace()
        except Exception:
            ws = None
    return {
        "n": len(times), "first_call_s": first,
        "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": float(ms.mean()),
                       "min": float(ms.min()), "max": float(ms.max())},
        "throughput_fps": fps, "achieved_flops": fps * run.flops_per_frame,
        "peak_mem_bytes": None if peak is None else int(peak), "peak_mem_source": source,
        "workspace_bytes": None if ws is None else int(ws),
    }


class _CpuTimer:
    def sync(self) -> None:
        pass

    def time(self, fn, x) -> float:
        t = time.perf_counter()
        fn(x)
        return time.perf_counter() - t


class _CudaTimer:
    """CUDA events on the bench device's current stream around each call, synchronised after it
    (unverified: no GPU was available when this was written). The events are recorded on that
    device's stream explicitly: with cuda:N, N > 0, a bare ``record()`` would go to device 0's
    stream and time only the host's launches."""

    def __init__(self, torch, dev):
        self.torch, self.dev = torch, dev
        with torch.cuda.device(dev):
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.dev)

    def time(self, fn, x) -> float:
        s = self.torch.cuda.current_stream(self.dev)
        self.start.record(s)
        fn(x)
        self.end.record(s)
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3


# ---------------------------------------------------------------------------------------------
# the torch side: eager / compile / gastrt on device arrays share the flip + padding wrapper
# ---------------------------------------------------------------------------------------------

@dataclass
class _Geom:
    mode: str
    rf: int
    pad: int
    shift: int
    windowed: bool               # RIE: sequence = one window per frame
    j_in: int
    j_out: int
    flip: bool
    perm_in: Any = None          # torch index tensors (flip)
    perm_out: Any = None
    extra: dict = field(default_factory=dict)


def _torch_flip_run(torch, fwd, x, g: _Geom):
    if not g.flip:
        return fwd(x)
    sign_in = g.extra["sign_in"]
    sign_out = g.extra["sign_out"]
    xf = x.index_select(-2, g.perm_in) * sign_in
    y = fwd(torch.cat([x, xf]))
    n = x.shape[0]
    yf = y[n:].index_select(-2, g.perm_out) * sign_out
    return (y[:n] + yf) * 0.5


def _torch_forward(torch, fwd, x, g: _Geom):
    """x: window mode [B, RF, J, 2]; sequence mode [B, T, J, 2] (unpadded)."""
    if g.mode != "sequence":
        return _torch_flip_run(torch, fwd, x, g)
    t = x.shape[1]
    idx = torch.arange(-(g.pad + g.shift), t + g.pad - g.shift, device=x.device).clamp_(0, t - 1)
    xp = x.index_select(1, idx)
    if not g.windowed:
        return _torch_flip_run(torch, fwd, xp, g)
    b = xp.shape[0]
    win = xp.unfold(1, g.rf, 1).permute(0, 1, 4, 2, 3).reshape(b * t, g.rf, g.j_in, xp.shape[-1])
    chunk = max(1, SEQ_CHUNK // (2 if g.flip else 1))
    # each chunk copied out at once: torch.compile's CUDA graphs (max-autotune) reuse the output
    # memory of one call for the next
    out = None
    for i in range(0, b * t, chunk):
        y = _torch_flip_run(torch, fwd, win[i:i + chunk].contiguous(), g)
        if out is None:
            out = y.new_empty((b * t,) + tuple(y.shape[1:]))
        out[i:i + y.shape[0]].copy_(y)
    return out.reshape(b, t, *out.shape[2:])


def _torch_dtype(torch, precision: str, on_cuda: bool):
    if not on_cuda:
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _build_eager(torch, tgt: _Target, mode: str, causal: bool, dev, dtype):
    from .reference import factory
    optimized = mode != "sequence" or tgt.family == "rie"
    model = factory.build_model(tgt.family, tgt.config, optimized=optimized, causal=causal,
                                state_dict=tgt.state_dict)
    return model.to(device=dev, dtype=dtype).eval()


def _compile(torch, model, on_cuda: bool):
    if not hasattr(torch, "compile"):
        raise _CellFailed(f"this torch ({torch.__version__}) has no torch.compile (needs torch >= 2.0)")
    if on_cuda:
        return torch.compile(model, mode="max-autotune", dynamic=False)
    return torch.compile(model)


class _DynamoLimits:
    """Lets torch.compile specialise on every batch size of the run (restored afterwards)."""

    def __init__(self, torch, n: int):
        self.cfg = None
        self.saved: dict = {}
        try:
            self.cfg = torch._dynamo.config
        except AttributeError:
            return
        for attr in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                     "accumulated_cache_size_limit"):
            if hasattr(self.cfg, attr):
                old = getattr(self.cfg, attr)
                self.saved[attr] = old
                try:
                    setattr(self.cfg, attr, max(int(old), 8 * n + 8))
                except Exception:
                    pass

    def restore(self) -> None:
        for attr, v in self.saved.items():
            try:
                setattr(self.cfg, attr, v)
            except Exception:
                pass


# ---------------------------------------------------------------------------------------------
# run_bench
# ---------------------------------------------------------------------------------------------

def _rel_err(got, ref) -> float:
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def _input_sets(rng, shape: tuple, budget: int = INPUT_SET_BYTES) -> list[np.ndarray]:
    nbytes = int(np.prod(shape)) * 4
    k = int(min(MAX_INPUT_SETS, max(2, budget // max(nbytes, 1))))
    return [(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.4)) for _ in range(k)]


def run_bench(target, *, device: str = "cpu", batches=None, mode: str = "window",
              seq_len: int = DEFAULT_SEQ_LEN, precision: str | None = None, compare=None,
              flip: bool = False, warmup: float = DEFAULT_WARMUP, repeat: int = DEFAULT_REPEAT,
              max_time: float = DEFAULT_MAX_TIME, threads: int | None = None, backend: str | None = None,
              causal: bool = False, progress: bool | None = False, seed: int = 0) -> dict:
    """Benchmark ``target`` (engine file, checkpoint or preset name; see the module doc) and
    return the JSON document described there. ``compare``: contenders besides gastrt ("eager",
    "compile", "tensorrt"; default eager and compile, plus TensorRT on a GPU where it is
    installed; [] for gastrt alone). ``backend``: CPU backend ("native" or
    "numpy"; default native when built). ``progress``: True/None shows the stderr bar (None: only
    on a TTY), False never."""
    from .engine import load, parse_device

    # ---- validate everything before any expensive work
    dev_kind, dev_index = parse_device(device)
    device = "cpu" if dev_kind == "cpu" else f"cuda:{dev_index}"
    if mode not in MODES:
        raise GastrtError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "stream" and not _stream_available():
        raise GastrtError("--mode stream needs gastrt's streaming runtime (gastrt.stream), which this install "
                          "does not have; use --mode window or --mode sequence")
    batches = parse_batches(batches) if batches is not None else list(DEFAULT_BATCHES[(dev_kind, mode)])
    seq_len = _positive_int(seq_len, "--seq-len")
    repeat = _positive_int(repeat, "--repeat")
    warmup = _positive_number(warmup, "--warmup", allow_zero=True)
    max_time = _positive_number(max_time, "--max-time")
    threads = _default_threads() if threads is None else _positive_int(threads, "--threads")
    if precision is not None and precision not in PRECISIONS:
        raise GastrtError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if backend not in (None, "auto", "native", "numpy"):
        raise GastrtError(f"unknown backend {backend!r}: expected 'native' or 'numpy'")
    if backend is not None and backend != "auto" and dev_kind == "cuda":
        raise GastrtError("--backend chooses the CPU runtime; a CUDA device always runs the CUDA backend")
    backend = None if backend == "auto" else backend
    auto_trt = compare is None
    compare = _parse_compare(compare)
    if auto_trt and dev_kind == "cuda" and importlib.util.find_spec("tensorrt") is not None:
        compare.append("tensorrt")
    torch_compare = [c for c in compare if c in TORCH_CONTENDERS]

    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    notes: list[str] = []
    need_torch = bool(torch_compare) or dev_kind == "cuda" or not os.path.exists(os.fspath(target))
    torch = _import_torch() if need_torch else None
    if torch_compare and torch is None:
        notes.append("no eager / torch.compile comparison: torch is not installed (pip install gastrt[torch])")

    tgt = _resolve_target(target, precision, bool(causal), bool(torch_compare), torch, notes)
    try:
        return _run(tgt, target, torch, created, notes, load, device=device, dev_kind=dev_kind,
                    dev_index=dev_index, batches=batches, mode=mode, seq_len=seq_len, precision=precision,
                    compare=compare, flip=bool(flip), warmup=warmup, repeat=repeat, max_time=max_time,
                    threads=threads, backend=backend, progress=progress, seed=seed)
    finally:
        if tgt.tmpdir is not None:
            tgt.tmpdir.cleanup()


def _run(tgt: _Target, target, torch, created, notes, load, *, device, dev_kind, dev_index, batches, mode,
         seq_len, precision, compare, flip, warmup, repeat, max_time, threads, backend, progress, seed) -> dict:
    eng = load(tgt.engine_path, device=device, threads=threads, backend=backend)
    if precision is not None and eng.precision != precision:
        raise GastrtError(f"--precision {precision}: {tgt.engine_path} is a {eng.precision} engine "
                          "(an engine file's precision is fixed at build time; rebuild it, or drop --precision)")
    precision = eng.precision
    plan = eng.plans["pos"]
    family = eng.family
    windowed = "sequence" not in plan.modes
    if flip:  # fails early when the engine has no left/right symmetry
        perm_in = eng._perm(plan.in_joints, eng.kps_left, eng.kps_right)
        perm_out = eng._perm(plan.out_joints, eng.joints_left, eng.joints_right)
    else:
        perm_in = perm_out = None
    if tgt.family is None:
        tgt.family = family
    on_cuda = dev_kind == "cuda"
    be_name = getattr(eng.backend, "name", "?")

    # ---- torch contenders: which can run
    contenders: list[str] = ["gastrt"]
    torch_dev = dtype = None
    torch_compare = [c for c in compare if c in TORCH_CONTENDERS]
    if torch_compare and torch is not None:
        if tgt.why_no_torch:
            notes.append(f"no eager / torch.compile comparison: {tgt.why_no_torch}")
        elif tgt.state_dict is None or tgt.config is None:
            notes.append("no eager / torch.compile comparison: the checkpoint's weights could not be read for torch")
        else:
            contenders += torch_compare
            torch_dev = torch.device(device)
            dtype = _torch_dtype(torch, precision, on_cuda)
            if not on_cuda and precision != "fp32":
                notes.append(f"eager / torch.compile compute in fp32 on CPU (gastrt's CPU runtime computes in "
                             f"fp32 too; its {precision} engine rounds the weights only)")
    if on_cuda and torch is None:
        raise GastrtError("benchmarking on CUDA needs torch (device tensors and CUDA events); "
                          "pip install gastrt[torch]")
    if on_cuda and not torch.cuda.is_available():
        raise GastrtError(f"benchmarking on CUDA needs a CUDA build of torch (device tensors and CUDA events); "
                          f"this torch {torch.__version__} has none")
    if "tensorrt" in compare:
        why = _tensorrt_unavailable(on_cuda)
        if why:
            notes.append(f"no TensorRT comparison: {why}")
        else:
            contenders.append("tensorrt")
            notes.append("TensorRT: one engine per batch size, built from the same engine's weights through "
                         "gastrt's ONNX export (its optimization profile fixed at that batch); build time in "
                         "build_s, not in the timings; device memory = TensorRT's activation memory + the "
                         "serialized engine")
    if on_cuda and precision == "fp32" and any(c in TORCH_CONTENDERS for c in contenders):
        notes.append("fp32 on CUDA: the torch contenders run with TF32 off (cuDNN / cuBLAS), as gastrt's "
                     "fp32 kernels (plain FP32 FMA): like for like")
    have_tpc = importlib.util.find_spec("threadpoolctl") is not None  # limits NumPy's BLAS threads
    if be_name == "numpy" and not on_cuda and not have_tpc:
        notes.append("gastrt runs on its NumPy backend: NumPy's BLAS uses its own thread count "
                     "(OPENBLAS_NUM_THREADS), not --threads")
    if mode == "stream" and not have_tpc:
        notes.append("stream mode: gastrt's per-column steps use NumPy's BLAS, whose thread count is "
                     "NumPy's own (OPENBLAS_NUM_THREADS), not --threads")
    if mode == "stream" and len(contenders) > 1:
        notes.append("stream mode: the other contenders run the window model on the newest window of every "
                     "slot per push (a live pipeline without column reuse)")

    machine = machine_info(torch, device, eng)
    if machine["loadavg"] and machine["cpu_affinity"] and machine["loadavg"][0] > 0.5 * machine["cpu_affinity"]:
        notes.append(f"the machine was busy when the run started (1-minute load average "
                     f"{machine['loadavg'][0]} on {machine['cpu_affinity']} cores): timings are noisy")

    # ---- FLOPs per output frame
    mult = 2 if flip else 1
    fpf_window = float(eng.flops_per_frame("window")) * mult
    fpf_seq = float(eng.flops_per_frame("sequence", seq_len)) * mult

    geom = _Geom(mode, plan.receptive_field, plan.pad, eng.causal_shift, windowed, plan.in_joints,
                 plan.out_joints, flip)
    if torch is not None and (len(contenders) > 1 or on_cuda):
        tdev = torch.device(device)
        if flip:
            geom.perm_in = torch.as_tensor(perm_in, device=tdev)
            geom.perm_out = torch.as_tensor(perm_out, device=tdev)
            geom.extra["sign_in"] = torch.tensor([-1.0, 1.0], device=tdev)
            geom.extra["sign_out"] = torch.tensor([-1.0, 1.0, 1.0], device=tdev)

    config = {
        "target": os.fspath(target), "target_kind": tgt.kind, "engine_path": tgt.engine_path,
        "family": family, "receptive_field": int(plan.receptive_field), "num_joints": int(plan.in_joints),
        "parameter_count": int(eng.metadata.get("parameter_count", 0)), "causal": bool(eng.causal),
        "device": device, "backend": be_name, "mode": mode, "seq_len": seq_len if mode == "sequence" else None,
        "batches": list(batches), "precision": precision,
        "torch_dtype": None if dtype is None else str(dtype).replace("torch.", ""),
        "compare": list(compare), "flip": flip, "warmup_s": float(warmup), "repeat": int(repeat),
        "max_time_s": float(max_time), "threads": int(threads), "input_sets": MAX_INPUT_SETS,
    }
    result = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": created, "machine": machine,
              "config": config, "agreement": None, "agreement_tensorrt": None, "notes": notes, "rows": []}

    # ---- set up torch models
    saved_threads = None
    limits = None
    models: dict[str, Any] = {}
    failed: dict[str, str] = {}
    saved_tf32 = None
    if torch is not None:
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        if on_cuda and precision == "fp32":
            saved_tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    threadpool = None
    if (be_name == "numpy" or mode == "stream") and not on_cuda:
        try:
            from threadpoolctl import threadpool_limits
            threadpool = threadpool_limits(limits=threads)
        except ImportError:
            pass
    bar = _Progress(len(batches) * len(contenders), enabled=False if progress is False else None)
    try:
        if any(c in TORCH_CONTENDERS for c in contenders):
            try:
                models["eager"] = _build_eager(torch, tgt, mode, eng.causal, torch_dev, dtype)
            except Exception as e:  # the reference model cannot take these weights
                why = f"eager model unavailable: {_short(e)}"
                notes.append(f"no eager / torch.compile comparison: {why}")
                contenders = [c for c in contenders if c not in TORCH_CONTENDERS]
        if "tensorrt" in contenders:
            models["tensorrt"] = _TensorRTContender(tgt.engine_path, precision, dev_index, mode, seq_len,
                                                    plan.receptive_field, windowed, flip)
        if "compile" in contenders:
            limits = _DynamoLimits(torch, len(batches))
            try:
                models["compile"] = _compile(torch, models["eager"], on_cuda)
            except Exception as e:
                failed["compile"] = f"torch.compile unavailable: {_short(e)}"
        bar.total = max(1, len(batches) * len(contenders))
        rng = np.random.default_rng(seed)
        ctx = torch.inference_mode() if torch is not None else _nullcontext()
        with ctx:
            _bench_loop(result, eng, torch, tgt, contenders, models, failed, geom, bar, rng, batches=batches,
                        mode=mode, seq_len=seq_len, on_cuda=on_cuda, dev_index=dev_index, dtype=dtype,
                        fpf_window=fpf_window, fpf_seq=fpf_seq, warmup=warmup, repeat=repeat,
                        max_time=max_time, flip=flip, be_name=be_name)
    finally:
        bar.close()
        if threadpool is not None:
            threadpool.restore_original_limits()
        if limits is not None:
            limits.restore()
        if "compile" in models:
            models.pop("compile")
            try:
                torch._dynamo.reset()
            except Exception:
                pass
        trt_c = models.pop("tensorrt", None)
        if trt_c is not None:
            trt_c.close()
        if saved_tf32 is not None:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_tf32
        if saved_threads is not None:
            torch.set_num_threads(saved_threads)
    for name, why in failed.items():
        if why.startswith("torch.compile unavailable"):
            notes.append(why)
    return result


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _bench_loop(result, eng, torch, tgt, contenders, models, failed, geom: _Geom, bar: _Progress, rng, *,
                batches, mode, seq_len, on_cuda, dev_index, dtype, fpf_window, fpf_seq, warmup, repeat,
                max_time, flip, be_name) -> None:
    plan = eng.plans["pos"]
    j, f, rf = plan.in_joints, plan.in_features, plan.receptive_field
    tdev = torch.device(f"cuda:{dev_index}") if on_cuda else (torch.device("cpu") if torch is not None else None)
    timer = _CudaTimer(torch, tdev) if on_cuda else _CpuTimer()
    host_mem = None if on_cuda else _MemProbe()
    prime_done: set = set()
    eager_p50: dict[int, float] = {}

    for b in batches:
        # shared numpy input sets for this batch size
        if mode == "window":
            shapes = {"gastrt": (b, rf, j, f), "torch": (b, rf, j, f)}
        elif mode == "sequence":
            shapes = {"gastrt": (b, seq_len, j, f), "torch": (b, seq_len, j, f)}
        else:
            shapes = {"gastrt": (b, j, f), "torch": (b, rf, j, f)}
        sets = {k: _input_sets(rng, s) for k, s in {s: s for s in shapes.values()}.items()}
        frames = b * seq_len if mode == "sequence" else b
        result["config"]["input_sets"] = min(result["config"]["input_sets"],
                                             min(len(v) for v in sets.values()))

        for name in contenders:
            what = f"{_LABELS.get(name, name)} b={b}"
            bar.show(what, force=True)
            row = {"contender": name, "label": _label(name, eng, be_name), "batch": b, "status": "ok",
                   "error": None, "frames_per_call": frames,
                   "flops_per_frame": fpf_seq if mode == "sequence" else fpf_window,
                   "n": None, "first_call_s": None, "build_s": None, "latency_ms": None, "throughput_fps": None,
                   "achieved_flops": None, "peak_mem_bytes": None, "peak_mem_source": None,
                   "workspace_bytes": None, "speedup_vs_eager": None}
            if name in failed:
                row["status"], row["error"] = "skipped", failed[name]
                result["rows"].append(row)
                bar.step()
                continue
            try:
                run = _make_runner(name, eng, torch, models, geom, sets[shapes["gastrt" if name == "gastrt"
                                                                               else "torch"]],
                                   mode=mode, b=b, frames=frames, on_cuda=on_cuda, tdev=tdev, dtype=dtype, flip=flip,
                                   fpf=row["flops_per_frame"])
                row["flops_per_frame"] = run.flops_per_frame
                row["build_s"] = run.build_s
                if name != "compile" and name not in prime_done:
                    # one untimed call first: weights paged in, lazy init done (not counted as memory)
                    _prime(result, run, eng, torch, models, geom, sets, shapes, mode, b, on_cuda, tdev, dtype)
                    prime_done.add(name)
                if on_cuda:
                    extra = run.device_bytes if name != "gastrt" else _first_known(
                        run.device_bytes, _arena_fn(eng, geom, mode, b, seq_len))
                    mem = _CudaMemProbe(torch, tdev, extra)
                else:
                    mem = host_mem
                row.update(_measure(run, warmup=warmup, repeat=repeat, max_time=max_time, timer=timer, mem=mem,
                                    progress=bar, what=what))
            except KeyboardInterrupt:
                raise
            except Exception as e:
                # a gastrt bug fails the run on the CPU (tested there); on a GPU (whose paths have
                # not all run yet) the cell is reported failed and the rows so far are kept
                if name == "gastrt" and not _is_oom(e) and not on_cuda:
                    raise
                row["status"] = "failed"
                row["error"] = "out of memory" if _is_oom(e) else _short(e)
                failed[name] = f"{'out of memory' if _is_oom(e) else 'failed'} at batch {b}"
                if name == "eager":
                    failed.setdefault("compile", f"eager failed at batch {b}")
                if on_cuda:
                    try:
                        torch.cuda.empty_cache()
                    except Exception:
                        pass
            if row["status"] == "ok" and name == "eager":
                eager_p50[b] = row["latency_ms"]["p50"]
            result["rows"].append(row)
            bar.step()
        for row in result["rows"]:
            if row["batch"] == b and row["status"] == "ok" and b in eager_p50:
                row["speedup_vs_eager"] = eager_p50[b] / row["latency_ms"]["p50"]
        del sets
        clear = getattr(eng.backend, "clear_cache", None)  # native: drop this batch's workspaces
        if clear is not None:
            clear()


def _label(name: str, eng, be_name: str) -> str:
    if name == "gastrt":
        return f"gastrt ({be_name})"
    return _LABELS[name]


def _first_known(*fns):
    """A byte-count function returning the first non-None of ``fns``' results (None: skipped)."""
    def first():
        for f in fns:
            v = f() if f is not None else None
            if v is not None:
                return v
        return None
    return first


def _arena_fn(eng, g: _Geom, mode: str, b: int, seq_len: int):
    def arena():
        be = eng.backend
        n = b * (2 if g.flip else 1)
        if mode == "sequence" and not g.windowed:
            m, t = "sequence", seq_len + g.rf - 1
        elif mode == "sequence":
            m, t, n = "window", g.rf, min(n * seq_len, SEQ_CHUNK)
        else:
            m, t = "window", g.rf
        return int(be.program("pos", m, be.bucket(n, m), t).low.arena_bytes)
    return arena


def _make_runner(name, eng, torch, models, g: _Geom, sets, *, mode, b, frames, on_cuda, tdev, dtype, flip,
                 fpf) -> _Runner:
    label = _LABELS.get(name, name)
    if name == "tensorrt":
        trt_c = models["tensorrt"]
        be, build_s = trt_c.backend_for(b)
        call_mode = _call_mode(mode, g)
        fwd = (lambda x: be.run_device("pos", x, call_mode))
        xs = [torch.from_numpy(a).to(tdev) for a in sets]     # TensorRT's I/O is fp32 (as gastrt's)
        if mode == "stream":
            gw = _Geom("window", g.rf, g.pad, g.shift, g.windowed, g.j_in, g.j_out, g.flip, g.perm_in,
                       g.perm_out, g.extra)
            return _Runner(name, label, lambda x: _torch_forward(torch, fwd, x, gw), xs, frames,
                           float(eng.flops_per_frame("window")) * (2 if flip else 1),
                           device_bytes=be.device_bytes, build_s=build_s)
        return _Runner(name, label, lambda x: _torch_forward(torch, fwd, x, g), xs, frames, fpf,
                       device_bytes=be.device_bytes, build_s=build_s)
    if name == "gastrt":
        if mode == "stream":
            stream = eng.stream(slots=b, flip=flip)
            ws = (lambda: stream.stats().get("ring_bytes")) if hasattr(stream, "stats") else None
            dev = (lambda: stream.stats().get("device_bytes")) if on_cuda else None
            return _Runner(name, label, stream.push, sets, frames, float(stream.flops_per_push()), ws,
                           device_bytes=dev)
        ws = _workspace_fn(eng, g, mode, sets[0].shape) if not on_cuda else None
        if on_cuda:
            be = eng.backend
            call_mode = _call_mode(mode, g)
            fwd = (lambda x: be.run_device("pos", x, call_mode))
            xs = [torch.from_numpy(a).to(tdev) for a in sets]
            return _Runner(name, label, lambda x: _torch_forward(torch, fwd, x, g), xs, frames, fpf, ws)
        if mode == "window":
            return _Runner(name, label, lambda x: eng.lift(x, flip=flip), sets, frames, fpf, ws)
        return _Runner(name, label, lambda x: eng.lift_sequence(x, flip=flip), sets, frames, fpf, ws)
    model = models[name]
    xs = [torch.from_numpy(a).to(device=tdev, dtype=dtype) for a in sets]
    if mode == "stream":
        # the window model on the newest window of each slot
        gw = _Geom("window", g.rf, g.pad, g.shift, g.windowed, g.j_in, g.j_out, g.flip, g.perm_in, g.perm_out,
                   _cast_signs(g.extra, dtype))
        return _Runner(name, label, lambda x: _torch_forward(torch, model, x, gw), xs, frames,
                       float(eng.flops_per_frame("window")) * (2 if flip else 1), compiles=name == "compile")
    gd = _Geom(g.mode, g.rf, g.pad, g.shift, g.windowed, g.j_in, g.j_out, g.flip, g.perm_in, g.perm_out,
               _cast_signs(g.extra, dtype))
    return _Runner(name, label, lambda x: _torch_forward(torch, model, x, gd), xs, frames, fpf,
                   compiles=name == "compile")


def _cast_signs(extra: dict, dtype) -> dict:
    return {k: v.to(dtype) for k, v in extra.items()}


def _workspace_fn(eng, g: _Geom, mode: str, shape):
    """The native backend's own report: ``workspace_bytes(plan, n, t, mode)`` of one call."""
    fn = getattr(eng.backend, "workspace_bytes", None)
    if fn is None:
        return None

    def ws():
        n = shape[0] * (2 if g.flip else 1)
        if mode == "sequence" and not g.windowed:
            return fn("pos", n, shape[1] + g.rf - 1, "sequence")
        if mode == "sequence":
            return fn("pos", min(n * shape[1], SEQ_CHUNK), g.rf, "window")
        return fn("pos", n, g.rf, "window")
    return ws


def _prime(result, run: _Runner, eng, torch, models, g: _Geom, sets, shapes, mode, b, on_cuda, tdev, dtype):
    """One untimed call; the first time both gastrt and eager have run, compare their outputs."""
    y = run.call(run.inputs[0])
    if run.name == "tensorrt" and mode != "stream":
        result["agreement_tensorrt"] = _tensorrt_agreement(run, y, eng, torch, models, g, sets, shapes, mode, b,
                                                           tdev, dtype)
        return
    if mode == "stream" or result["agreement"] is not None:
        return
    if run.name == "gastrt" and "eager" in models:
        x = sets[shapes["torch"]][0]
        ref = _eager_reference(torch, models, g, x, tdev, dtype)
        got = y.float().cpu().numpy() if hasattr(y, "cpu") else np.asarray(y)
        ref = ref.float().cpu().numpy()
        if mode == "window":
            ref = ref[:, 0]
            got = got[:, 0] if got.ndim == 4 else got
        result["agreement"] = {"batch": int(b), "max_rel_err": _rel_err(got, ref)}


def _call_mode(mode: str, g: _Geom) -> str:
    """The engine form a device contender runs: RIE's sequences are one window per frame."""
    return "sequence" if mode == "sequence" and not g.windowed else "window"


def _eager_reference(torch, models, g: _Geom, x: np.ndarray, tdev, dtype):
    """The eager model's output on the NumPy input ``x`` (flip / padding as in the timed calls)."""
    return _torch_forward(torch, models["eager"], torch.from_numpy(x).to(device=tdev, dtype=dtype),
                          _Geom(g.mode, g.rf, g.pad, g.shift, g.windowed, g.j_in, g.j_out, g.flip, g.perm_in,
                                g.perm_out, _cast_signs(g.extra, dtype)))


def _tensorrt_agreement(run: _Runner, y, eng, torch, models, g: _Geom, sets, shapes, mode, b, tdev, dtype):
    """TensorRT's output on its first input vs eager's (or, without eager, gastrt's)."""
    x = sets[shapes["torch" if "eager" in models else "gastrt"]][0]
    if "eager" in models:
        ref = _eager_reference(torch, models, g, x, tdev, dtype)
        who = "eager"
    else:
        be = eng.backend
        call_mode = _call_mode(mode, g)
        ref = _torch_forward(torch, lambda t: be.run_device("pos", t, call_mode), torch.from_numpy(x).to(tdev), g)
        who = "gastrt"
    got, ref = y.float().cpu().numpy(), ref.float().cpu().numpy()
    if mode == "window":
        got, ref = got.reshape(got.shape[0], *got.shape[-2:]), ref.reshape(ref.shape[0], *ref.shape[-2:])
    return {"batch": int(b), "reference": who, "max_rel_err": _rel_err(got, ref)}


def _tensorrt_unavailable(on_cuda: bool) -> str | None:
    """Why TensorRT cannot be a contender here, or None."""
    if not on_cuda:
        return "TensorRT runs on a GPU (--device cuda)"
    from .backends.tensorrt_runner import require_cudart, require_tensorrt
    try:
        require_tensorrt()
        require_cudart()
        from .onnx_export import require_onnx
        require_onnx()
    except GastrtError as e:
        return str(e)
    return None


class _TensorRTContender:
    """TensorRT engines built on demand, one per batch size, each with its optimization profile
    fixed at exactly the shapes the bench feeds it (as a deployment at that batch would build)."""

    def __init__(self, engine_path: str, precision: str, device: int, mode: str, seq_len: int, rf: int,
                 windowed: bool, flip: bool):
        self.engine_path, self.precision, self.device = engine_path, precision, device
        self.mode, self.seq_len, self.rf, self.windowed = mode, seq_len, rf, windowed
        self.mult = 2 if flip else 1
        self.tmp = tempfile.TemporaryDirectory(prefix="gastrt-bench-trt-")
        self.current = None      # (batch, Engine)

    def build_args(self, b: int) -> dict:
        """build_tensorrt's profile arguments for batch ``b``."""
        n = b * self.mult
        if self.mode == "sequence" and not self.windowed:
            return dict(window=False, sequence=True, seq_max_batch=n, seq_opt_batch=n, max_frames=self.seq_len,
                        seq_opt_frames=self.seq_len)
        if self.mode == "sequence":   # RIE: chunks of windows, the last one shorter
            n = min(b * self.seq_len, max(1, SEQ_CHUNK // self.mult)) * self.mult
            return dict(sequence=False, min_batch=1, opt_batch=n, max_batch=n)
        return dict(sequence=False, min_batch=n, opt_batch=n, max_batch=n)

    def backend_for(self, b: int):
        """-> (TensorRTBackend for batch b, seconds its build took)."""
        from .backends.tensorrt_runner import load_tensorrt
        from .tensorrt_builder import build_tensorrt

        self.close_engine()
        path = os.path.join(self.tmp.name, f"b{b}.plan")
        t0 = time.perf_counter()
        build_tensorrt(self.engine_path, path, precision=self.precision, device=self.device, networks=["pos"],
                       **self.build_args(b))
        build_s = time.perf_counter() - t0
        eng = load_tensorrt(path, self.device)
        os.unlink(path)
        self.current = (b, eng)
        return eng.backend, build_s

    def close_engine(self) -> None:
        if self.current is not None:
            self.current[1].backend.close()
            self.current = None

    def close(self) -> None:
        self.close_engine()
        self.tmp.cleanup()


# ---------------------------------------------------------------------------------------------
# output: table, JSON, plot
# ---------------------------------------------------------------------------------------------

def _si(v: float, unit: str) -> str:
    for p, d in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= d:
            return f"{v / d:.3g} {p}{unit}"
    return f"{v:.3g} {unit}"


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _flops_col(v: float) -> str:
    for p, d in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= d:
            return f"{v / d:.3g} {p}"
    return f"{v:.3g}"


def format_table(result: dict) -> str:
    """The stdout table of a run_bench result."""
    c, m = result["config"], result["machine"]
    where = c["device"] if m["gpu"] is None else f"{c['device']} ({m['gpu'].get('name')})"
    cpu = m.get("cpu_model") or "CPU"
    head = [f"gastrt bench {c['target']}: {c['family']}, receptive field {c['receptive_field']}, "
            f"{c['num_joints']} joints{', causal' if c['causal'] else ''}, {c['precision']}",
            f"{c['mode']} mode" + (f" ({c['seq_len']} frames per sequence)" if c["seq_len"] else "")
            + (", flip" if c["flip"] else "") + f" on {where}, {cpu}, {c['threads']} thread"
            + ("s" if c["threads"] != 1 else "")]
    fpf = {r["contender"]: r["flops_per_frame"] for r in result["rows"]}
    if fpf:
        head.append("FLOPs per output frame: " + ", ".join(
            f"{_si(v, 'FLOP')} ({k})" for k, v in fpf.items()
            if k == "gastrt" or v != fpf.get("gastrt")))
    batch_word = {"window": "batch", "sequence": "seqs", "stream": "slots"}[c["mode"]]
    cols = [batch_word, "contender", "p50 ms", "p90 ms", "p99 ms", "frames/s", "FLOP/s", "peak MB", "vs eager"]
    body = []
    for r in result["rows"]:
        if r["status"] != "ok":
            body.append([str(r["batch"]), r["label"], f"{r['status']}: {r['error']}"])
            continue
        lat = r["latency_ms"]
        mem = "-" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:,.1f}"
        sp = "-" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}x"
        body.append([str(r["batch"]), r["label"], _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]),
                     f"{r['throughput_fps']:,.0f}", _flops_col(r["achieved_flops"]), mem, sp])
    widths = [len(h) for h in cols]
    for row in body:
        if len(row) == len(cols):
            widths = [max(w, len(x)) for w, x in zip(widths, row)]
    right = {0, 2, 3, 4, 5, 6, 7, 8}

    def fmt(row):
        if len(row) != len(cols):
            return f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}"
        return "  ".join(x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths)))

    lines = head + [""] + [fmt(cols)] + [fmt(r) for r in body]
    if result.get("agreement"):
        a = result["agreement"]
        lines.append("")
        lines.append(f"gastrt vs eager outputs (batch {a['batch']}): max relative error {a['max_rel_err']:.1e}")
    if result.get("agreement_tensorrt"):
        a = result["agreement_tensorrt"]
        lines.append(f"TensorRT vs {a['reference']} outputs (batch {a['batch']}): max relative error "
                     f"{a['max_rel_err']:.1e}")
    builds = [(r["batch"], r["build_s"]) for r in result["rows"] if r.get("build_s") is not None]
    if builds:
        lines.append("TensorRT engine builds (not timed above): "
                     + ", ".join(f"batch {b} {t:.1f} s" for b, t in builds))
    if result["notes"]:
        lines.append("")
        lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def _check_out_dir(path: str, flag: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise GastrtError(f"{flag} {path}: directory {d} does not exist")


def write_json(result: dict, path: str) -> None:
    import json
    from .engine_file import atomic_write

    data = (json.dumps(result, indent=2, sort_keys=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


_NO_MPL = "--plot needs matplotlib, which is not installed: pip install gastrt[render]"


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise GastrtError(_NO_MPL) from None
    return Figure, FigureCanvasAgg


def write_plot(result: dict, path: str) -> None:
    """Throughput (frames/s) vs batch size, log-log, one line per contender (Agg, no pyplot)."""
    Figure, FigureCanvasAgg = _matplotlib()
    c = result["config"]
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    series: dict[str, list] = {}
    for r in result["rows"]:
        if r["status"] == "ok":
            series.setdefault(r["label"], []).append((r["batch"], r["throughput_fps"]))
    for label, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    xs = sorted({r["batch"] for r in result["rows"]})
    if xs:
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off() if len(xs) > 1 else None
    ax.set_xlabel({"window": "batch (windows per call)", "sequence": f"sequences of {c['seq_len']} frames per call",
                   "stream": "stream slots (frames per push)"}[c["mode"]])
    ax.set_ylabel("throughput (output frames / s)")
    gpu = result["machine"]["gpu"]
    where = gpu["name"] if gpu and gpu.get("name") else (result["machine"].get("cpu_model") or c["device"])
    ax.set_title(f"{c['target']} — {c['mode']} mode, {c['precision']}, {where}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend()
    fig.tight_layout()
    ext = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    from .engine_file import atomic_write
    atomic_write(path, lambda f: fig.savefig(f, format=ext))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _cmd_bench(args: argparse.Namespace) -> int:
    if args.json:
        _check_out_dir(args.json, "--json")
    if args.plot:
        _check_out_dir(args.plot, "--plot")
        _matplotlib()  # fail before measuring, not after
    result = run_bench(args.target, device=args.device, batches=args.batch, mode=args.mode, seq_len=args.seq_len,
                       precision=args.precision, compare=args.compare, flip=args.flip, warmup=args.warmup,
                       repeat=args.repeat, max_time=args.max_time, threads=args.threads, backend=args.backend,
                       causal=args.causal, progress=None)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``bench`` on an argparse subparsers object (``func(args) -> int``)."""
    p = subparsers.add_parser(
        "bench", help="latency / throughput of an engine vs eager PyTorch and torch.compile",
        description="Measure latency (p50/p90/p99), throughput and achieved FLOP/s of a gastrt engine and, "
                    "in the same run, of the eager PyTorch reference model and torch.compile of it.",
        epilog=f"presets: {', '.join(PRESETS)}. Default batch sizes: "
               + "; ".join(f"{d} {m}: {','.join(map(str, v))}" for (d, m), v in DEFAULT_BATCHES.items()) + ".")
    p.add_argument("target", help="engine file, checkpoint, or a built-in preset (e.g. gast-27)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--batch", default=None, metavar="B1,B2,...",
                   help="batch sizes (windows, sequences or stream slots per call; default depends on device and mode)")
    p.add_argument("--mode", default="window", choices=MODES,
                   help="window: lift; sequence: lift_sequence; stream: Stream.push (default window)")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, metavar="N",
                   help=f"frames per sequence in sequence mode (default {DEFAULT_SEQ_LEN})")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="engine precision for presets / checkpoints (default fp32; an engine file's own)")
    p.add_argument("--compare", default=None, metavar="LIST",
                   help="contenders besides gastrt: eager, compile, tensorrt (GPU only), a comma-separated "
                        "subset, or none (default: eager,compile, plus tensorrt on a GPU where it is installed)")
    p.add_argument("--flip", action="store_true", help="flip test-time augmentation for every contender")
    p.add_argument("--warmup", type=float, default=DEFAULT_WARMUP, metavar="S",
                   help=f"warm-up seconds per cell after the first call (default {DEFAULT_WARMUP})")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="N",
                   help=f"timed calls per cell (default {DEFAULT_REPEAT})")
    p.add_argument("--max-time", type=float, default=DEFAULT_MAX_TIME, metavar="S",
                   help=f"stop timing a cell after S seconds, once {MIN_TIMED} calls are in (default {DEFAULT_MAX_TIME})")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for gastrt and torch alike (default: all available cores)")
    p.add_argument("--backend", choices=("auto", "native", "numpy"), default="auto",
                   help="gastrt CPU backend (default: native when built)")
    p.add_argument("--causal", action="store_true", help="TARGET is a checkpoint trained with causal convolutions")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON (schema: gastrt.bench docstring)")
    p.add_argument("--plot", metavar="OUT.png", help="throughput vs batch plot (needs matplotlib)")
    p.set_defaults(func=_cmd_bench)
