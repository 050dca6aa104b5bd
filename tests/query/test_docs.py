"""Every example in docs/query-language.md runs and returns a result."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "query-language.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), flags=re.S)
SQL = [body for lang, body in BLOCKS if lang == "sql"]


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    (code,) = [body for lang, body in BLOCKS if lang == "python"]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def test_every_construct_has_an_example() -> None:
    text = "\n".join(SQL).upper()
    for construct in (
        "ROLLUP", "CUBE", "JOIN", " IN (", "BETWEEN", "LIKE", "IS NOT NULL", "NOT ", " OR ", "CASE WHEN",
        "DATE_DIFF", "INTERVAL", "EXTRACT", "COUNT(*)", "COUNT(SBP)", "COUNT(DISTINCT", "SUM(", "AVG(",
        "VARIANCE(", "STDDEV(", "STDDEV_POP(", "MEDIAN(", "QUANTILE_CONT(", "PERCENTILE_CONT(", "MIN(", "MAX(",
        "PROPORTION(", "RATE(", "SITE", "HAVING", "ORDER BY", "LIMIT", "OFFSET", "NULLS FIRST",
    ):  # fmt: skip
        assert construct in text, construct


@pytest.mark.parametrize("text", SQL, ids=[f"example{i}" for i in range(len(SQL))])
def test_example_runs(setup: dict[str, Any], text: str) -> None:
    out = setup["run"](text)
    assert isinstance(out, pd.DataFrame) and len(out) >= 1
    assert out.attrs["plan_digest"]
    plan = setup["compile_query"](text, setup["schema"], setup["rules"], tuple(setup["sites"]))
    assert "Reveal points" in setup["explain"](plan)
