"""Differences across queries: each site remembers the query sets it released to each analyst.

Two queries can each satisfy the release rule while their difference isolates one patient:
``WHERE sex = 1`` and ``WHERE sex = 1 AND NOT (T)``. So every site keeps, per analyst, the
persons of its own rows in every released query set (one set per release row and released cell),
and before a new query's cells are opened each site inputs, for every new set and every
remembered one, the number of its persons in exactly one of the two (the symmetric difference).
The committee sums them on shares; a new cell whose pooled difference with a remembered set
holds 1 to k-1 persons is suppressed like any failing check (:mod:`site_agent.privacy.checks`).

What a site stores is its own data (hashes of its own person identifiers), never shared. The
list of remembered set names is public to the committee: its digest joins the agreement round,
so members whose ledgers differ (one lost its state) refuse to run rather than check less.

Limits, also in docs/privacy.md: the ledger keeps the last :data:`MAX_SETS` sets per analyst;
it compares a new set with each remembered set alone, so a tracker that combines three or more
queries is not caught (differential privacy closes that); persons are told apart per site
(a person at two sites counts twice); analysts who pool their results are not linked.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

MAX_SETS = 256
"""Remembered sets per analyst (oldest forgotten first)."""

Hashes = npt.NDArray[np.uint64]


def person_hashes(values: Any) -> Hashes:
    """Stable 64-bit hashes of person identifiers (any column type), as the ledger stores them."""
    as_text = pd.Series(values).astype(str).to_numpy(dtype=object)
    return np.asarray(pd.util.hash_array(as_text, categorize=False), dtype=np.uint64)


@dataclass(frozen=True)
class Membership:
    """Who is in each new query set at this site: one (person hash, query set, output cell)
    triple per membership, without repeats (a person with several rows counts once). ``row``
    numbers the query sets (:attr:`site_agent.privacy.release.ReleasePlanner.sets`)."""

    hashes: Hashes
    row: npt.NDArray[np.int64]
    cell: npt.NDArray[np.int64]
    rows: int
    out_cells: int

    @classmethod
    def of(cls, per_row: list[tuple[Hashes, npt.NDArray[np.int64]]], out_cells: int) -> Membership:
        """From, for each query set, the person hashes of its rows and, aligned, an
        (n, grouping sets) array of the output cells each row falls in."""
        hashes = np.concatenate([np.repeat(h, c.shape[1]) for h, c in per_row] or [np.zeros(0, np.uint64)])
        cell = np.concatenate([c.reshape(-1) for _, c in per_row] or [np.zeros(0, np.int64)])
        row = np.concatenate([np.full(c.size, r, dtype=np.int64) for r, (_, c) in enumerate(per_row)] or [cell])
        order = np.lexsort((hashes, cell, row))
        hashes, cell, row = hashes[order], cell[order], row[order]
        keep = np.ones(hashes.size, dtype=bool)
        keep[1:] = (hashes[1:] != hashes[:-1]) | (cell[1:] != cell[:-1]) | (row[1:] != row[:-1])
        return cls(hashes[keep], row[keep].astype(np.int64), cell[keep].astype(np.int64), len(per_row), out_cells)

    def sizes(self) -> npt.NDArray[np.int64]:
        """(rows, out cells): persons in each set."""
        flat = np.bincount(self.row * self.out_cells + self.cell, minlength=self.rows * self.out_cells)
        return flat.reshape(self.rows, self.out_cells).astype(np.int64)

    def set_of(self, r: int, c: int) -> Hashes:
        """The sorted person hashes of query set r in output cell c."""
        at = r * self.out_cells + c
        lo, hi = np.searchsorted(self.row * self.out_cells + self.cell, [at, at + 1])
        return self.hashes[lo:hi]


class Ledger:
    """One site's remembered query sets, per analyst, in ``folder`` (one subfolder each)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _dir(self, analyst: str) -> Path:
        return self.folder / hashlib.sha256(analyst.encode()).hexdigest()[:32]

    def names(self, analyst: str) -> list[str]:
        """Names of the remembered sets, oldest first (public: query digest, row, cell)."""
        index = self._dir(analyst) / "index.json"
        return list(json.loads(index.read_text())) if index.exists() else []

    def digest(self, analyst: str) -> str:
        """sha256 of the remembered names: equal at every member that released the same sets."""
        return hashlib.sha256(json.dumps(self.names(analyst)).encode()).hexdigest()

    def _load(self, analyst: str) -> list[Hashes]:
        folder = self._dir(analyst)
        return [np.load(folder / f"{i}.npy") for i, _ in enumerate(self.names(analyst))]

    def differences(self, analyst: str, members: Membership) -> npt.NDArray[np.int64]:
        """(query sets, out cells, remembered) counts of this site's persons in exactly one of each new
        set and each remembered set: |A| + |E| - 2 |A and E|, all pairs at once (a sort-merge
        join of the new memberships with the remembered persons on the person hash)."""
        old = self._load(analyst)
        shape = (members.rows, members.out_cells, len(old))
        if not old:
            return np.zeros(shape, dtype=np.int64)
        old_sizes = np.array([e.size for e in old], dtype=np.int64)
        everyone = np.concatenate(old)
        owner = np.repeat(np.arange(len(old)), old_sizes)
        order = np.argsort(members.hashes, kind="stable")
        ordered = members.hashes[order]
        lo = np.searchsorted(ordered, everyone, "left")
        counts = np.searchsorted(ordered, everyone, "right") - lo
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        new_idx = order[np.arange(int(counts.sum())) - starts + np.repeat(lo, counts)]
        old_idx = np.repeat(np.arange(everyone.size), counts)
        slot = (members.row[new_idx] * members.out_cells + members.cell[new_idx]) * len(old) + owner[old_idx]
        both = np.bincount(slot, minlength=int(np.prod(shape))).reshape(shape)
        return members.sizes()[:, :, None] + old_sizes[None, None, :] - 2 * both

    def record(self, analyst: str, query: str, members: Membership, released: npt.NDArray[np.bool_]) -> None:
        """Remember the sets of the cells that were opened (``released``: query sets x out cells)."""
        folder = self._dir(analyst)
        folder.mkdir(parents=True, exist_ok=True)
        names, sets = self.names(analyst), self._load(analyst)
        for r, c in zip(*np.nonzero(released), strict=True):  # empty here too: names agree at every site
            names.append(f"{query[:16]}:{int(r)}:{int(c)}")
            sets.append(members.set_of(int(r), int(c)))
        names, sets = names[-MAX_SETS:], sets[-MAX_SETS:]
        for i, s in enumerate(sets):
            np.save(folder / f"{i}.npy", s)
        tmp = folder / "index.json.tmp"
        tmp.write_text(json.dumps(names))
        os.replace(tmp, folder / "index.json")
