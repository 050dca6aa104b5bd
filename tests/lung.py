"""lifelines' lung dataset split by institution into three sites: the shared test consortium data.

``status`` follows R's coding (1 censored, 2 dead) as the schema declares; dots in names
become underscores; an integer ``id`` (an identifier column in the sites' policies) is added.
"""

from __future__ import annotations

import pandas as pd
from lifelines.datasets import load_lung

SITES = ("north", "central", "south")
LUNG_SCHEMA = """\
[tables.lung]
id = { type = "integer", person = true }
inst = "integer"
time = "float"
status = { type = "integer", domain = [1, 2] }
age = { type = "integer", grid = [30, 90, 1] }
sex = { type = "integer", domain = [1, 2] }
ph_ecog = { type = "integer", domain = [0, 1, 2, 3] }
ph_karno = "float"
pat_karno = "float"
meal_cal = "float"
wt_loss = "float"
"""


def lung_by_site() -> dict[str, pd.DataFrame]:
    """The lung data (rows with an institution), split by institution into the three sites."""
    lung = load_lung().rename(columns=lambda c: c.replace(".", "_"))
    lung = lung.dropna(subset=["inst"]).reset_index(drop=True)
    lung["inst"] = lung["inst"].astype(int)
    lung["status"] = lung["status"] + 1
    lung.insert(0, "id", range(1, len(lung) + 1))
    return {
        "north": lung[lung.inst <= 5],
        "central": lung[(lung.inst > 5) & (lung.inst <= 13)],
        "south": lung[lung.inst > 13],
    }
