"""The ``(other)`` cell: NULL and out-of-domain group-key values are counted there, never a failure.

The reference is pandas on the pooled rows of the lung fixture.
"""

from __future__ import annotations

import numpy as np
import pytest

from site_agent.query import compile_query, schema_from_duckdb

from .conftest import Consortium, K

OTHER = "(other)"
SUPPRESSED = f"<{K}"


@pytest.mark.parametrize(
    ("key", "domain"),
    [
        ("status", [0, 1, OTHER]),  # a column without NULL in its domain
        ("ph_ecog", [0, 1, 2, 3, None]),  # NULL declared: no (other)
        ("age > 60", [False, True, OTHER]),  # a predicate can be NULL
        ("CASE WHEN age < 60 THEN 'young' ELSE 'old' END", ["young", "old"]),  # always a label
        ("CASE WHEN age < 60 THEN 'young' END", ["young", None]),
        ("CASE WHEN age < 60 THEN 'young' ELSE 1 END", ["young", 1, OTHER]),  # labels the engine must convert
        ("SITE", ["site0", "site1", "site2"]),
    ],
)
def test_the_plan_records_other_last_where_a_key_needs_it(lung: Consortium, key: str, domain: list[object]) -> None:
    plan = compile_query(f"SELECT COUNT(*) AS n FROM lung GROUP BY {key}", lung.schema, lung.rules, tuple(lung.cons))
    assert plan.keys[0]["domain"] == domain
    assert plan.dims == [len(domain)]


def test_out_of_domain_values_are_counted_in_other_and_released_when_large(lung: Consortium) -> None:
    """A schema that declares ``status`` as [1] only, over data that also holds 0."""
    frames = {site: {"lung": con.execute("SELECT * FROM lung").df()} for site, con in lung.cons.items()}
    narrow = Consortium(frames, lung.schema, lung.rules)
    narrow.schema = schema_from_duckdb(narrow.cons["site0"], domains={"lung.status": [1], "lung.sex": [2]})
    out = narrow.query("SELECT status, sex, COUNT(*) AS n, AVG(time) AS t FROM lung GROUP BY status, sex")
    out = out.set_index(["status", "sex"])
    pooled = lung.pooled["lung"]
    assert out.index.tolist() == [(1, 2), (1, OTHER), (OTHER, 2), (OTHER, OTHER)]
    for status, sex in out.index:
        rows = pooled[((pooled.status == 1) == (status == 1)) & ((pooled.sex == 2) == (sex == 2))]
        assert len(rows) >= K  # the data this test relies on
        assert out.loc[(status, sex), "n"] == len(rows)
        np.testing.assert_allclose(out.loc[(status, sex), "t"], rows.time.mean(), rtol=1e-6)


def test_null_keys_go_to_other_and_a_small_other_cell_is_suppressed_in_rollup(lung: Consortium) -> None:
    pooled = lung.pooled["lung"]
    text = "SELECT ph_karno > 95 AS fit, COUNT(*) AS n, SUM(time) AS t FROM lung GROUP BY ROLLUP(fit)"
    out = lung.query(text).set_index("fit")
    nulls = pooled[pooled.ph_karno.isna()]
    assert 0 < len(nulls) < K  # one patient without ph_karno
    # The (other) cell is suppressed (so left out of the result); in the line false + true +
    # (other) = (all) the suppressed total must reach k, so a real cell is suppressed with it and
    # the attacker's subtraction gives neither the NULL patient's time nor a small cell.
    assert out.index.tolist() == [False, True, "(all)"]
    hidden = [v for v in (False, True) if out.loc[v, "t"] == SUPPRESSED]
    assert hidden
    left = out.loc["(all)", "n"] - sum(out.loc[v, "n"] for v in (False, True) if v not in hidden)
    assert left >= K
    assert out.loc["(all)", "n"] == len(pooled)
    np.testing.assert_allclose(out.loc["(all)", "t"], pooled.time.sum(), rtol=1e-6)


def test_a_key_that_cannot_be_evaluated_counts_in_other(lung: Consortium) -> None:
    """``(age - 60) // (age - 60)`` raises on age 60 (integer division by zero): NULL there."""
    pooled = lung.pooled["lung"]
    out = lung.query("SELECT COUNT(*) AS n FROM lung GROUP BY (age - 60) // (age - 60) > 0")
    assert out.iloc[:, 0].tolist() == [False, True, OTHER]
    at_60 = int((pooled.age == 60).sum())
    assert at_60 >= K  # the data this test relies on
    assert out["n"].tolist() == [0, len(pooled) - at_60, at_60]  # nobody is false: an empty cell
