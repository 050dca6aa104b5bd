"""A site's own persons in each of a plan's query sets, for the ledger of released sets.

The plan's ``ledger`` query (present when the query's table names its person column) lists,
for every row the query reads, the person, the row's cell and whether the row is in each
query set. Here a site runs it on its own data and maps each row to the output
cells it falls in (its base cell and every ROLLUP/CUBE margin above it), giving the
:class:`~site_agent.privacy.ledger.Membership` the ledger compares and remembers. Nothing here
leaves the site.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..privacy.ledger import Membership, person_hashes
from .cells import Cells
from .plan import Plan


def output_cells(cells: Cells) -> npt.NDArray[np.int64]:
    """(base cells, grouping sets): the output cell of each base cell in each grouping set."""
    table = np.zeros((cells.base, len(cells.sets)), dtype=np.int64)
    for i, (s, offset) in enumerate(zip(cells.sets, cells.offsets, strict=True)):
        members = cells.members(s)
        table[members.reshape(-1), i] = offset + np.repeat(np.arange(members.shape[0]), members.shape[1])
    return table


def base_cells(plan: Plan, local: npt.NDArray[np.int64], slot: int | None) -> npt.NDArray[np.int64]:
    """Local cell numbers (the grid without SITE) as base cell numbers (this site's SITE slice)."""
    key = plan.site_key
    if key is None:
        return local
    others = [d for i, d in enumerate(plan.dims) if i != key]
    position = list(np.unravel_index(local, others)) if others else []
    position.insert(key, np.full(local.shape, slot if slot is not None else 0, dtype=np.int64))
    return np.ravel_multi_index(position, plan.dims).astype(np.int64)


def membership(plan: Plan, con: Any, site_index: int | None, holds_data: bool = True) -> Membership | None:
    """This site's persons in every query set and output cell (None: the plan has no ledger
    query, as when its table declares no person column)."""
    spec = plan.data.get("ledger")
    if spec is None:
        return None
    cells = Cells.of(plan.dims, plan.grouping_sets)
    rows = int(spec["sets"])
    if not holds_data:
        return Membership.of([(np.zeros(0, np.uint64), np.zeros((0, len(cells.sets)), np.int64))] * rows, cells.out)
    result = con.execute(spec["sql"]).fetchnumpy()
    cell = np.ma.getdata(result["cell"])
    known = ~np.ma.getmaskarray(result["cell"])  # a row outside every key's domain is in no cell
    hashes = person_hashes(np.ma.getdata(result["person"])[known])
    local = cell[known].astype(np.int64)
    slot = site_index if plan.site_key is not None else None
    out = output_cells(cells)[base_cells(plan, local, slot)]
    per_row = []
    for r in range(rows):
        inside = np.ma.filled(result[f"m{r}"], False)[known].astype(bool)  # NULL: in no set
        per_row.append((hashes[inside], out[inside]))
    return Membership.of(per_row, cells.out)
