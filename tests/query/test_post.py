"""HAVING, ORDER BY, LIMIT/OFFSET and output names, against DuckDB on the pooled data.

The reference runs the same SQL on the pooled rows; where our answer suppresses a cell, the
reference says what the analyst would have seen without disclosure control, and the tests
check that the suppressed value takes no part (an attacker who varies a HAVING threshold
learns nothing about it).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from site_agent.errors import QueryError
from site_agent.query import compile_query

from .conftest import Consortium, K


@pytest.fixture(scope="module")
def pooled(generated: Consortium) -> Any:
    con = duckdb.connect()
    con.register("incoming", generated.pooled["patients"])
    con.execute("CREATE TABLE patients AS SELECT * FROM incoming")
    return con


def _reference(con: Any, text: str) -> pd.DataFrame:
    return con.execute(text).df()


def _rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in frame.itertuples(index=False)]


def test_names_are_kept_as_written(generated: Consortium, pooled: Any) -> None:
    text = (
        "SELECT Sex, ward AS wardName, COUNT(*) AS nPatients, AVG(bmi), PROPORTION(died = 1) AS pDied "
        "FROM patients GROUP BY Sex, wardName"
    )
    out = generated.query(text)
    assert list(out.columns) == ["Sex", "wardName", "nPatients", "AVG(bmi)", "pDied", "pDied_ci_low", "pDied_ci_high"]
    ref = _reference(pooled, "SELECT ward AS wardName, COUNT(*) AS nPatients FROM patients GROUP BY wardName")
    assert list(ref.columns) == ["wardName", "nPatients"]  # DuckDB keeps the case of aliases too
    assert set(out.attrs["suppressed"]) == {"nPatients", "AVG(bmi)", "pDied", "pDied_ci_low", "pDied_ci_high"}
    # GROUP BY position and the key written in another case than the schema's column.
    out = generated.query("SELECT WARD, COUNT(*) AS N FROM patients GROUP BY 1")
    assert list(out.columns) == ["WARD", "N"]


def test_names_differing_only_in_case_are_one_name(generated: Consortium) -> None:
    with pytest.raises(QueryError) as info:
        compile_query(
            "SELECT sex, COUNT(*) AS n, AVG(age) AS N FROM patients GROUP BY sex", generated.schema, generated.rules
        )
    assert "used twice" in str(info.value)


def test_having_order_limit_match_duckdb(generated: Consortium, pooled: Any) -> None:
    text = (
        "SELECT region, ward, COUNT(*) AS nPatients, AVG(bmi) AS meanBmi FROM patients "
        "GROUP BY region, ward HAVING COUNT(*) > 300 AND meanBmi < 29 ORDER BY nPatients DESC, 2 LIMIT 4 OFFSET 1"
    )
    out = generated.query(text)
    ref = _reference(pooled, text)
    assert out.attrs["suppressed"]["nPatients"] == [False] * len(out)
    assert out[["region", "ward", "nPatients"]].values.tolist() == ref[["region", "ward", "nPatients"]].values.tolist()
    np.testing.assert_allclose(out["meanBmi"].astype(float), ref["meanBmi"], rtol=1e-6)


def test_having_on_a_suppressed_cell_drops_the_row(generated: Consortium, pooled: Any) -> None:
    truth = _reference(pooled, "SELECT region, sex, COUNT(*) AS n FROM patients GROUP BY region, sex")
    small = truth[truth.n < K]
    assert len(small) >= 1  # the rare region gives cells below the minimum size
    # The attacker sweeps a HAVING threshold to bracket a suppressed count.
    seen = {}
    for t in [*range(1, 3 * K), 990, 1040, 1500]:
        out = generated.query(f"SELECT region, sex, COUNT(*) AS n FROM patients GROUP BY region, sex HAVING n < {t}")
        seen[t] = {(r, s) for r, s in zip(out.region, out.sex, strict=True)}
        expected = truth[(truth.n < t) & (truth.n >= K)]  # DuckDB's answer without the suppressed cells
        assert seen[t] == set(zip(expected.region, expected.sex, strict=True))
    assert any(seen.values())  # the sweep does list the released cells below each threshold
    for region, sex, n in small.itertuples(index=False):
        # What the threshold sweep tells about this cell: the smallest t that lists it (never).
        listed = [t for t, cells in seen.items() if (region, sex) in cells]
        assert listed == [] and n < K
    # NOT, OR and comparisons with the released columns keep SQL's three-valued logic.
    out = generated.query(
        "SELECT region, sex, COUNT(*) AS n FROM patients GROUP BY region, sex HAVING NOT n >= 5 OR sex = 'F'"
    )
    rows = set(zip(out.region, out.sex, strict=True))
    assert rows == {(r, s) for r, s, n in truth.itertuples(index=False) if s == "F"}


def test_order_by_puts_suppressed_values_last(generated: Consortium, pooled: Any) -> None:
    text = "SELECT region, sex, COUNT(*) AS n FROM patients GROUP BY region, sex ORDER BY n"
    out = generated.query(text)
    ref = _reference(pooled, "SELECT region, sex, CASE WHEN COUNT(*) >= 5 THEN COUNT(*) END AS n FROM patients "
                     "GROUP BY region, sex ORDER BY n NULLS LAST")  # fmt: skip
    known = ~ref.n.isna()
    assert out.n[known.to_numpy()].tolist() == ref.n[known].astype(int).tolist()
    assert out.attrs["suppressed"]["n"] == (~known).tolist()
    tail = out[~known.to_numpy()]
    assert set(zip(tail.region, tail.sex, strict=True)) == set(zip(ref.region[~known], ref.sex[~known], strict=True))
    first = generated.query(text + " DESC NULLS FIRST")
    assert first.attrs["suppressed"]["n"] == sorted(out.attrs["suppressed"]["n"], reverse=True)
    assert first.n[int((~known).sum()) :].tolist() == sorted(ref.n[known].astype(int), reverse=True)


def test_order_by_keys_with_rollup_margins_as_duckdb(generated: Consortium, pooled: Any) -> None:
    text = "SELECT ward, sex, COUNT(*) AS n FROM patients GROUP BY ROLLUP(ward, sex) ORDER BY ward DESC, sex"
    out = generated.query(text)
    ref = _reference(pooled, text).fillna("(all)")
    assert _rows(out) == _rows(ref)  # margins, NULL in SQL, come last as DuckDB puts them
    having = generated.query(
        "SELECT ward, sex, COUNT(*) AS n FROM patients GROUP BY ROLLUP(ward, sex) HAVING sex = 'F' ORDER BY 1"
    )
    assert list(having.ward) == ["cardio", "icu", "onco"] and set(having.sex) == {"F"}


def test_having_on_interval_limits_and_keys(generated: Consortium, pooled: Any) -> None:
    text = (
        "SELECT ward, smoker, PROPORTION(died = 1) AS mortality FROM patients GROUP BY ward, smoker "
        "HAVING mortality_ci_low > 0.1 AND ward IN ('cardio', 'onco') ORDER BY mortality DESC"
    )
    out = generated.query(text)
    ref = _reference(pooled, "SELECT ward, smoker, AVG(died) AS p, COUNT(*) AS n FROM patients GROUP BY ward, smoker")
    z = 1.959963984540054
    low = (ref.p + z * z / (2 * ref.n) - z * np.sqrt(ref.p * (1 - ref.p) / ref.n + z * z / (4 * ref.n**2))) / (
        1 + z * z / ref.n
    )  # Wilson's lower limit
    expected = ref[(low > 0.1) & ref.ward.isin(["cardio", "onco"])].sort_values("p", ascending=False)
    assert _rows(out[["ward", "smoker"]]) == _rows(expected[["ward", "smoker"]])


def test_post_processing_is_in_the_plan_and_its_digest(generated: Consortium) -> None:
    def plan(text: str) -> Any:
        return compile_query(text, generated.schema, generated.rules)

    base = plan("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex")
    limited = plan("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY n DESC LIMIT 1")
    assert "post" not in base.data
    assert limited.data["post"] == {
        "having": None,
        "order": [{"column": "n", "desc": True, "nulls_first": False}],
        "limit": 1,
        "offset": 0,
    }
    assert limited.digest() != base.digest()
    # No site computes anything more: local SQL, inputs, steps and reveals are the same.
    for part in ("local", "inputs", "steps", "reveals"):
        assert limited.data[part] == base.data[part]


def test_rows_left_out_were_opened_all_the_same(generated: Consortium) -> None:
    out = generated.query("SELECT ward, COUNT(*) AS n FROM patients GROUP BY ward ORDER BY n LIMIT 1")
    assert len(out) == 1 and out.attrs["opened"]["n"] == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex HAVING AVG(age) > 50", "add it to the select list"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex HAVING age > 50", "add it to the select list"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY ward", "ORDER BY may only use released"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY 3", "does not name a select item"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex HAVING n LIKE '1%'", "not supported in HAVING"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex HAVING hash(n) > 1", "function hash() is not allowed"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex LIMIT -1", "LIMIT takes a whole number"),
        ("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex LIMIT 1 OFFSET n", "OFFSET takes a whole number"),
    ],
)
def test_post_clauses_use_released_columns_only(generated: Consortium, text: str, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        compile_query(text, generated.schema, generated.rules)
    assert fragment in str(info.value) and info.value.line == 1


def test_consortium_is_importable_without_ipython() -> None:
    code = (
        "import sys; from mpc_jupyter import Consortium; from mpc_jupyter.client import Consortium as C; "
        "assert Consortium is C and 'IPython' not in sys.modules and callable(Consortium.connect)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
