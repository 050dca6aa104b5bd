"""``SELECT ... FROM cohort c LINK outcome a``: compiling, refusals, and the whole statement (each
site's local step on its own DuckDB and keys file, the committee's program, the analyst's
assembly) in one process against pandas on the pooled tables."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.agent.planning import compile_query
from site_agent.cli.linkage import write_keys
from site_agent.errors import PolicyRefusal, QueryError, UnsupportedQuery
from site_agent.linkage.cohort_statement import CohortCompiled, assemble, compile_cohort, is_cohort_query
from site_agent.linkage.declaration import Linkage
from site_agent.mpc.party import Party, Protocol, run_in_memory
from site_agent.mpc.shares import AShare
from site_agent.policy import Policy, combine, load_policy
from site_agent.query.catalog import Column, DisclosureRules, Schema, Table

LINKAGE = Linkage("registry", "pid", ("national_id",))
SCHEMA = Schema.of(
    [
        Table.of("registry", [Column("pid", "text", person=True), Column("age", "integer")]),
        Table.of(
            "admissions",
            [Column("pid", "text", person=True), Column("days", "integer"), Column("cost", "float")],
        ),
    ]
)
QUERY = (
    "SELECT COUNT(DISTINCT PERSON) AS persons, COUNT(*) AS n, SUM(a.days) AS total, AVG(a.days) AS mean "
    "FROM registry r LINK admissions a WHERE r.age >= 40 AND a.days > 1"
)


def compiled(text: str = QUERY, rules: DisclosureRules | None = None) -> CohortCompiled:
    return compile_cohort(text, LINKAGE, rules or DisclosureRules(), 3, SCHEMA)


def test_compiles_alike_and_explains_what_is_revealed() -> None:
    plan = compiled()
    assert plan.digest == compiled().digest and plan.labels == ["persons", "n", "total", "mean"]
    text = " ".join(plan.explain().split())
    assert "set sizes" in text and "no site learns which of its records matched" in text
    assert "r.age >= 40" in plan.data["cohort"]["sql"] and "a.days > 1" in plan.data["outcome"]["sql"]
    assert "a.days" not in plan.data["cohort"]["sql"] and "age" not in plan.data["outcome"]["sql"]
    assert "1 to 12 site records" in text
    assert is_cohort_query(QUERY) and not is_cohort_query("SELECT COUNT(*) FROM registry")
    assert not is_cohort_query("SELECT COUNT(link) FROM registry link")  # a name, not the keyword


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SELECT COUNT(*) FROM registry r LINK admissions a GROUP BY a.days", "GROUP BY"),
        ("SELECT COUNT(*) FROM registry r LINK admissions a ORDER BY 1", "ORDER BY"),
        ("SELECT MAX(a.days) FROM registry r LINK admissions a", "COUNT"),
        ("SELECT SUM(r.age) FROM registry r LINK admissions a", "outcome table"),
        ("SELECT SUM(a.days), SUM(a.cost) FROM registry r LINK admissions a", "one column"),
        ("SELECT SUM(a.cost) FROM registry r LINK admissions a", "integer"),
        ("SELECT COUNT(*) FROM registry r LINK admissions a WHERE days > 1", "qualified"),
        ("SELECT COUNT(*) FROM registry r LINK admissions a WHERE r.age > a.days", "one table"),
        ("SELECT COUNT(*) FROM registry r LINK admissions a JOIN registry q ON q.pid = r.pid", "two tables"),
        ("SELECT COUNT(*) FROM registry a LINK admissions a", "aliases"),
    ],
)
def test_what_it_does_not_take_is_refused_in_one_line(text: str, reason: str) -> None:
    with pytest.raises(UnsupportedQuery, match=reason) as err:
        compiled(text)
    assert "\n" not in str(err.value)


def test_the_where_is_validated_like_any_query_and_policy_options_refuse() -> None:
    with pytest.raises(QueryError, match="nope"):
        compiled("SELECT COUNT(*) FROM registry r LINK admissions a WHERE a.nope = 1")
    with pytest.raises(QueryError, match="pid"):
        compiled("SELECT COUNT(*) FROM registry r LINK admissions a WHERE r.pid = 'x'")
    with pytest.raises(UnsupportedQuery, match="round_counts"):
        compiled(rules=DisclosureRules(round_counts=5))
    with pytest.raises(UnsupportedQuery, match="linkage"):
        compile_cohort(QUERY, None, DisclosureRules(), 3, SCHEMA)


def site_tables(seed: int) -> list[dict[str, pd.DataFrame]]:
    """Three sites: national ids 0..399, local patient numbers; the registry at sites 0 and 1
    (some persons at both), admissions everywhere, several per person, some days NULL."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(3):
        reg = np.flatnonzero(rng.random(400) < (0.35 if s < 2 else 0.0))
        seen = np.flatnonzero(rng.random(400) < 0.5)
        adm = np.repeat(seen, rng.integers(1, 4, seen.size))
        days = rng.integers(0, 30, adm.size).astype(float)
        days[rng.random(adm.size) < 0.1] = np.nan
        out.append(
            {
                "registry": pd.DataFrame({"pid": [f"s{s}-{i}" for i in reg], "nid": reg, "age": 20 + reg % 60}),
                "admissions": pd.DataFrame(
                    {"pid": [f"s{s}-{i}" for i in adm], "nid": adm, "days": pd.array(days, dtype="Int64")}
                ),
            }
        )
    return out


def pandas_answer(sites: list[dict[str, pd.DataFrame]]) -> dict[str, float]:
    reg = pd.concat([s["registry"] for s in sites])
    adm = pd.concat([s["admissions"] for s in sites])
    cohort = set(reg[reg["age"] >= 40]["nid"])
    linked = adm[(adm["days"] > 1).fillna(False) & adm["nid"].isin(cohort)]
    return {
        "persons": linked["nid"].nunique(),
        "n": len(linked),
        "total": int(linked["days"].sum()),
        "mean": float(linked["days"].mean()),
    }


def run_statement(plan: CohortCompiled, sites: list[dict[str, pd.DataFrame]], folder: Path) -> pd.DataFrame:
    mine = []
    for s, tables in enumerate(sites):
        con = duckdb.connect()
        for name, frame in tables.items():
            con.register(f"{name}_frame", frame.drop(columns="nid"))
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_frame")
        persons = pd.concat([t[["pid", "nid"]] for t in tables.values()]).drop_duplicates()
        keys_file = folder / f"keys{s}.duckdb"
        # the linkage key of a national id: any injective 64-bit value serves here
        write_keys(keys_file, pd.Index(persons["pid"]), (persons["nid"].to_numpy() * 7919 + 13).astype(np.uint64))
        mine.append(plan.local(con, keys_file))

    def program(p: Party) -> Protocol[tuple[AShare, dict]]:
        return (yield from plan.program(p, mine[p.index][0]))

    results, _ = run_in_memory(program)
    return assemble(results[0][1], [r[0] for r in results])


def test_the_statement_equals_pandas_on_the_pooled_tables(tmp_path: Path) -> None:
    sites = site_tables(3)
    frame = run_statement(compiled(), sites, tmp_path)
    expected = pandas_answer(sites)
    got = frame.iloc[0].to_dict()
    assert {k: got[k] for k in ("persons", "n", "total")} == {k: expected[k] for k in ("persons", "n", "total")}
    assert got["mean"] == pytest.approx(expected["mean"])
    assert frame.attrs["suppressed"]["n"] == [False]


def test_k_minus_one_linked_persons_withhold_everything(tmp_path: Path) -> None:
    # The cohort narrowed to ages 40 and 41: a few linked persons, with many linked rows. With k
    # one above their number every output is withheld; with k equal to it all are released.
    sites = site_tables(4)
    narrow = QUERY.replace("r.age >= 40", "r.age >= 40 AND r.age <= 41")
    few = pandas_answer([{**s, "registry": s["registry"][s["registry"]["age"] <= 41]} for s in sites])
    assert few["n"] > few["persons"] > 1
    k = few["persons"] + 1
    frame = run_statement(compiled(narrow, DisclosureRules(min_cell_size=k)), sites, tmp_path)
    assert frame.iloc[0].isna().all() and frame.attrs["suppressed"]["persons"] == [True]
    frame = run_statement(compiled(narrow, DisclosureRules(min_cell_size=k - 1)), sites, tmp_path)
    assert frame.iloc[0]["persons"] == few["persons"] and frame.iloc[0]["n"] == few["n"]


def test_the_local_step_gives_each_sites_records_and_its_two_query_sets(tmp_path: Path) -> None:
    keys_file = tmp_path / "linkage.duckdb"
    write_keys(keys_file, pd.Index(["a", "b", "c"]), np.array([11, 12, 13], dtype=np.uint64))
    con = duckdb.connect()
    con.execute("CREATE TABLE registry AS SELECT * FROM (VALUES ('a', 50), ('b', 20), ('e', 60)) t(pid, age)")
    con.execute(
        "CREATE TABLE admissions AS SELECT * FROM "
        "(VALUES ('a', 3, 1.0), ('a', NULL, 1.0), ('a', 5, 1.0), ('c', 2, 1.0), ('e', 9, 1.0)) t(pid, days, cost)"
    )
    plan = compiled("SELECT SUM(a.days), COUNT(*) FROM registry r LINK admissions a WHERE r.age >= 40")
    records, members = plan.local(con, keys_file)
    assert records.cohort.tolist() == [11]  # e has no key; b is outside the WHERE
    assert records.outcome.tolist() == [11, 13]
    assert records.sums.tolist() == [[3, 1], [2, 1], [8, 2]]  # rows, non-NULL days, sum of days
    assert members.sizes().tolist() == [[1], [2]] and plan.opened({}).tolist() == [[True], [True]]
    nothing, nobody = plan.local(con, keys_file, holds_data=False)
    assert nothing.sizes == (0, 0) and nothing.sums.shape == (3, 0) and nobody.sizes().tolist() == [[0], [0]]


POLICY = """
[policy]
analysts = "*"

[privacy]
{privacy}

[tables.registry]
columns = "*"

[tables.admissions]
columns = "*"
"""


def test_dp_and_output_review_refuse_it_saying_why(tmp_path: Path) -> None:
    def policy(site: str, privacy: str) -> Policy:
        path = tmp_path / f"{site}.toml"
        path.write_text(POLICY.format(privacy=privacy))
        return load_policy(path, site)

    both = policy("north", 'mode = "both"\nepsilon_per_query = 1.0\nepsilon = 10.0')
    assert isinstance(compile_query(QUERY, SCHEMA, combine([both]), linkage=LINKAGE), CohortCompiled)
    with pytest.raises(UnsupportedQuery, match="answered exactly"):
        compile_query(QUERY, SCHEMA, combine([both]), {"@dp": {"epsilon": 1.0}}, linkage=LINKAGE)
    with pytest.raises(PolicyRefusal, match="record-linkage flow") as refused:
        compile_query(QUERY, SCHEMA, combine([both, policy("south", 'review = "dpo"')]), linkage=LINKAGE)
    assert refused.value.rule == "review"
