"""Streaming inference: real-time, incremental, multi-stream lifting (``Engine.stream``).

    stream = engine.stream(slots=4, flip=False)
    out = stream.push(frames)                 # frames (4, J, 2): one new frame per slot
    for slot, frame, pose, filled in out:     # the poses that became final on this push
        ...
    out = stream.flush(2)                     # slot 2's sequence ended: its remaining frames
    stream.reset(2)                           # slot 2 may now start a new sequence

Slots are independent sequences (one person, or one camera): each starts on its first push,
ends with ``flush`` and is reused after ``reset``. ``present`` says which slots get a frame on
a push; the others do not move.

Exactness. The concatenated output of a slot equals ``engine.lift_sequence`` of the same
sequence (edge padding at both ends included, ``flip`` included) up to fp32 rounding, for any
length (1 frame too), start time and causal setting. A push of frame ``f`` finalises frame
``f - lookahead`` (``lookahead`` = pad for a symmetric model, 0 for a causal one); ``flush``
feeds ``lookahead`` copies of the last frame (the right edge padding) and returns the rest.

How. A push computes one new column of the dilated full-sequence model per op for every active
slot, batched over the slots (one GEMM per conv), over per-slot rings of past columns; FLOPs per
pushed frame are the sequence form's per-frame FLOPs (``flops_per_push``), counted as they run
(``flops``). RIE lifts one window per push. Modules:

    geometry.py   the plan as per-column steps: buffers, delays, ring heights, tap lags
    cpu.py        the column steps on the CPU (native few-row kernels or NumPy), RIE's window ring
    core.py       Stream: slots, states, bad input, flip, the choice of kernels
    jsonl.py      the ``gastrt stream`` command (a layer above: not imported here)

The GPU column steps are ``backends/cuda``'s ``CudaStreamColumns``, over the same geometry.

Bad input: a wrong shape / joint count raises GastrtError. Non-finite keypoints (NaN/inf) of a
present slot are replaced by that joint's last valid value in that slot, and the frame is
reported with ``filled=True``; the first frame of a sequence has no earlier value, so a
non-finite keypoint there raises GastrtError (the stream is left unchanged). Pushing to a
flushed slot raises until ``reset``.

The BLAS GEMMs are small: on a busy CPU, NumPy's multi-threaded BLAS can be far slower than one
thread (OPENBLAS_NUM_THREADS=1). Only the pose model streams (not VideoPose3D's trajectory
model). A Stream is not thread-safe: use one per thread.
"""
from __future__ import annotations

from .core import ACTIVE, FLUSHED, IDLE, KERNELS, Stream, StreamOutput, StreamPose
from .geometry import ColumnBuffer, ColumnGeometry, ConvStep, GastStep

__all__ = ["Stream", "StreamOutput", "StreamPose", "IDLE", "ACTIVE", "FLUSHED", "KERNELS", "ColumnGeometry",
           "ColumnBuffer", "ConvStep", "GastStep"]
