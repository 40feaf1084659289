"""How bench times and sizes one piece of work: the timed round loop, timers (CPU clock, CUDA
events), memory probes and the progress bar. ``gastrt bench`` measures its cells with
:func:`warm_up_cell` / :func:`time_cells`; the scripts under ``benchmarks/`` time their callables with
:func:`interleaved` (the same round loop, several callables taking turns).

    from gastrt.bench.measure import interleaved
    t = interleaved({"torch": run_torch, "native": run_native}, budget=8.0)
    t["native"].median, t["native"].spread       # seconds per call, relative p10-p90 range
"""
from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MIN_TIMED = 3          # timed calls per cell at least (when --repeat allows)
MAX_BLOCK = 200        # calls per block at most (interleaved)


# ---- timers: start() ... stop() -> seconds -------------------------------------------------------

class CpuTimer:
    """``time.perf_counter`` around the calls."""

    def sync(self) -> None:
        pass

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        return time.perf_counter() - self._t0


class CudaTimer:
    """CUDA events on ``dev``'s current stream around the calls, synchronised at ``stop``
    (latency, not pipelined throughput; unverified: no GPU was available when this was
    written). The events are recorded on that device's stream explicitly: with cuda:N, N > 0,
    a bare ``record()`` would go to device 0's stream and time only the host's launches."""

    def __init__(self, torch, dev):
        self.torch, self.dev = torch, dev
        with torch.cuda.device(dev):
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.dev)

    def start(self) -> None:
        self._stream = self.torch.cuda.current_stream(self.dev)
        self._start.record(self._stream)

    def stop(self) -> float:
        self._end.record(self._stream)
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3


# ---- the round loop --------------------------------------------------------------------------------

class ContenderError(Exception):
    """A callable failed inside the rounds: ``name`` says which, ``error`` is what it raised."""

    def __init__(self, name: str, error: BaseException):
        super().__init__(f"{name}: {error}")
        self.name, self.error = name, error


def settle(max_s: float = 1.0, window_s: float = 0.005, busy: float = 0.2) -> float:
    """Wait (untimed) until this process's threads stop using the CPU: at most ``busy`` of one
    core over a ``window_s`` window, or ``max_s`` seconds. -> seconds waited.

    A contender's worker threads may keep a core busy after its call returns: ONNX Runtime's
    intra-op pool spins for tens of milliseconds (measured: 20 ms of CPU in a 20 ms gap, ~50 ms
    in a 100 ms one, on 2 cores), OpenMP / TBB pools spin for their block time. On a 2-core
    machine the next contender's block then ran on one core for its first calls (VideoPose3D-243
    at batch 1: 12.2 ms right after an ORT call, 6.8 ms after a pause), so the order of the
    turns, not the runtimes, set the ratio. Each block now starts once the process is quiet."""
    t0 = time.perf_counter()
    while True:
        c0 = time.process_time()
        time.sleep(window_s)
        if time.process_time() - c0 <= busy * window_s or time.perf_counter() - t0 >= max_s:
            return time.perf_counter() - t0


def time_rounds(fns: dict[str, Callable[[], Any]], timer, *, max_rounds: int, min_rounds: int,
                budget: float, blocks: dict[str, int] | None = None,
                on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Rounds in which every callable in turn runs a block of back-to-back calls (``blocks``,
    default 1), timed as one, each block after the previous one's threads went quiet
    (:func:`settle`); stops after ``max_rounds``, or once ``budget`` seconds have passed and
    ``min_rounds`` are in. -> name -> seconds per call, one entry per round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    start = time.perf_counter()
    for r in range(max_rounds):
        # each round starts with the next callable: none always runs right after the same one
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            n = blocks[name] if blocks else 1
            if len(fns) > 1:
                settle()
            timer.start()
            try:
                for _ in range(n):
                    fn()
            except Exception as e:  # which contender broke: the others can go on without it
                raise ContenderError(name, e) from e
            times[name].append(timer.stop() / n)
        if on_round is not None:
            on_round(r)
        if r + 1 >= min_rounds and time.perf_counter() - start > budget:
            break
    return times


@dataclass
class Timing:
    """One callable's rounds: ``times`` [rounds] seconds per call, ``block`` calls per round."""
    times: list[float]
    block: int = 1

    @property
    def rounds(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.times, q))

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how far the rounds disagree (noise)."""
        return (self.percentile(90) - self.percentile(10)) / self.median

    @property
    def ms(self) -> list[float]:
        return [t * 1e3 for t in self.times]


def interleaved(fns: dict[str, Callable[[], Any]], *, budget: float = 0.0, min_rounds: int = 3,
                max_rounds: int = 30, warmup: int = 2, block_s: float | None = 0.2,
                timer=None) -> dict[str, Timing]:
    """Time zero-argument callables that take turns, so a noisy machine slows all alike.

    Each callable first runs ``warmup`` (>= 1) untimed calls; the last of them, timed, sizes its
    block: as many back-to-back calls as fill ``block_s`` seconds (1 to MAX_BLOCK; ``block_s``
    None: 1 call, each timed on its own). A block measures a runtime warm (its weights in cache,
    as when lifting a stream of windows). Then rounds as :func:`time_rounds`. ``timer``:
    :class:`CpuTimer` (default) or :class:`CudaTimer`. -> name -> :class:`Timing`."""
    timer = CpuTimer() if timer is None else timer
    blocks = {}
    for name, fn in fns.items():
        for _ in range(max(1, warmup) - 1):
            fn()
        settle()
        timer.start()
        fn()
        t = timer.stop()
        blocks[name] = 1 if block_s is None else max(1, min(MAX_BLOCK, int(block_s / max(t, 1e-6))))
    times = time_rounds(fns, timer, max_rounds=max_rounds, min_rounds=min_rounds, budget=budget, blocks=blocks)
    return {k: Timing(v, blocks[k]) for k, v in times.items()}


# ---- one bench cell ----------------------------------------------------------------------------------

@dataclass
class Runner:
    """One contender at one batch size: ``call(x)`` runs one timed unit of work on one of
    ``inputs`` (rotated)."""
    name: str
    label: str
    call: Callable[[Any], Any]
    inputs: list
    frames_per_call: int
    flops_per_frame: float
    workspace: Callable[[], int | None] | None = None      # the row's workspace_bytes
    compiles: bool = False                                 # compiles in its first call
    device_bytes: Callable[[], int | None] | None = None   # device memory the contender holds itself
    build_s: float | None = None                           # seconds building its engine (TensorRT)


def latency_ms(times: list[float]) -> dict:
    """Seconds per call -> the row's [latency_ms] (NumPy's linear-interpolation percentiles)."""
    ms = np.asarray(times, dtype=np.float64) * 1e3
    p10, p50, p90, p99 = (float(v) for v in np.percentile(ms, [10, 50, 90, 99]))
    return {"p50": p50, "p10": p10, "p90": p90, "p99": p99, "mean": float(ms.mean()), "min": float(ms.min()),
            "max": float(ms.max())}


@dataclass
class Warm:
    """A cell after its warm-up: the first call's seconds, the peak memory of first call +
    warm-up, and the calls per timed block."""
    first_call_s: float
    peak: int | None
    peak_source: str
    block: int


def warm_up_cell(run: Runner, *, warmup: float, block_s: float, timer, mem, progress: "Progress",
                 what: str) -> Warm:
    """First call (timed alone), then ``warmup`` seconds of untimed calls, on this contender alone:
    the memory it needs is measured here, not while the others take turns. The last warm-up
    call sizes the block (calls filling ``block_s`` seconds, 1 to MAX_BLOCK)."""
    inputs = itertools.cycle(run.inputs)
    settle()
    if not run.compiles:
        mem.start()
    t0 = time.perf_counter()
    run.call(next(inputs))
    timer.sync()
    first = time.perf_counter() - t0
    if run.compiles:  # torch.compile compiles in its first call: not the model's memory
        mem.start()
    end = time.perf_counter() + warmup
    last = first
    while True:
        timer.start()
        run.call(next(inputs))
        last = timer.stop()
        progress.show(f"{what} warm-up")
        if time.perf_counter() >= end:
            break
    peak, source = mem.stop()
    block = max(1, min(MAX_BLOCK, int(block_s / max(last, 1e-6))))
    return Warm(first, peak, source, block)


def time_cells(runs: dict[str, Runner], warm: dict[str, Warm], *, timer, max_rounds: int, min_rounds: int,
               budget: float, progress: "Progress", what: str) -> dict[str, list[float]]:
    """Every contender in turn, one block per round (:func:`time_rounds`): a busy machine slows
    them alike, so their ratio holds. -> name -> seconds per call, one entry per round."""
    fns = {}
    for name, run in runs.items():
        inputs = itertools.cycle(run.inputs)
        fns[name] = (lambda r, it: lambda: r.call(next(it)))(run, inputs)
    return time_rounds(fns, timer, max_rounds=max_rounds, min_rounds=min_rounds, budget=budget,
                       blocks={k: w.block for k, w in warm.items()},
                       on_round=lambda r: progress.show(f"{what} round {r + 1}/{max_rounds}"))


def cell_fields(run: Runner, w: Warm, times: list[float]) -> dict:
    """The numeric fields of a row from its warm-up and its rounds."""
    lat = latency_ms(times)
    fps = run.frames_per_call / (lat["p50"] / 1e3)
    ws = None
    if run.workspace is not None:
        try:
            ws = run.workspace()
        except Exception:  # a size report must not cost the row its timings
            ws = None
    return {
        "n": len(times), "block": w.block, "first_call_s": w.first_call_s, "latency_ms": lat,
        "throughput_fps": fps, "achieved_flops": fps * run.flops_per_frame,
        "peak_mem_bytes": None if w.peak is None else int(w.peak), "peak_mem_source": w.peak_source,
        "workspace_bytes": None if ws is None else int(ws),
    }


# ---- memory probes: start() ... stop() -> (bytes or None, source) -----------------------------------

def proc_status_bytes(key: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class HostMemProbe:
    """Peak host RSS growth over one cell: VmHWM after resetting it through
    /proc/self/clear_refs ("rss_hwm"); getrusage maxrss growth where that is not possible
    ("maxrss_delta", a lower bound)."""

    def __init__(self):
        self.source = "maxrss_delta"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if proc_status_bytes("VmHWM") is not None:
                self.source = "rss_hwm"
        except OSError:
            pass
        self.base = 0


    @staticmethod
    def _maxrss() -> int:
        import resource  # POSIX only: a Windows run reports no memory
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
                self.base = proc_status_bytes("VmRSS") or 0
                return
        try:
            self.base = self._maxrss()
        except Exception:
            self.base = 0

    def stop(self) -> tuple[int | None, str]:
        if self.source == "rss_hwm":
            hwm = proc_status_bytes("VmHWM")
            return (None if hwm is None else max(0, hwm - self.base)), self.source
        try:
            return max(0, self._maxrss() - self.base), self.source
        except Exception:
            return None, self.source


class CudaMemProbe:
    """``torch.cuda.max_memory_allocated`` growth over one cell, plus ``extra()`` bytes the
    contender holds outside torch's allocator (gastrt's arena, a TensorRT engine)."""

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
            held = self.extra()
        except Exception:  # the GPU paths have not all run yet: keep the row
            held = None
        if held is None:
            return int(peak), "cuda_max_allocated"
        return int(peak + held), "arena+cuda_max_allocated"


# ---- progress ----------------------------------------------------------------------------------------

class Progress:
    """Progress on stderr: a one-line bar on a TTY; elsewhere (a log, CI) one line per finished
    cell (:meth:`note`). ``enabled`` False: silent; None: the bar only on a TTY, lines otherwise."""

    def __init__(self, total: int, stream=None, enabled: bool | None = None, width: int = 24):
        self.stream = sys.stderr if stream is None else stream
        self.lines = False
        if enabled is None:
            try:
                enabled = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                enabled = False
            self.lines = not enabled
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

    def note(self, text: str) -> None:
        """A finished cell: its own line (above the bar on a TTY; alone in a log)."""
        if self.lines:
            self.stream.write(f"bench: {text}\n")
            self.stream.flush()
        elif self.enabled:
            self.close()
            self.stream.write(f"bench: {text}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._len:
            self.stream.write("\r" + " " * self._len + "\r")
            self.stream.flush()
            self._len = 0
