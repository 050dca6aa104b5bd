"""Query text from explorer choices: quoting, validation against the schema, and real compilation."""

from collections.abc import Callable

import pandas as pd
import pytest

from mpc_jupyter.widgets.querytext import CohortQuery, quote_identifier, quote_literal
from site_agent.query.catalog import Schema


def test_quoting() -> None:
    assert quote_identifier('we"ird') == '"we""ird"'
    assert quote_literal("it's") == "'it''s'"
    assert quote_literal("x'); DROP TABLE patients; --") == "'x''); DROP TABLE patients; --'"
    assert (quote_literal(True), quote_literal(3), quote_literal(2.5), quote_literal(None)) == (
        "TRUE",
        "3",
        "2.5",
        "NULL",
    )
    with pytest.raises(ValueError, match=r"^nan is not a literal$"):
        quote_literal(float("nan"))


def test_text_of_a_grouped_proportion() -> None:
    query = CohortQuery("admissions", ("ward",), {"period": ("2021-Q1", "2021-Q2")}, "proportion", "readmitted_30d")
    assert query.text() == (
        'SELECT "ward", COUNT(*) AS "n", PROPORTION("readmitted_30d") AS "proportion_readmitted_30d"\n'
        'FROM "admissions"\n'
        "WHERE \"period\" IN ('2021-Q1', '2021-Q2')\n"
        'GROUP BY "ward"'
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (CohortQuery("nope"), "unknown table"),
        (CohortQuery("patients", ("bmi",)), "no public domain"),
        (CohortQuery("patients", (), {"region": ("XX9",)}), "from its domain"),
        (CohortQuery("patients", (), {}, "median", "sex"), "median needs one of"),
        (CohortQuery("patients", (), {}, "proportion", "age"), "proportion needs one of"),
        (CohortQuery("patients", (), {}, "mode", "age"), "unknown measure"),
    ],
)
def test_choices_outside_the_schema_are_refused(schema: Schema, query: CohortQuery, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        query.check(schema)


def test_the_text_runs_and_matches_pandas(
    schema: Schema, run_query: Callable[[str], pd.DataFrame], sites: dict
) -> None:
    query = CohortQuery("patients", ("sex",), {"smoker": (True,)}, "avg", "bmi")
    query.check(schema)
    got = run_query(query.text()).set_index("sex")
    pooled = pd.concat([con.execute("SELECT * FROM patients").df() for con in sites.values()])
    want = pooled[pooled.smoker].groupby("sex").bmi.agg(["size", "mean"])
    assert got.n.astype(int).tolist() == want["size"].tolist()
    assert got.avg_bmi.astype(float).tolist() == pytest.approx(want["mean"].tolist(), rel=1e-6)
