"""Argument types shared by the API and every CLI sub-command (lowest layer: no gastrt imports
but errors). argparse-facing helpers raise ``argparse.ArgumentTypeError``; API-facing ones raise
``GastrtError`` with the expected form in the message."""
from __future__ import annotations

import argparse
import math

from .errors import GastrtError

DEVICES_HELP = "expected 'cpu', 'cuda' or 'cuda:N'"


def _int_at_least(s: str, lo: int, expected: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = lo - 1
    if v < lo:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}")
    return v


def positive_int(s: str) -> int:
    """argparse type for counts (--people, --slots, --threads)."""
    return _int_at_least(s, 1, "a positive integer")


def non_negative_int(s: str) -> int:
    """argparse type for limits where 0 means none (--max-gap)."""
    return _int_at_least(s, 0, "an integer >= 0")


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' -> ('cpu', 0); 'cuda' / 'cuda:N' -> ('cuda', N). Case and spaces are ignored."""
    if not isinstance(device, str):
        raise GastrtError(f"device must be a string, {DEVICES_HELP}")
    d = device.strip().lower()
    if d == "cpu":
        return "cpu", 0
    if d == "cuda" or d.startswith("cuda:"):
        idx = d[5:] if d.startswith("cuda:") else "0"
        if not idx.isdigit():
            raise GastrtError(f"bad device {device!r}: {DEVICES_HELP}")
        return "cuda", int(idx)
    raise GastrtError(f"unknown device {device!r}: {DEVICES_HELP}")


def require_positive_int(v, what: str) -> int:
    """API-facing count check: ``v`` (an int, or a whole float / numeric string) as an int >= 1;
    bools are refused. ``what`` names the argument in the message (e.g. "--repeat")."""
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


def require_positive_number(v, what: str, allow_zero: bool = False) -> float:
    """API-facing check of a finite number > 0 (>= 0 with ``allow_zero``), e.g. seconds."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise GastrtError(f"{what}: expected a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise GastrtError(f"{what}: expected a {'non-negative' if allow_zero else 'positive'} number, got {v!r}")
    return f
