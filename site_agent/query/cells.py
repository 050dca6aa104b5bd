"""The public geometry of a query's cells: base cells, ROLLUP/CUBE margins, table lines.

Base cells are the row-major grid over the keys' public domains. Output cells are, for each
grouping set in order, the grid over the keys in the set (a margin sums the keys left out).
A *line* is a parent cell together with the children that add up to it along one key (a
margin and the cells it sums); the secondary suppression makes sure that no line, and no
combination of lines, lets anyone derive a suppressed cell from released ones.
Everything here is public and computed identically by every party.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import product

import numpy as np
import numpy.typing as npt

Index = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Cells:
    """Cell geometry for key domain sizes ``dims`` and ``sets`` (tuples of key indices)."""

    dims: tuple[int, ...]
    sets: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, dims: Sequence[int], sets: Sequence[Sequence[int]]) -> Cells:
        return cls(tuple(dims), tuple(tuple(s) for s in sets))

    @property
    def base(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    def set_size(self, s: tuple[int, ...]) -> int:
        return int(np.prod([self.dims[i] for i in s], dtype=np.int64))

    @cached_property
    def offsets(self) -> list[int]:
        out, at = [], 0
        for s in self.sets:
            out.append(at)
            at += self.set_size(s)
        return out

    @property
    def out(self) -> int:
        return self.offsets[-1] + self.set_size(self.sets[-1])

    def expand(self, v: np.ndarray) -> np.ndarray:
        """Share components (2, base, *tail) summed into output cells (2, out, *tail): local."""
        tail = v.shape[2:]
        grid = v.reshape(2, *self.dims, *tail)
        parts = []
        for s in self.sets:
            drop = tuple(1 + i for i in range(len(self.dims)) if i not in s)
            summed = grid.sum(axis=drop, dtype=np.uint64) if drop else grid
            parts.append(summed.reshape(2, self.set_size(s), *tail))
        return np.concatenate(parts, axis=1)

    def gather_below(self, v: np.ndarray) -> np.ndarray:
        """Share components (2, out) summed, for every output cell, over the output cells it
        contains (itself included): a margin collects its cells and the margins below it. Local."""
        out = np.zeros_like(v)
        for t, t_off in zip(self.sets, self.offsets, strict=True):
            block = v[:, t_off : t_off + self.set_size(t)].reshape(2, *(self.dims[i] for i in t))
            for s, s_off in zip(self.sets, self.offsets, strict=True):
                if not set(s) <= set(t):
                    continue
                drop = tuple(1 + j for j, i in enumerate(t) if i not in s)
                summed = block.sum(axis=drop, dtype=np.uint64) if drop else block
                kept = [i for i in t if i in s]
                summed = np.transpose(summed, (0, *(1 + kept.index(i) for i in s)))
                out[:, s_off : s_off + self.set_size(s)] += summed.reshape(2, -1)
        return out

    def members(self, s: tuple[int, ...]) -> Index:
        """Base cells of each output cell of set ``s``: shape (cells of s, base / cells of s)."""
        ids = np.arange(self.base, dtype=np.int64).reshape(self.dims)
        keep = list(s)
        rest = [i for i in range(len(self.dims)) if i not in s]
        moved = np.transpose(ids, keep + rest)
        return moved.reshape(self.set_size(s), -1)

    def labels(self) -> list[tuple[int | None, ...]]:
        """For each output cell, the domain position of each key (None for a margin)."""
        out: list[tuple[int | None, ...]] = []
        for s in self.sets:
            for combo in product(*(range(self.dims[i]) for i in s)):
                pos: list[int | None] = [None] * len(self.dims)
                for i, v in zip(s, combo, strict=True):
                    pos[i] = v
                out.append(tuple(pos))
        return out

    @cached_property
    def lines(self) -> Index:
        """Lines as rows of output-cell indices, the parent first and then its children, padded
        with -1; shape (L, width)."""
        index = {lab: i for i, lab in enumerate(self.labels())}
        rows: list[list[int]] = []
        set_list = list(self.sets)
        for s in set_list:
            for d in s:
                parent = tuple(i for i in s if i != d)
                if parent not in set_list:
                    continue
                for lab in self.labels():
                    if any(lab[i] is None for i in parent) or any(
                        lab[i] is not None for i in range(len(self.dims)) if i not in parent
                    ):
                        continue
                    children = []
                    for v in range(self.dims[d]):
                        child = list(lab)
                        child[d] = v
                        children.append(index[tuple(child)])
                    rows.append([index[lab], *children])
        if not rows:
            return np.zeros((0, 0), dtype=np.int64)
        width = max(len(r) for r in rows)
        return np.array([r + [-1] * (width - len(r)) for r in rows], dtype=np.int64)
