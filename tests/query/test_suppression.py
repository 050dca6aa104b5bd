"""Disclosure control: small cells show as <k, and no suppressed value follows by subtraction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from site_agent.mpc.party import run_in_memory
from site_agent.query import compile_query, local_preaggregates, mpc_program, share_inputs
from site_agent.query.numeric import Float

from .conftest import Consortium, K

SUPPRESSED = f"<{K}"


def _recover(frame: pd.DataFrame, keys: list[str], column: str) -> dict[tuple[object, ...], float]:
    """An attacker's differencing: solve every line (parent = sum of children) with one unknown,
    repeatedly, from the released cells and margins of one result. Returns what it recovers."""
    cells = {tuple(row[k] for k in keys): row[column] for _, row in frame.iterrows()}
    known = {c: float(v) for c, v in cells.items() if v != SUPPRESSED}
    recovered: dict[tuple[object, ...], float] = {}
    changed = True
    while changed:
        changed = False
        for parent in cells:
            for d in range(len(keys)):
                if parent[d] != "(all)":
                    continue
                children = [
                    c for c in cells if c[d] != "(all)" and all(c[i] == parent[i] for i in range(len(keys)) if i != d)
                ]
                if not children:
                    continue
                line = [*children, parent]
                unknown = [c for c in line if c not in known]
                if len(unknown) != 1:
                    continue
                (u,) = unknown
                rest = sum(known[c] for c in children if c != u)
                value = known[parent] - rest if u != parent else rest
                known[u] = recovered[u] = value
                changed = True
    return recovered


def test_small_cells_show_as_below_k_and_are_never_opened(lung: Consortium) -> None:
    plan = compile_query(
        "SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog", lung.schema, lung.rules
    )
    per_site = [local_preaggregates(plan, con) for con in lung.cons.values()]
    members = share_inputs(per_site)
    results, _ = run_in_memory(lambda p: mpc_program(p, plan, members[p.index]), seed=1)
    flags = results[0].flags.reshape(len(plan.data["supports"]), -1)
    ref = lung.pooled["lung"].ph_ecog.value_counts(dropna=False)
    small = [i for i, v in enumerate([0, 1, 2, 3, None]) if (ref.get(v, 0) if v is not None else ref[np.nan]) < K]
    assert small == [3, 4]  # ECOG 3 (one patient) and NULL (one patient)
    assert flags[0, small].tolist() == [1, 1]
    for share in results[0].opened.values():  # only the three large cells' values were ever opened
        assert (share.mant if isinstance(share, Float) else share).shape == (3,)
    out = lung.query("SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog")
    assert out["n"].tolist()[3:] == [SUPPRESSED, SUPPRESSED]
    assert out["mean_age"].tolist()[3:] == [SUPPRESSED, SUPPRESSED]


def test_rollup_margin_does_not_reveal_single_small_cell(generated: Consortium) -> None:
    # region 'east' is rare: (sex, east) cells are below k, and margins per sex are released.
    out = generated.query("SELECT sex, region, COUNT(*) AS n, SUM(bmi) AS s FROM patients GROUP BY ROLLUP(sex, region)")
    p = generated.pooled["patients"]
    small = p.groupby(["sex", "region"]).size()
    assert (small.xs("east", level="region") < K).all()
    assert (out["n"] == SUPPRESSED).sum() >= 4  # each sex's east cell and one more in its line
    for column in ("n", "s"):
        assert _recover(out, ["sex", "region"], column) == {}
    for (sex, region), n in small.items():  # what is released is right
        row = out[(out.sex == sex) & (out.region == region)].iloc[0]
        if row["n"] != SUPPRESSED:
            assert row["n"] == n


def test_cube_has_no_derivable_cell(generated: Consortium) -> None:
    out = generated.query("SELECT ward, region, COUNT(*) AS n, AVG(age) AS a FROM patients GROUP BY CUBE(ward, region)")
    assert (out["n"] == SUPPRESSED).any()
    assert _recover(out, ["ward", "region"], "n") == {}
    released = out[out["n"] != SUPPRESSED]
    p = generated.pooled["patients"]
    for _, row in released.iterrows():
        sel = p
        if row["ward"] != "(all)":
            sel = sel[sel.ward == row["ward"]]
        if row["region"] != "(all)":
            sel = sel[sel.region == row["region"]]
        assert row["n"] == len(sel)


def test_attacker_would_succeed_without_secondary_suppression(generated: Consortium) -> None:
    """The differencing attack itself works: with only primary suppression it recovers cells."""
    out = generated.query("SELECT sex, region, COUNT(*) AS n FROM patients GROUP BY ROLLUP(sex, region)")
    p = generated.pooled["patients"]
    # The (other) cells hold nobody here; a naive release would not show them at all.
    assert p.sex.isin(["F", "M"]).all() and p.region.isin(["north", "south", "east"]).all()
    naive = out[(out.sex != "(other)") & (out.region != "(other)")].copy()
    truth = p.groupby(["sex", "region"]).size()
    for i, row in naive.iterrows():
        if row["region"] != "(all)" and row["sex"] != "(all)":
            n = int(truth.get((row["sex"], row["region"]), 0))
            naive.loc[i, "n"] = SUPPRESSED if n < K else n
        elif row["sex"] != "(all)":
            naive.loc[i, "n"] = int((p.sex == row["sex"]).sum())
        else:
            naive.loc[i, "n"] = len(p)
    recovered = _recover(naive, ["sex", "region"], "n")
    assert recovered and all(recovered[c] == truth.get(c, 0) for c in recovered)


def test_per_value_support_suppresses_sparse_column(lung: Consortium) -> None:
    # A cell large enough by rows but with too few non-NULL values of the column.
    out = lung.query(
        "SELECT sex, COUNT(*) AS n, AVG(meal_cal) AS meal FROM lung WHERE meal_cal IS NULL OR age > 80 GROUP BY sex"
    )
    sel = lung.pooled["lung"].query("meal_cal != meal_cal or age > 80")
    for sex, grp in sel.groupby("sex"):
        row = out.set_index("sex").loc[sex]
        assert row["n"] == (len(grp) if len(grp) >= K else SUPPRESSED)
        if grp.meal_cal.notna().sum() < K:
            assert row["meal"] == SUPPRESSED
        else:
            assert row["meal"] == pytest.approx(grp.meal_cal.mean(), rel=1e-6)
