"""Native failures arrive as typed exceptions (gastrt.errors): a check inside the C++ runtime
raises NativeError (a RuntimeError), argument and plan problems keep raising ValueError."""
from __future__ import annotations

import numpy as np
import pytest

_native = pytest.importorskip("gastrt._native")

from gastrt.errors import NativeError, OutOfMemoryError  # noqa: E402

PLAN = {"name": "p", "in_joints": 17, "out_joints": 17, "receptive_field": 1, "modes": ["window"]}


def test_error_classes():
    assert issubclass(NativeError, RuntimeError)
    assert issubclass(OutOfMemoryError, NativeError) and issubclass(OutOfMemoryError, MemoryError)


def test_kernel_check_failure_is_native_error():
    # K = 0 passes the bindings' shape checks and fails the kernel's own GASTRT_CHECK.
    x, w, b = np.zeros((2, 0), np.float32), np.zeros((0, 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(NativeError, match="stream_linear: bad geometry") as e:
        _native.stream_linear(x, w, b)
    assert not isinstance(e.value, OutOfMemoryError)
    assert str(e.value).startswith("gastrt: ")


def test_executor_check_failures_are_native_errors():
    with pytest.raises(NativeError, match="empty plan"):
        _native.Engine(dict(PLAN, ops=[]), {})
    no_output = _native.Engine(dict(PLAN, ops=[{"kind": "input_flat", "inputs": ["input"], "outputs": ["y"]}]), {})
    with pytest.raises(NativeError, match="must end with an output op"):
        no_output.output_shape(1, 1)
    with pytest.raises(RuntimeError):  # existing `except RuntimeError` still catches them
        no_output.workspace_bytes(1, 1)


def test_plan_problems_stay_value_errors():
    with pytest.raises(ValueError, match="plan p: unknown op kind 'bogus'"):
        _native.Engine(dict(PLAN, ops=[{"kind": "bogus", "inputs": ["input"], "outputs": ["y"]}]), {})
    with pytest.raises(ValueError, match="plan p: buffer 'z' is read before it is written"):
        _native.Engine(dict(PLAN, ops=[{"kind": "input_flat", "inputs": ["z"], "outputs": ["y"]}]), {})
    conv = {"kind": "conv", "inputs": ["input"], "outputs": ["y"], "attrs": {"k": 1},
            "weights": {"w": "w0", "b": "b0"}}
    with pytest.raises(ValueError, match=r"conv -> y: weight 'w0' is missing"):
        _native.Engine(dict(PLAN, ops=[conv]), {})
    with pytest.raises(ValueError, match=r"conv -> y bias: expected shape \(3,\), got \(4,\)"):
        _native.Engine(dict(PLAN, ops=[conv]), {"w0": np.zeros((34, 3)), "b0": np.zeros(4)})


def test_misaligned_float_arrays_are_copied_not_read_in_place():
    """A C-contiguous float32 view at an odd address (a view into a byte buffer) must not reach
    C++ float loads (undefined behaviour): the binding copies it; the result equals the aligned
    input's. A misaligned out= is refused."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 9, 5)).astype(np.float32)
    w = rng.standard_normal((15, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    buf = np.zeros(x.nbytes + 1, np.uint8)
    xm = buf[1:].view(np.float32).reshape(x.shape)
    xm[...] = x
    assert xm.ctypes.data % 4 != 0 and xm.flags.c_contiguous
    want = _native.conv(x, w, b, k=3, stride=3)
    np.testing.assert_array_equal(_native.conv(xm, w, b, k=3, stride=3), want)
    out_buf = np.zeros(want.nbytes + 1, np.uint8)
    out = out_buf[1:].view(np.float32).reshape(want.shape)
    with pytest.raises(ValueError, match="aligned"):
        _native.conv(x, w, b, k=3, stride=3, out=out)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_16bit_weights_must_be_16bit_values(precision):
    """A 16-bit engine's fp32 weights are widened fp16 / bf16 values: the engine (and the conv
    kernel's 16-bit panels) refuse others, naming the op, instead of silently rounding them."""
    conv = {"kind": "conv", "inputs": ["input"], "outputs": ["y"], "attrs": {"k": 1},
            "weights": {"w": "w0", "b": "b0"}}
    w = np.full((34, 3), 1 + 2.0 ** -20, np.float32)   # in neither format
    with pytest.raises(NativeError, match=rf"conv -> y: weights are not {precision} values"):
        _native.Engine(dict(PLAN, ops=[conv]), {"w0": w, "b0": np.zeros(3)}, 1, precision)
    exact = np.full((34, 3), 1.5, np.float32)
    _native.Engine(dict(PLAN, ops=[conv]), {"w0": exact, "b0": np.zeros(3)}, 1, precision)
    x = np.ones((1, 1, 3, 34), np.float32)
    with pytest.raises(ValueError, match=f"w: panel_dtype='{precision}' needs weights exactly representable"):
        _native.conv(x, w, np.zeros(3, np.float32), k=1, stride=1, small_panels=True, panel_dtype=precision)


def test_precision_arguments_are_value_errors():
    with pytest.raises(ValueError, match="precision: expected 'fp32', 'fp16' or 'bf16', got 'int8'"):
        _native.Engine(dict(PLAN, ops=[]), {}, 1, "int8")
    x, w, b = np.ones((1, 1, 3, 4), np.float32), np.ones((4, 2), np.float32), np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="panel_dtype: expected 'fp32', 'fp16' or 'bf16', got 'f16'"):
        _native.conv(x, w, b, k=1, stride=1, small_panels=True, panel_dtype="f16")


def test_panel_dtype_without_panels_is_a_value_error():
    """16-bit panels are asked for where the conv would read none: refused, not ignored."""
    x, w, b = np.ones((1, 1, 3, 4), np.float32), np.ones((12, 2), np.float32), np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="panel_dtype='bf16' needs small_panels=True"):
        _native.conv(x, w, b, k=3, stride=1, panel_dtype="bf16")
    xs = np.ones((1, 1, 20, 4), np.float32)
    with pytest.raises(ValueError, match="this one runs Winograd"):
        _native.conv(xs, w, b, k=3, stride=1, algo="winograd", small_panels=True, panel_dtype="fp16")
