"""``gastrt build CKPT --backend tensorrt -o model.plan``: checkpoint -> gastrt engine (temp) ->
ONNX (from the plan, :mod:`gastrt.onnx_export`) -> TensorRT engines -> one ``.plan`` container
with gastrt's metadata (format: :mod:`gastrt.backends.tensorrt_runner`).

TensorRT API used (Python, TensorRT 8.6 / 10 / 11): ``trt.Builder``, ``create_network`` (flags:
EXPLICIT_BATCH before 10, STRONGLY_TYPED on 10 where the ONNX graph's explicit types carry the
precision, nothing on 11 where every network is strongly typed), ``trt.OnnxParser``,
``create_builder_config`` (TF32 cleared for fp32 so fp32 means fp32), one optimization profile per
engine, ``build_serialized_network``. On TensorRT 8.6 (weakly typed) fp16 is the fp32 graph with
BuilderFlag.FP16; bf16 needs TensorRT >= 10.

Engines built: for every network of the engine (``pos``, and VideoPose3D's ``traj``) the window
form (profile over the batch: --min-batch / --opt-batch / --max-batch) and, except RIE, the
sequence form (profile over people 1..``seq_max_batch`` and frames RF..RF-1+``max_frames``; longer
inputs run in exact overlapping chunks).

No custom plugin: a fused graph-attention IPluginV3 is deferred until a GPU measurement shows it
beats TensorRT's own kernels on the exported graph.
"""
from __future__ import annotations

import os
import tempfile

from .argtypes import parse_device
from .backends.tensorrt_runner import (INPUT_NAME, TENSORRT_MISSING, device_properties, require_cudart,  # noqa: F401
                                       require_tensorrt, write_plan)
from .builder import build
from .engine_file import check_precision, read_engine, read_model
from .errors import EngineFileError, GastrtError
from .onnx_export import build_model, check_model, require_onnx
DEFAULT_MAX_FRAMES = 8192
DEFAULT_SEQ_MAX_BATCH = 16
ONNX_OPSET = 17


def _trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


def _network_flags(trt) -> tuple[int, bool]:
    """-> (create_network flags, strongly typed?)."""
    major = _trt_major(trt)
    F = trt.NetworkDefinitionCreationFlag
    if major >= 11:
        return 0, True                         # strongly typed always; the flag is deprecated
    if hasattr(F, "STRONGLY_TYPED"):
        return 1 << int(F.STRONGLY_TYPED), True  # TRT 10 (EXPLICIT_BATCH is ignored there)
    return 1 << int(F.EXPLICIT_BATCH), False     # TRT 8.6: explicit batch, weakly typed


def _check_profile(min_batch, opt_batch, max_batch):
    for name, v in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise GastrtError(f"{name} must be a positive integer, got {v!r}")
    if not min_batch <= opt_batch <= max_batch:
        raise GastrtError(f"batch profile must satisfy min <= opt <= max, got {min_batch} / {opt_batch} / {max_batch}")


def _build_one(trt, logger, onnx_bytes: bytes, profile: tuple, precision: str, strongly_typed: bool,
               flags: int, workspace: int | None, what: str) -> bytes:
    try:   # the bindings raise (TypeError) when TensorRT returns no builder
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as e:
        raise GastrtError(f"TensorRT could not create a builder (is a CUDA GPU visible?): {e}") from None
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown error"
        raise GastrtError(f"TensorRT's ONNX parser rejected the {what} graph: {errs}")
    config = builder.create_builder_config()
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32 is not None:
        try:
            config.clear_flag(tf32)             # TF32 is on by default: fp32 must mean fp32
        except Exception:  # pragma: no cover - a TensorRT without the flag's semantics
            pass
    if not strongly_typed and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    prof.set_shape(INPUT_NAME, *profile)
    config.add_optimization_profile(prof)
    ser = builder.build_serialized_network(network, config)
    if ser is None:
        raise GastrtError(f"TensorRT failed to build the {what} engine (see the TensorRT log above)")
    return bytes(ser)


def build_tensorrt(source, output, *, causal: bool = False, precision: str = "fp32", min_batch: int = 1,
                   opt_batch: int = 64, max_batch: int = 4096, sequence: bool = True,
                   max_frames: int = DEFAULT_MAX_FRAMES, seq_max_batch: int = DEFAULT_SEQ_MAX_BATCH,
                   device: int = 0, workspace: int | None = None, verbose: bool = False,
                   window: bool = True, networks=None, seq_opt_batch: int = 1,
                   seq_opt_frames: int | None = None) -> dict:
    """Checkpoint (or an existing .gastrt engine) -> TensorRT ``.plan`` container at ``output``.
    Returns a summary: path, engines (key -> profile), tensorrt_version, device, precision.

    Window engines: batch profile ``min_batch`` / ``opt_batch`` / ``max_batch``. Sequence engines:
    people 1 / ``seq_opt_batch`` / ``seq_max_batch``, output frames 1 / ``seq_opt_frames``
    (default min(max_frames, 1024)) / ``max_frames``. ``window=False`` / ``sequence=False`` skip
    a form, ``networks`` (e.g. ``["pos"]``) limits the networks built (``gastrt bench`` builds
    exactly what it times)."""
    trt = require_tensorrt()                     # first: the one-line error when TensorRT is absent
    require_onnx()
    check_precision(precision)
    _check_profile(min_batch, opt_batch, max_batch)
    if not isinstance(max_frames, int) or max_frames < 1 or not isinstance(seq_max_batch, int) or seq_max_batch < 1:
        raise GastrtError("max_frames and seq_max_batch must be positive integers")
    opt_frames = min(max_frames, 1024) if seq_opt_frames is None else seq_opt_frames
    if not (isinstance(seq_opt_batch, int) and 1 <= seq_opt_batch <= seq_max_batch
            and isinstance(opt_frames, int) and 1 <= opt_frames <= max_frames):
        raise GastrtError(f"sequence profile must satisfy 1 <= opt <= max: people {seq_opt_batch} / "
                          f"{seq_max_batch}, frames {opt_frames} / {max_frames}")
    if not window and not sequence:
        raise GastrtError("nothing to build: both the window and the sequence form are off")
    flags, strongly_typed = _network_flags(trt)
    if precision == "bf16" and not strongly_typed:
        raise GastrtError(f"bf16 TensorRT engines need TensorRT >= 10 (this is {trt.__version__})")
    source, output = os.fspath(source), os.fspath(output)

    with tempfile.TemporaryDirectory(prefix="gastrt-trt-") as tmp:
        try:
            read_engine(source, verify=False)
            engine_path = source                 # already a gastrt engine
        except EngineFileError:
            engine_path = build(source, os.path.join(tmp, "model.gastrt"), causal=causal, precision="fp32")
        eng = read_model(engine_path)

        props = None
        try:
            cudart = require_cudart()
        except GastrtError:
            cudart = None
            if verbose:
                print("gastrt: cuda-python missing: the plan will not record the GPU's compute capability")
        if cudart is not None:   # a GPU that is not there is an error, not a plan without its GPU
            props = device_properties(device)
            err = cudart.cudaSetDevice(device)
            if (err[0] if isinstance(err, tuple) else err) != cudart.cudaError_t.cudaSuccess:
                raise GastrtError(f"cannot select cuda:{device} to build on")
        logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
        graph_precision = precision if strongly_typed else "fp32"

        if networks is not None and not set(networks) <= set(eng.plans):
            raise GastrtError(f"networks {sorted(networks)}: this engine has {', '.join(sorted(eng.plans))}")
        blobs, table = {}, {}
        for pname, plan in eng.plans.items():
            if networks is not None and pname not in networks:
                continue
            rf, j, f = plan.receptive_field, plan.in_joints, plan.in_features
            forms = (["window"] if window else []) + (["sequence"] if sequence and "sequence" in plan.modes else [])
            if not forms:
                raise GastrtError(f"the {pname!r} network has no sequence form: build its window form")
            for mode in forms:
                model, info = build_model(eng, mode=mode, opset=ONNX_OPSET, dynamic_batch=True,
                                          precision=graph_precision, plan=pname)
                check_model(model)
                if mode == "window":
                    profile = ((min_batch, rf, j, f), (opt_batch, rf, j, f), (max_batch, rf, j, f))
                else:
                    profile = ((1, rf, j, f), (seq_opt_batch, rf - 1 + opt_frames, j, f),
                               (seq_max_batch, rf - 1 + max_frames, j, f))
                key = f"{pname}/{mode}"
                if verbose:
                    print(f"building {key}: {info['node_count']} ONNX nodes, profile {profile}")
                blobs[key] = _build_one(trt, logger, model.SerializeToString(), profile, precision,
                                        strongly_typed, flags, workspace, key)
                table[key] = {"profile": {"min": list(profile[0]), "opt": list(profile[1]),
                                          "max": list(profile[2])},
                              "onnx_nodes": info["node_count"], "onnx_op_types": info["op_types"]}

        meta = dict(eng.metadata)
        meta["precision"] = precision
        meta.pop("precision_choice", None)   # how the .gastrt's precision was chosen, not this plan's
        plans = {}
        for pname, plan in eng.plans.items():
            if networks is not None and pname not in networks:
                continue
            pj = plan.to_json()
            if f"{pname}/sequence" not in blobs:
                pj["modes"] = ["window"]         # Engine then lifts sequences window by window
            plans[pname] = pj
        meta["plans"] = plans
        meta["weight_shapes"] = {n: list(a.shape) for n, a in eng.weights.items()}
        header = {"meta": meta, "tensorrt_version": str(trt.__version__),
                  "compute_capability": props["compute_capability"] if props else None,
                  "device_name": props["name"] if props else None,
                  "strongly_typed": strongly_typed, "engines": table}
        write_plan(output, header, blobs)
    return {"path": output, "engines": table, "tensorrt_version": str(trt.__version__),
            "device": props["name"] if props else None, "precision": precision, "family": meta["family"],
            "receptive_field": meta["receptive_field"], "causal": meta["causal"],
            "bytes": os.path.getsize(output)}


def build_tensorrt_cli(args) -> int:
    """``gastrt build --backend tensorrt``: args.checkpoint, output, causal, precision,
    min_batch, opt_batch, max_batch (optional: max_frames, seq_max_batch, no_sequence, device)."""
    require_tensorrt()
    output = args.output or os.path.splitext(args.checkpoint)[0] + ".plan"
    dev = getattr(args, "device", 0)
    if isinstance(dev, str) and dev.strip().isdigit():
        dev = int(dev)
    if isinstance(dev, str):
        kind, dev = parse_device(dev)
        if kind != "cuda":
            raise GastrtError("TensorRT builds on a GPU: --device cuda or cuda:N")
    res = build_tensorrt(args.checkpoint, output, causal=args.causal, precision=args.precision,
                         min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                         sequence=not getattr(args, "no_sequence", False),
                         max_frames=getattr(args, "max_frames", None) or DEFAULT_MAX_FRAMES,
                         seq_max_batch=getattr(args, "seq_max_batch", None) or DEFAULT_SEQ_MAX_BATCH,
                         device=dev or 0, verbose=bool(getattr(args, "verbose", False)))
    print(f"family     {res['family']}, receptive field {res['receptive_field']}, "
          f"{'causal' if res['causal'] else 'symmetric'}")
    print(f"tensorrt   {res['tensorrt_version']} on {res['device'] or 'the current GPU'}, {res['precision']}")
    for key, e in sorted(res["engines"].items()):
        p = e["profile"]
        print(f"engine     {key}: {e['onnx_nodes']} ONNX nodes, input {tuple(p['min'])} .. {tuple(p['max'])} "
              f"(opt {tuple(p['opt'])})")
    print(f"wrote      {res['path']} ({res['bytes']:,} bytes)")
    return 0
