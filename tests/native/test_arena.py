"""gastrt._native.ArenaAllocator (csrc/common/arena.h, the CPU executor's arena planner, bound for
the CUDA lowering) against a plain first-fit model on random alloc / release sequences."""
from __future__ import annotations

import numpy as np
import pytest

_native = pytest.importorskip("gastrt._native")


class FirstFit:
    """The reference: a sorted list of free (offset, size) blocks; top = high-water mark."""

    def __init__(self, alignment: int):
        self.alignment = alignment
        self.free: list[tuple[int, int]] = []
        self.top = 0

    def rounded(self, size: int) -> int:
        a = self.alignment
        return (max(size, 1) + a - 1) // a * a

    def alloc(self, size: int) -> int:
        size = self.rounded(size)
        for i, (o, s) in enumerate(self.free):
            if s >= size:
                self.free[i:i + 1] = [(o + size, s - size)] if s > size else []
                return o
        if self.free and sum(self.free[-1]) == self.top:
            o, _ = self.free.pop()
            self.top = o + size
            return o
        self.top += size
        return self.top - size

    def release(self, off: int, size: int) -> None:
        blocks = sorted(self.free + [(off, self.rounded(size))])
        self.free = []
        for o, s in blocks:
            if self.free and sum(self.free[-1]) == o:
                self.free[-1] = (self.free[-1][0], self.free[-1][1] + s)
            else:
                self.free.append((o, s))


@pytest.mark.parametrize("alignment", [1, 16, 256])
@pytest.mark.parametrize("seed", range(6))
def test_arena_matches_first_fit(alignment, seed):
    rng = np.random.default_rng(seed)
    ref, got = FirstFit(alignment), _native.ArenaAllocator(alignment)
    assert got.alignment == alignment
    live = []
    for _ in range(400):
        if live and rng.random() < 0.45:
            off, size = live.pop(int(rng.integers(len(live))))
            ref.release(off, size)
            got.release(off, size)
        else:
            # mostly small blocks, some large ones, zero-sized ones (one aligned unit)
            size = int(rng.choice([0, int(rng.integers(1, 64)), int(rng.integers(1, 5000))]))
            off = got.alloc(size)
            assert off == ref.alloc(size)
            assert off % alignment == 0
            live.append((off, size))
        assert got.top == ref.top
        assert got.free == ref.free
    live.sort()
    ends = [o + ref.rounded(s) for o, s in live]
    assert all(e <= o for e, (o, _) in zip(ends, live[1:])), "live blocks overlap"


def test_arena_reuses_and_extends_the_top_hole():
    a = _native.ArenaAllocator(256)
    x, y = a.alloc(100), a.alloc(300)
    assert (x, y, a.top) == (0, 256, 768)
    a.release(y, 300)
    assert a.free == [(256, 512)]
    assert a.alloc(1000) == 256 and a.top == 1280  # the hole at the top grows
    a.release(x, 1)
    assert a.alloc(256) == 0 and a.free == []


def test_arena_rejects_bad_use():
    with pytest.raises(ValueError, match="alignment"):
        _native.ArenaAllocator(0)
    a = _native.ArenaAllocator(16)
    off = a.alloc(40)
    a.release(off, 40)
    with pytest.raises(ValueError, match="overlaps a free block"):
        a.release(off, 40)
    with pytest.raises(ValueError, match="outside the arena"):
        a.release(off, 1000)
