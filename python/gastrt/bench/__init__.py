"""`gastrt bench`: latency and throughput of a gastrt engine against the eager PyTorch reference
model, ``torch.compile`` of it and (on a GPU) TensorRT, measured in the same run, as a table,
JSON and a plot.

    gastrt bench gast-27                                   # built-in preset (random weights)
    gastrt bench model.gastrt --batch 1,64 --json r.json   # an engine file: gastrt alone
    gastrt bench ckpt.bin --mode sequence --plot r.png     # a checkpoint, built on the fly

    from gastrt.bench import run_bench, format_table
    result = run_bench("gast-27", batches=[1, 64])         # -> dict: the JSON document below
    print(format_table(result))

Modules: ``schema`` (the document below, machine info), ``presets`` (built-in presets, TARGET),
``measure`` (timing loop, timers, memory probes), ``contenders`` (gastrt / eager / compile /
TensorRT runners), ``run`` (``run_bench``), ``report`` (table, JSON, plot, RESULTS.md section),
``cli`` (``gastrt bench``).

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
torch contenders compute in fp32 (so does gastrt's CPU runtime: fp16 / bf16 engines stream the
weights of convs on its small-M kernel as 16-bit panels, widened exactly); on CUDA they run in the engine's precision. ``tensorrt`` (GPU only; by default
when TensorRT, cuda-python and onnx are installed): a TensorRT engine built per batch size from
the same gastrt engine (its ONNX export; optimization profile fixed at that batch, build time in
``build_s``), run on the same torch device tensors and stream (``TensorRTBackend.run_device``);
its output is checked against eager (or gastrt) in ``agreement_tensorrt``. ``ort`` and
``openvino`` (CPU only, ``--compare ort,openvino``; extras ``gastrt[onnx]`` / ``gastrt[openvino]``):
ONNX Runtime and OpenVINO running the ONNX graph ``gastrt export`` writes for the same engine
("gx"), as the backend of an Engine over the same plans (``gastrt.bench.onnx_peers``), so flip,
padding and chunking are gastrt's own; same thread count; their outputs are checked against
gastrt's in ``agreement_peers``, with the precision each computed in. Flip (``--flip``) is
the originals' test-time augmentation for every contender (a batch of [x, mirrored x],
un-mirror, average).

Modes and the batch axis. ``window``: batch = windows [B, RF, J, 2] -> B output frames per call.
``sequence``: batch = sequences (people) of ``--seq-len`` frames, edge padded inside the timed
call -> B * seq_len frames per call. ``stream``: batch = stream slots; one call = one
``push`` of one frame per slot -> B frames; eager / compile do what a live pipeline without
gastrt does, the window model on the B newest windows. On CUDA a push stays host to host (NumPy
frames in, poses out, one graph replay; the events bracket a synchronous call) while the torch
contenders get device tensors. Default batch sizes depend on the
device and mode (``DEFAULT_BATCHES``, about a minute in all on a 2-core CPU; ``full=True`` /
``--full``: ``FULL_BATCHES``, with torch.compile): a 4096-window batch of gast-27 is 1.5 TFLOP,
minutes on a laptop CPU.

Timing. Per batch size, each contender first runs alone: its first call is timed on its own
(``first_call_s``: torch.compile compiles there), then warm-up calls run for ``--warmup`` seconds
(untimed; its memory is measured over these), and its last warm-up call sizes its block (as many
back-to-back calls as fill ``config.block_s``). Then the contenders take turns in rounds, each
round one block of each (the first contender rotating), for at most ``--repeat`` rounds, stopping
once ``--max-time`` seconds have passed and at least ``min(repeat, 3)`` rounds are in: a busy
machine slows every contender alike, so the ratios hold. A round's time per call is its block's
time / block size. Inputs rotate among up to 8 pre-generated random input sets.
The loop is ``gastrt.bench.measure`` (whose ``interleaved`` the ``benchmarks/`` scripts time
with). CPU: ``time.perf_counter`` around each block. CUDA: ``torch.cuda.Event`` pairs on the
current stream, synchronised after each block (latency, not pipelined throughput). Latency
percentiles are NumPy's linear-interpolation percentiles of the rounds; throughput = frames per call /
median latency; achieved FLOP/s = analytic FLOPs per frame (``plan.flops_per_frame``, doubled
with flip; stream: ``Stream.flops_per_push``) * frames / median latency. The same analytic count
is used for the torch contenders (the work the model needs, not what torch happens to execute).
Speed-up = eager median / contender median, same batch, same run; ``speedup_spread`` = the
10th and 90th percentiles of the per-round ratios. Ctrl-C ends the run with the batches measured
so far (``interrupted`` true; the CLI prints and saves them and exits 130).

Memory (``peak_mem_bytes``). Host: the growth of the process's peak RSS during the cell over its
RSS at the start of the cell (peak reset through ``/proc/self/clear_refs``; source
``rss_hwm``), or, where the peak cannot be reset, the growth of ``getrusage`` maxrss (source
``maxrss_delta``, a lower bound). Inputs, weights and buffers kept from earlier cells are not
counted; for torch.compile the cell starts after its first call (compilation is not the model's
memory). CUDA: ``torch.cuda.max_memory_allocated`` growth (``cuda_max_allocated``), plus the
engine's arena for gastrt (``arena+cuda_max_allocated``). ``workspace_bytes``: what the engine
itself reports on the CPU (its backend's ``workspace_bytes``, a stream's ``ring_bytes``), else null.

The CUDA path (events, device arrays, max-autotune, cuda memory) has not been run on a GPU yet.
``run_bench`` calls ``torch._dynamo.reset()`` at its end when it compiled anything.

JSON document (``--json``; ``run_bench``'s return value). Every key below is always present
(null where it does not apply); the type column is what ``tests/test_bench.py`` checks.

[top]
schema            str              always "gastrt-bench"
schema_version    int              4 (2 added agreement_tensorrt and the rows' build_s, 4 agreement_peers)
created           str              ISO 8601 UTC time the run started
machine           object           [machine]
config            object           [config]
agreement         object|null      [agreement]: gastrt vs eager outputs on one input, or null
agreement_tensorrt object|null     [agreement_tensorrt]: TensorRT vs eager (or gastrt), or null
agreement_peers   object           contender ("ort", "openvino") -> [agreement_peers]; {} without them
notes             list             strings: why a comparison is missing, load warnings, ...
rows              list             [row], one per contender per batch size, in run order
interrupted       bool             true when Ctrl-C ended the run (rows: the batches finished before)

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
precision_choice  str|null         how ``gastrt build --precision auto`` chose it (the engine's metadata), else null
arithmetic        str              what gastrt computes in (backends.arithmetic: "fp32", "bf16 dot products (amx)", ...)
torch_dtype       str|null         dtype of the torch contenders; null without them
compare           list             contenders asked for besides gastrt: "eager", "compile", "tensorrt", "ort", "openvino"
flip              bool             flip test-time augmentation
warmup_s          float            warm-up seconds per cell
repeat            int              interleaved rounds per batch (at most)
max_time_s        float            seconds of rounds per batch after which timing stops (3 rounds at least)
threads           int              CPU threads for every contender
input_sets        int              pre-generated input sets rotated per cell (at most)
interleaved       bool             true: contenders timed in turns, round by round
block_s           float            seconds one contender's block aims at

[agreement]
batch             int              batch size of the check
max_rel_err       float            max |gastrt - eager| / max |eager|

[agreement_tensorrt]
batch             int              batch size of the check
reference         str              "eager" (when it runs) or "gastrt"
max_rel_err       float            max |TensorRT - reference| / max |reference|

[agreement_peers]
batch             int              batch size of the check
reference         str              "gastrt"
max_rel_err       float            max |peer - gastrt| / max |gastrt|, same input
precision         str|null         what the peer computed in: "fp32", or OpenVINO's "bf16" / "fp16" where the CPU has the units

[row]
contender         str              "gastrt", "eager", "compile", "tensorrt", "ort" or "openvino"
label             str              table label, e.g. "gastrt (native)", "torch.compile"
batch             int              batch size
status            str              "ok", "failed" (error says why) or "skipped"
error             str|null         why the row has no numbers
frames_per_call   int              output frames one call produces
flops_per_frame   float            analytic FLOPs per output frame this contender needs
n                 int|null         timed rounds
block             int|null         calls per round (one timed block)
first_call_s      float|null       seconds of the first call (compilation included)
build_s           float|null       seconds building this row's TensorRT engine; null for the others
latency_ms        object|null      [latency_ms]
throughput_fps    float|null       output frames per second at the median latency
achieved_flops    float|null       FLOP/s at the median latency
peak_mem_bytes    int|null         see Memory above
peak_mem_source   str|null         "rss_hwm", "maxrss_delta", "cuda_max_allocated", "arena+cuda_max_allocated"
workspace_bytes   int|null         engine-reported workspace (gastrt rows only)
speedup_vs_eager  float|null       eager median / this median (same batch); null without eager
speedup_spread    list|null        [p10, p90] of the per-round eager / this ratios

[latency_ms]
p50               float            median call latency, milliseconds (of the rounds)
p10               float            10th percentile
p90               float            90th percentile
p99               float            99th percentile
mean              float            mean
min               float            fastest call
max               float            slowest call
"""
from __future__ import annotations

from .cli import add_parsers
from .presets import BASE_PRESETS, PRESETS, preset_cache_dir, preset_engine
from .report import format_table, write_json, write_plot
from .run import DEFAULT_BATCHES, parse_batches, run_bench
from .schema import SCHEMA, SCHEMA_VERSION

# public names of gastrt.bench before it became a package, kept importable from here
from .contenders import SEQ_CHUNK  # noqa: F401
from .measure import MIN_TIMED  # noqa: F401
from .run import (DEFAULT_MAX_TIME, DEFAULT_REPEAT, DEFAULT_SEQ_LEN, DEFAULT_WARMUP, INPUT_SET_BYTES,  # noqa: F401
                  MAX_INPUT_SETS)
from .schema import CONTENDERS, MODES, PRECISIONS, TORCH_CONTENDERS, machine_info  # noqa: F401

__all__ = ["run_bench", "format_table", "write_json", "write_plot", "add_parsers", "PRESETS",
           "BASE_PRESETS", "SCHEMA", "SCHEMA_VERSION", "DEFAULT_BATCHES", "parse_batches",
           "preset_engine", "preset_cache_dir"]
