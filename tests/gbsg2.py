"""lifelines' GBSG2 breast-cancer data split over three sites: the second test dataset.

Rows are dealt to the sites by a fixed permutation (sizes 250, 236, 200); an integer ``id``
(the privacy unit) is added. Column names keep their case as R has them (``horTh``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines.datasets import load_gbsg2

from .lung import SITES

GBSG2_SCHEMA = """\
[tables.gbsg2]
id = { type = "integer", person = true }
horTh = { type = "text", domain = ["no", "yes"] }
age = { type = "integer", grid = [20, 90, 1] }
menostat = { type = "text", domain = ["Pre", "Post"] }
tsize = { type = "integer", grid = [0, 130, 1] }
tgrade = { type = "text", domain = ["I", "II", "III"] }
pnodes = { type = "integer", grid = [0, 60, 1] }
progrec = "integer"
estrec = "integer"
time = { type = "integer", grid = [0, 2700, 1] }
cens = { type = "integer", domain = [0, 1] }
"""


def gbsg2_by_site() -> dict[str, pd.DataFrame]:
    """The GBSG2 rows dealt to the three sites (fixed seed)."""
    data = load_gbsg2()
    data.insert(0, "id", range(1, len(data) + 1))
    order = np.random.default_rng(2).permutation(len(data))
    cuts = np.split(order, [250, 486])
    return {site: data.iloc[np.sort(rows)].reset_index(drop=True) for site, rows in zip(SITES, cuts, strict=True)}
