"""Derived columns the consortium declares in schema.toml (``[tables.t.derived]``): checked when
the schema loads, used in queries like a column, computed in each site's local SQL. References
are pandas on the pooled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from site_agent.errors import ConfigError, PolicyRefusal, UnsupportedQuery
from site_agent.query import DisclosureRules, compile_query
from site_agent.query.schema_file import load_schema_file

from ..integration.conftest import Running
from ..query.conftest import Consortium

SCHEMA = """
[tables.p]
pid = { type = "text", person = true }
sex = { type = "text", domain = ["F", "M"] }
weight = "float"
height = "float"

[tables.p.derived]
bmi = { expr = "weight / ((height / 100) * (height / 100))", grid = [10, 60, 0.1] }
[tables.p.derived.obese]
expr = "CASE WHEN weight / ((height / 100) * (height / 100)) >= 30 THEN 'yes' ELSE 'no' END"
type = "text"
domain = ["no", "yes"]
"""
INLINE = "weight / ((height / 100) * (height / 100))"


def _schema(tmp_path: Path, text: str = SCHEMA) -> object:
    path = tmp_path / "schema.toml"
    path.write_text(text)
    return load_schema_file(path)


@pytest.fixture
def consortium(tmp_path: Path) -> Consortium:
    rng = np.random.default_rng(11)
    frames = {}
    for s, n in enumerate((120, 200, 90)):
        frames[f"site{s}"] = {
            "p": pd.DataFrame(
                {
                    "pid": [f"s{s}-{i}" for i in range(n)],
                    "sex": rng.choice(["F", "M"], n),
                    "weight": np.where(rng.random(n) < 0.05, np.nan, rng.normal(78, 14, n)),
                    "height": rng.normal(171, 9, n),
                }
            )
        }
    schema = _schema(tmp_path)
    return Consortium(frames, schema, DisclosureRules(min_cell_size=5))  # type: ignore[arg-type]


def test_derived_column_answers_like_pandas(consortium: Consortium) -> None:
    """AVG, SUM, COUNT and a standard deviation of BMI per sex, and a GROUP BY on a derived
    category, equal pandas on the pooled rows with BMI computed there."""
    pooled = consortium.pooled["p"].assign(bmi=lambda d: d.weight / (d.height / 100) ** 2)
    out = consortium.query(
        "SELECT sex, COUNT(bmi) AS n, AVG(bmi) AS m, SUM(bmi) AS s, STDDEV(bmi) AS sd FROM p GROUP BY sex"
    )
    for sex, grp in pooled.groupby("sex"):
        row = out[out.sex == sex]
        assert row.n.item() == grp.bmi.count()
        assert row.m.item() == pytest.approx(grp.bmi.mean(), rel=1e-5)
        assert row.s.item() == pytest.approx(grp.bmi.sum(), rel=1e-5)
        assert row.sd.item() == pytest.approx(grp.bmi.std(), rel=1e-4)
    groups = consortium.query("SELECT obese, COUNT(*) AS n FROM p GROUP BY obese")
    truth = pooled.assign(obese=np.where(pooled.bmi >= 30, "yes", "no")).groupby("obese").size()
    assert dict(zip(groups.obese, groups.n, strict=True)) == truth.to_dict()


def test_inline_product_is_still_refused(consortium: Consortium) -> None:
    """The same product written by the analyst inside an aggregate is refused (it lets per-row
    values be engineered); the declared column's local SQL carries it instead."""
    with pytest.raises(UnsupportedQuery, match=r"multiplies columns|divides by a column"):
        consortium.query(f"SELECT AVG({INLINE}) AS m FROM p")
    plan = compile_query("SELECT AVG(bmi) FROM p", consortium.schema, consortium.rules, tuple(consortium.cons))
    assert "p.weight / ((p.height / 100) * (p.height / 100))" in plan.data["local"][0]["sql"]


def test_derived_columns_follow_site_rules(consortium: Consortium) -> None:
    """A derived column reads around no site rule: it is refused where a column it reads is not
    exposed or is an identifier."""
    exposed = {"p": frozenset({"pid", "sex", "weight", "bmi"})}
    rules = DisclosureRules(exposed=exposed)
    with pytest.raises(PolicyRefusal, match="height"):
        compile_query("SELECT AVG(bmi) FROM p", consortium.schema, rules, tuple(consortium.cons))
    rules = DisclosureRules(identifiers=frozenset({"p.weight"}))
    with pytest.raises(PolicyRefusal, match="identifier"):
        compile_query("SELECT AVG(bmi) FROM p", consortium.schema, rules, tuple(consortium.cons))


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('"weight / heigth"', "unknown column"),
        ('"hash(weight)"', "HASH"),
        ('"SUM(weight)"', "aggregate"),
        ('"LENGTH(pid)"', "person column"),
        ('"bmi2 * 2"', "unknown column"),
        ('"1 + 2"', "expression over the table's columns"),
        ('"(SELECT 1)"', "expression over the table's columns"),
        ('{ expr = "weight", person = true }', "person"),
        ('{ type = "float" }', "expression"),
        # a condition would make SUM of the column a count of the persons meeting it, unchecked
        ('"CASE WHEN weight IS NULL THEN 0 ELSE 1 END"', "not a condition"),
        ('"IF(weight > 100, 1, 0)"', "not a condition"),
        ('"CAST(weight > 100 AS INTEGER)"', "not a condition"),
        ('"weight * CAST(height BETWEEN 150 AND 160 AS INTEGER)"', "not a condition"),
        ('"CAST(NOT (weight IN (70, 80)) AS INTEGER)"', "not a condition"),
    ],
)
def test_schema_refuses_bad_derived_columns(tmp_path: Path, expr: str, why: str) -> None:
    text = SCHEMA.split("[tables.p.derived]")[0] + f"[tables.p.derived]\nbmi2 = {expr}\n"
    with pytest.raises(ConfigError, match=why):
        _schema(tmp_path, text)


def test_a_derived_name_may_not_shadow_a_stored_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stored column"):
        _schema(tmp_path, SCHEMA.split("[tables.p.derived]")[0] + '[tables.p.derived]\nweight = "height * 2"\n')


def test_derived_column_through_real_agents(declared: Running) -> None:
    """Three real agents, the derived column in the consortium's schema.toml: its mean per sex
    equals pandas, and the analyst's own inline version is refused."""
    pooled = declared.pooled.assign(karno_mean=lambda d: (d.ph_karno + d.pat_karno) / 2)
    out = declared.client.query("SELECT sex, COUNT(karno_mean) AS n, AVG(karno_mean) AS m FROM lung GROUP BY sex")
    for sex, grp in pooled.groupby("sex"):
        row = out[out.sex == sex]
        assert row.n.item() == grp.karno_mean.count()
        assert row.m.item() == pytest.approx(grp.karno_mean.mean(), rel=1e-6)
    with pytest.raises(Exception, match="combines several columns"):
        declared.client.query("SELECT AVG((ph_karno + pat_karno) / 2) AS m FROM lung")


def test_a_derived_column_that_raises_is_null_not_a_failure(tmp_path: Path) -> None:
    """A derived key whose expression raises on one row (an integer modulo by zero) puts that
    row in the key's (other) cell instead of failing the query only when such a row exists
    (an oracle); the other rows count as in pandas."""
    text = """
[tables.t]
pid = { type = "text", person = true }
a = "integer"
b = "integer"

[tables.t.derived]
r = { expr = "a % b", type = "integer", domain = [0, 1] }
"""
    frames = {
        f"site{s}": {"t": pd.DataFrame({"pid": [f"{s}-{i}" for i in range(20)], "a": range(20), "b": [2] * 20})}
        for s in range(3)
    }
    frames["site1"]["t"].loc[0, "b"] = 0
    c = Consortium(frames, _schema(tmp_path, text), DisclosureRules(min_cell_size=5))  # type: ignore[arg-type]
    out = c.query("SELECT r, COUNT(*) AS n FROM t GROUP BY r")
    pooled = c.pooled["t"]
    fine = pooled[pooled.b != 0]
    counts = dict(zip(out.r, out.n, strict=True))
    assert counts[0] == int((fine.a % fine.b == 0).sum()) and counts[1] == int((fine.a % fine.b == 1).sum())
