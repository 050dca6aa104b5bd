"""Sizes as bands for the reviewing data-protection officers (docs/review-and-report.md).

A result held for output review shows the DPOs how many persons it rests on, never how many
exactly: each size is compared on shares with the bands' public lower bounds, and only the
index of its band is opened, to the committee (a reveal point every held plan declares). An
aggregate's sizes are its base cells' persons (:meth:`site_agent.agent.planning.Compiled.cell_bands`);
a model's are the persons of its rows, its events for a binary or survival outcome, each BY
group's persons for VALIDATE (:func:`held_bands`, called by each model's program).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..mpc.arithmetic import add_public, open_all
from ..mpc.boolean import ltz
from ..mpc.party import Party, Protocol
from ..mpc.shares import AShare

SIZE_BANDS: tuple[tuple[int, int | None], ...] = (
    (0, 9),
    (10, 19),
    (20, 49),
    (50, 99),
    (100, 199),
    (200, 499),
    (500, 999),
    (1000, None),
)
"""The bands in which a reviewing DPO sees each size (never the size itself)."""

BANDS_REVEAL = {
    "name": "bands",
    "to": "committee",
    "what": "for output review: the persons of the model's rows, its events (binary and survival outcomes) and "
    "each BY group's persons (VALIDATE), each as a band (0-9, 10-19, 20-49, 50-99, 100-199, 200-499, "
    "500-999, 1000+) for the data-protection officers; the sizes themselves are never opened",
}
"""The reveal point a model held for review declares (in its plan, so in ``--explain``)."""


def band_label(index: int) -> str:
    """``"10-19"``, or ``"1000+"`` for the open last band."""
    lo, hi = SIZE_BANDS[index]
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def size_bands(p: Party, sizes: AShare, frac_bits: int = 0) -> Protocol[list[str]]:
    """Each shared size (a vector; fixed point at ``frac_bits`` fractional bits) as its band's
    label: one batch of comparisons with the bands' lower bounds, then only the number of bounds
    above each size is opened (to the committee)."""
    sizes = sizes.reshape(-1)
    bounds = np.asarray([lo for lo, _ in SIZE_BANDS[1:]], dtype=np.int64) << frac_bits
    below = AShare(np.repeat(sizes.v[:, None, :], len(bounds), axis=1))
    below = add_public(p, below, (-bounds).astype(np.uint64)[:, None])
    under = (yield from ltz(p, below)).sum(axis=0)  # bounds above the size, per size
    opened = yield from open_all(p, under)
    return [band_label(len(bounds) - int(u)) for u in opened]


def held_bands(
    p: Party, plan_data: dict[str, Any], labels: Sequence[str], sizes: AShare, frac_bits: int = 0
) -> Protocol[dict[str, Any]]:
    """``{"bands": ["persons: 100-199", ...]}`` for a model whose plan is held for review (it
    carries ``review`` terms): each of the shared ``sizes`` (fixed point at ``frac_bits``) as a
    band, after its label; ``{}``, and nothing opened, for a plan that goes to the analyst.
    Called once the model's own rules passed, so a refused model opens no band."""
    if "review" not in plan_data:
        return {}
    bands = yield from size_bands(p, sizes, frac_bits)
    return {"bands": [f"{label}: {band}" for label, band in zip(labels, bands, strict=True)]}
