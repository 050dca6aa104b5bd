"""Optional release options of site policy (docs/privacy.md, "Options per site policy"), run in
process against pandas on the pooled data: redaction at or below N, and how two sites'
policies combine (the strictest wins)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from site_agent.errors import ConfigError
from site_agent.policy.model import Policy, combine, load_policy, render_policy_template
from site_agent.query import DisclosureRules, compile_query, explain, schema_from_duckdb

from ..query.conftest import Consortium, _connections

GROUPS = list(range(8))


def _frames(sizes: dict[int, tuple[int, int, int]]) -> dict[str, dict[str, pd.DataFrame]]:
    """Three sites; group g holds sizes[g][s] persons at site s."""
    frames = {}
    for s in range(3):
        g = [grp for grp, per_site in sizes.items() for _ in range(per_site[s])]
        frames[f"site{s}"] = {"t": pd.DataFrame({"pid": [f"s{s}-{i}" for i in range(len(g))], "g": g})}
    return frames


def _consortium(sizes: dict[int, tuple[int, int, int]], rules: DisclosureRules) -> Consortium:
    frames = _frames(sizes)
    con = _connections({"probe": frames["site0"]})["probe"]
    schema = schema_from_duckdb(con, domains={"t.g": GROUPS}, persons={"t": "pid"})
    return Consortium(frames, schema, rules)


def _released(result: pd.DataFrame, column: str) -> dict[int, object]:
    return dict(zip(result["g"], result[column], strict=True))


# group -> persons per site; totals 0, 3, 5, 6, 7, 8, 9, 20
SIZES = {0: (0, 0, 0), 1: (1, 1, 1), 2: (2, 2, 1), 3: (2, 2, 2), 4: (3, 2, 2), 5: (3, 3, 2), 6: (3, 3, 3), 7: (7, 7, 6)}


@pytest.mark.parametrize("redact", [0, 6, 7])
def test_redaction_boundary(redact: int) -> None:
    """With k = 5 and redact_at_or_below = N, counts 1..max(4, N) are withheld, N + 1 and above
    released exactly, 0 released as 0."""
    c = _consortium(SIZES, DisclosureRules(min_cell_size=5, redact_at_or_below=redact))
    got = _released(c.query("SELECT g, COUNT(*) AS n, AVG(g) AS m FROM t GROUP BY g"), "n")
    truth = c.pooled["t"].groupby("g").size().reindex(GROUPS, fill_value=0)
    cut = max(5, redact + 1)
    for g, n in truth.items():
        if n == 0 or n >= cut:
            assert got[g] == n, (g, n)
        else:
            assert got[g] == f"<{cut}", (g, n)
    assert sum(isinstance(v, str) for v in got.values()) == int(((truth > 0) & (truth < cut)).sum())


def test_redaction_in_plan_and_explain() -> None:
    """The option enters the plan (so its digest covers it) and --explain names it."""
    c = _consortium(SIZES, DisclosureRules(min_cell_size=5, redact_at_or_below=7))
    plan = compile_query("SELECT g, COUNT(*) FROM t GROUP BY g", c.schema, c.rules, tuple(c.cons))
    off = dataclasses.replace(c.rules, redact_at_or_below=0)
    plain = compile_query("SELECT g, COUNT(*) FROM t GROUP BY g", c.schema, off, tuple(c.cons))
    assert plan.data["params"]["redact_at_or_below"] == 7
    assert plan.data["params"]["min_cell_size"] == 8
    assert plan.digest() != plain.digest()
    assert "redact_at_or_below" in explain(plan)


def test_combine_strictest_wins() -> None:
    a = Policy("a", min_cell_size=10, redact_at_or_below=3)
    b = Policy("b", min_cell_size=5, redact_at_or_below=7)
    both = combine([a, b])
    assert (both.min_cell_size, both.redact_at_or_below) == (10, 7)
    assert Policy.from_json("x", both.to_json()).redact_at_or_below == 7
    assert [combine([p]).redact_at_or_below for p in (a, b)] == [3, 7]


def test_policy_toml_options(tmp_path: Path) -> None:
    """The template parses with the option off; a set option is read, a negative one refused."""
    path = tmp_path / "policy.toml"
    path.write_text(render_policy_template("a"))
    assert load_policy(path, "a").redact_at_or_below == 0
    path.write_text(render_policy_template("a").replace("redact_at_or_below = 0", "redact_at_or_below = 7"))
    assert load_policy(path, "a").redact_at_or_below == 7
    path.write_text(render_policy_template("a").replace("redact_at_or_below = 0", "redact_at_or_below = -1"))
    with pytest.raises(ConfigError, match="redact_at_or_below"):
        load_policy(path, "a")
