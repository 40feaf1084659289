"""A bench result as a table (stdout), JSON (``--json``) and a throughput plot (``--plot``);
run documents as a section of ``benchmarks/RESULTS.md`` (``benchmarks/run_all.py``)."""
from __future__ import annotations

import json
import os
import time

from ..engine_file import atomic_write, check_output_path
from ..errors import GastrtError


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
    if c.get("precision_choice"):   # an engine built with --precision auto: how it chose
        head.append(f"precision {c['precision']}, {c['precision_choice']}")
    if c.get("arithmetic") and c["arithmetic"] != c["precision"]:
        head.append(f"gastrt computes in {c['arithmetic']}")
    fpf = {r["contender"]: r["flops_per_frame"] for r in result["rows"]}
    if fpf:
        head.append("FLOPs per output frame: " + ", ".join(
            f"{_si(v, 'FLOP')} ({k})" for k, v in fpf.items()
            if k == "gastrt" or v != fpf.get("gastrt")))
    batch_word = {"window": "batch", "sequence": "seqs", "stream": "slots"}[c["mode"]]
    cols = [batch_word, "contender", "p50 ms", "spread", "p90 ms", "frames/s", "FLOP/s", "peak MB", "vs eager",
            "(p10-p90)"]
    body = []
    for r in result["rows"]:
        if r["status"] != "ok":
            body.append([str(r["batch"]), r["label"], f"{r['status']}: {r['error']}"])
            continue
        lat = r["latency_ms"]
        mem = "-" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:,.1f}"
        sp = "-" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}x"
        spr = r.get("speedup_spread")
        sp_range = "" if not spr or r["contender"] == "eager" else f"{spr[0]:.2f}-{spr[1]:.2f}x"
        p10 = lat.get("p10", lat["min"])
        spread = f"±{50 * (lat['p90'] - p10) / lat['p50']:.0f}%" if lat["p50"] > 0 else "-"
        body.append([str(r["batch"]), r["label"], _ms(lat["p50"]), spread, _ms(lat["p90"]),
                     f"{r['throughput_fps']:,.0f}", _flops_col(r["achieved_flops"]), mem, sp, sp_range])
    widths = [len(h) for h in cols]
    for row in body:
        if len(row) == len(cols):
            widths = [max(w, len(x)) for w, x in zip(widths, row)]
    right = {0, 2, 3, 4, 5, 6, 7, 8, 9}

    def fmt(row):
        if len(row) != len(cols):
            return f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}"
        return "  ".join(x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths)))

    lines = head + [""] + [fmt(cols)] + [fmt(r) for r in body]
    if c.get("interleaved"):
        lines.append("")
        rounds = max([r.get("n") or 0 for r in result["rows"]] + [0])
        lines.append(f"contenders timed in interleaved rounds (up to {rounds} per batch): spread = half the "
                     "p10-p90 range of the rounds around p50; vs eager = ratio of medians, (p10-p90) = range of "
                     "the per-round ratios")
    if result.get("interrupted"):
        lines.append("interrupted (Ctrl-C): the table holds the batches measured before it")
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


def check_out_dir(path: str, flag: str, inputs=()) -> None:
    """Fail before measuring when ``path`` cannot take the output (``flag``: the option): its
    directory does not exist, or it is an input, a directory or a device (check_output_path)."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise GastrtError(f"{flag} {path}: directory {d} does not exist")
    check_output_path(path, [i for i in inputs if os.path.exists(i)])


def write_json(result: dict, path: str) -> None:
    """The result as indented JSON, written atomically."""
    data = (json.dumps(result, indent=2, sort_keys=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


_NO_MPL = "--plot needs matplotlib, which is not installed: pip install 'gastrt[render]'"


def require_matplotlib():
    """-> (Figure, FigureCanvasAgg); GastrtError when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise GastrtError(_NO_MPL) from None
    return Figure, FigureCanvasAgg


def write_plot(result: dict, path: str) -> None:
    """Throughput (frames/s) vs batch size, log-log, one line per contender (Agg, no pyplot)."""
    fig = plot_figure(result)
    ext = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=ext))


def plot_figure(result: dict):
    """The --plot figure (a matplotlib Figure on the Agg canvas)."""
    Figure, FigureCanvasAgg = require_matplotlib()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
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
        if len(xs) > 1:
            ax.xaxis.set_minor_locator(NullLocator())
    ys = [p[1] for pts in series.values() for p in pts if p[1] > 0]
    if ys and max(ys) / min(ys) < 100:
        # within a decade or two a log axis may hold no labelled power of ten: label 1-2-5 steps
        narrow = max(ys) / min(ys) < 2.5
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10)) if narrow else (1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        lo, hi = min(ys), max(ys)
        if narrow:  # room for two labelled steps at least
            ax.set_ylim(lo / 1.3, hi * 1.3)
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
    return fig


# ---- RESULTS.md ----------------------------------------------------------------------------------

RESULTS_HEADER = """# gastrt benchmark results

Appended by `benchmarks/run_all.py`, one section per run (newest last): every built-in preset
(seeded random weights in the original checkpoint layout) measured by `gastrt bench` on the
machine named in the section, gastrt against eager PyTorch and `torch.compile` in the same run,
same thread count. One call lifts `batch` windows (window mode) or `batch` sequences of 1000
frames (sequence mode); the ms columns are the median (p50) latency of the timed calls, frames/s
is output frames per second at that median, GFLOP/s uses the analytic FLOPs of
benchmarks/METHOD.md.
`x eager` / `x compile`: gastrt's speed-up over them (>1: gastrt faster). A machine that was
busy while it ran is flagged in its section: treat those numbers as rough.
"""


def _find(rows, name, b):
    for r in rows:
        if r["contender"] == name and r["batch"] == b:
            return r
    return None


def _cell(r, what: str) -> str:
    if r is None:
        return "—"
    if r["status"] != "ok":
        return "failed" if r["status"] == "failed" else "skipped"
    if what == "p50":
        v = r["latency_ms"]["p50"]
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    if what == "fps":
        return f"{r['throughput_fps']:,.0f}" if r["throughput_fps"] >= 10 else f"{r['throughput_fps']:.2g}"
    if what == "gflops":
        return f"{r['achieved_flops'] / 1e9:.1f}"
    raise ValueError(what)


def _ratio(a, b) -> str:
    if a is None or b is None or a["status"] != "ok" or b["status"] != "ok":
        return "—"
    return f"{b['latency_ms']['p50'] / a['latency_ms']['p50']:.2f}"


def results_section(docs: list[dict], argv: list[str], started: float, crashes: list[str] = (), *,
                    commit: str | None = None, dirty: bool | None = None, native: str | None = None) -> str:
    """One RESULTS.md section: run_bench documents of one machine as a markdown table, one row per
    preset, mode and batch size, with the run's provenance (``commit``, ``dirty``, ``native``:
    digest of the native module) and notes (``crashes``: cases without numbers)."""
    first = docs[0]
    m, c = first["machine"], first["config"]
    when = first["created"].replace("T", " ").replace("+00:00", " UTC")
    if m["gpu"]:
        dev = f"{c['device']} {m['gpu'].get('name')} (driver {m['gpu'].get('driver')}, CUDA {m['gpu'].get('cuda')})"
    else:
        dev = f"cpu {m['cpu_model']} ({m['cpu_affinity'] or m['cpu_cores']} cores)"
    commit = commit or m["gastrt_commit"]
    dirty = m["gastrt_dirty"] if dirty is None else dirty
    commit = commit[:10] if commit else "not a checkout"
    if dirty:
        commit += " + uncommitted changes"
    if native:
        commit += f" (native module sha256 {native}…)"
    backends = sorted({d["config"]["backend"] for d in docs})
    lines = [f"## {when} — {dev}", "",
             f"- gastrt {m['gastrt_version']} @ {commit}; backend {', '.join(backends)}"
             + (f" (BLAS: {m['blas']})" if m["blas"] else "")
             + f"; torch {m['torch_version']}; numpy {m['numpy_version']}; Python {m['python']}",
             f"- threads {c['threads']} for every contender; warm-up {c['warmup_s']} s, up to {c['repeat']} timed "
             f"calls or {c['max_time_s']} s per cell; precision {c['precision']}; flip {'on' if c['flip'] else 'off'}",
             f"- load average at start {m['loadavg']}; whole run {(time.time() - started) / 60:.1f} min",
             f"- command: `python benchmarks/run_all.py {' '.join(argv)}`".rstrip(), ""]
    has_trt = any(r["contender"] == "tensorrt" for d in docs for r in d["rows"])
    hdr = ("| preset | mode | batch | gastrt ms | gastrt frames/s | gastrt GFLOP/s | eager ms | eager frames/s "
           "| compile ms | compile frames/s | x eager | x compile |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if has_trt:   # `x TensorRT` > 1: gastrt faster than TensorRT
        hdr += " TensorRT ms | TensorRT frames/s | x TensorRT |"
        rule += "---:|---:|---:|"
    lines += [hdr, rule]
    notes: list[str] = list(crashes)
    for d in docs:
        c = d["config"]
        rows = d["rows"]
        mode = c["mode"] + (f" ({c['seq_len']} fr)" if c["seq_len"] else "")
        for b in c["batches"]:
            g, e, k = _find(rows, "gastrt", b), _find(rows, "eager", b), _find(rows, "compile", b)
            t = _find(rows, "tensorrt", b)
            line = (f"| {c['target']} | {mode} | {b} | {_cell(g, 'p50')} | {_cell(g, 'fps')} | "
                    f"{_cell(g, 'gflops')} | {_cell(e, 'p50')} | {_cell(e, 'fps')} | {_cell(k, 'p50')} | "
                    f"{_cell(k, 'fps')} | {_ratio(g, e)} | {_ratio(g, k)} |")
            if has_trt:
                line += f" {_cell(t, 'p50')} | {_cell(t, 'fps')} | {_ratio(g, t)} |"
            lines.append(line)
            for r in (e, k, t):
                if r is not None and r["status"] != "ok" and r["error"]:
                    notes.append(f"{c['target']} {c['mode']} batch {b} {r['label']}: {r['error']}")
        if d.get("agreement"):
            a = d["agreement"]
            if a["max_rel_err"] > 1e-4:
                notes.append(f"{c['target']} {c['mode']}: gastrt vs eager max relative error {a['max_rel_err']:.1e}")
        if d.get("agreement_tensorrt"):
            a = d["agreement_tensorrt"]
            notes.append(f"{c['target']} {c['mode']}: TensorRT vs {a['reference']} max relative error "
                         f"{a['max_rel_err']:.1e}")
        for n in d["notes"]:
            if not n.startswith("the machine was busy"):
                notes.append(n)
    busy = [d["machine"]["loadavg"][0] for d in docs if d["machine"]["loadavg"]]
    aff = m["cpu_affinity"] or m["cpu_cores"]
    if busy and max(busy) > 0.5 * aff:
        notes.insert(0, f"the machine was busy during this run (1-minute load average up to {max(busy)} on "
                        f"{aff} cores, other work included): timings are noisy, compare within a row only")
    seen = set()
    uniq = [n for n in notes if not (n in seen or seen.add(n))]
    if uniq:
        lines.append("")
        lines += [f"- note: {n}" for n in uniq]
    lines.append("")
    return "\n".join(lines)


def append_results(text: str, path: str) -> None:
    """Append a section to a RESULTS.md, writing RESULTS_HEADER first into a new file."""
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write(RESULTS_HEADER)
        f.write("\n" + text)
