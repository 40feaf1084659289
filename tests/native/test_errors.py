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
