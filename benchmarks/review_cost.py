"""Output review: what holding a result for a data-protection officer costs, in rounds and bytes.

    PYTHONPATH=. python benchmarks/review_cost.py

The lung data split over three sites (as the tests do). Each statement is planned once under a
policy with ``review = "auto"`` and once under the review mode that changes its plan, and run in
process (the three members' MPC in one process). Prints rounds (most any member takes) and bytes
(all members together); counts, not times (docs/benchmarks.md).

* Aggregates with a withheld cell (ph_ecog 3 holds one patient) under ``review = "failing"``: the
  plan computes the flags a DPO's approval would leave and opens them (the ``review_flags``
  step); a query without a withheld cell costs the same under both.
* Models under ``review = "dpo"``: the program opens its persons, events or BY groups as size
  bands for the DPO (``site_agent/privacy/bands.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from site_agent.agent.planning import compile_query
from site_agent.models.statement import execute as execute_model
from site_agent.policy import Policy, combine, load_policy
from site_agent.query.execute import execute as execute_query
from site_agent.query.schema_file import load_schema_file
from tests.lung import LUNG_SCHEMA, lung_by_site

STATEMENTS = (
    ("failing", execute_query, "SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog"),
    (
        "failing",
        execute_query,
        "SELECT sex, ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ROLLUP(sex, ph_ecog)",
    ),
    ("dpo", execute_model, "LINEAR wt_loss ~ age + C(sex) + ph_karno FROM lung"),
    ("dpo", execute_model, "LOGISTIC status = 2 ~ age + C(sex) + ph_ecog FROM lung"),
    (
        "dpo",
        execute_model,
        "VALIDATE LOGISTIC status = 2 ~ 1.2 + 0.01*age - 0.5*C(sex)[2] + 0.3*ph_ecog FROM lung BY sex",
    ),
)


def _policy(folder: Path, review: str) -> Policy:
    path = folder / f"{review}.toml"
    path.write_text(
        f'[policy]\nanalysts = "*"\n[privacy]\nreview = "{review}"\n'
        '[tables.lung]\ncolumns = "*"\nidentifiers = ["id"]\n'
    )
    return load_policy(path, review)


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    (folder / "schema.toml").write_text(LUNG_SCHEMA)
    schema = load_schema_file(folder / "schema.toml")
    sites = {}
    for site, frame in lung_by_site().items():
        con = duckdb.connect()
        con.register("frame", frame)
        con.execute("CREATE TABLE lung AS SELECT * FROM frame")
        sites[site] = con
    print(f"{'review':<8} {'rounds':>6} {'bytes':>11}  statement")
    for mode, execute, text in STATEMENTS:
        for review in ("auto", mode):
            plan = compile_query(text, schema, combine([_policy(folder, review)]), sites=tuple(sites)).plan
            frame = execute(plan, sites)
            print(f"{review:<8} {frame.attrs['rounds']:>6} {frame.attrs['bytes']:>11,}  {text}")


if __name__ == "__main__":
    main()
