"""KAPLAN_MEIER through three real agents (TLS websockets, DuckDB, each site's own policy, the
release ledger): the lung data split by institution, against lifelines on the pooled rows."""

from __future__ import annotations

from ..models.km_reference import check_group, check_logrank
from .conftest import Running

QUERY = "KAPLAN_MEIER time, status = 2 BY sex FROM lung AT 0 TO 1100 STEP 1"


def test_kaplan_meier_by_sex_equals_lifelines(lung: Running) -> None:
    out = lung.client.query(QUERY)
    pooled = lung.pooled
    k = out.attrs["min_cell_size"]
    assert k == 5
    for sex in (1, 2):
        rows = pooled[pooled.sex == sex]
        ours = check_group(out, rows, rows.status == 2, k, sex=sex)
        sf = ours.survival_function_.iloc[:, 0]
        assert ours.median_survival_time_ == sf.index[sf <= 0.5].min()
    check_logrank(out, pooled, pooled.status == 2, pooled.sex)
    assert abs(out.attrs["logrank"]["test_statistic"] - 10.2057) < 1e-4
    assert {r["name"] for r in out.attrs["reveals"]} >= {"km_steps", "km_curve", "logrank"}


def test_kaplan_meier_explain(lung: Running) -> None:
    text = lung.client.explain(QUERY)
    assert "km_steps" in text and "0 or >= k persons" in text and "[km]" in text
