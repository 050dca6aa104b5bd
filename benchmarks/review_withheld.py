"""Output review of withheld cells: what the ``review_flags`` step costs when a cell is withheld.

    python benchmarks/review_withheld.py

The lung data split over three sites (as the tests do), each query planned once under a
policy with ``review = "auto"`` and once with ``review = "failing"``, and run in process
(``site_agent.query.execute``: the three members' MPC in one process). Both queries withhold a
cell (ph_ecog 3 holds one patient), so the ``"failing"`` plan computes the flags a DPO's
approval would leave and opens them; a query without a withheld cell costs the same under
both. Prints rounds (most any member takes) and bytes (all members together); counts, not times.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from site_agent.agent.planning import compile_query
from site_agent.policy import Policy, combine, load_policy
from site_agent.query.execute import execute
from site_agent.query.schema_file import load_schema_file
from tests.lung import LUNG_SCHEMA, lung_by_site

QUERIES = (
    "SELECT ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ph_ecog",
    "SELECT sex, ph_ecog, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY ROLLUP(sex, ph_ecog)",
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
    print(f"{'review':<8} {'rounds':>6} {'bytes':>9}  query")
    for text in QUERIES:
        for review in ("auto", "failing"):
            plan = compile_query(text, schema, combine([_policy(folder, review)]), sites=tuple(sites)).plan
            frame = execute(plan, sites)
            print(f"{review:<8} {frame.attrs['rounds']:>6} {frame.attrs['bytes']:>9,}  {text}")


if __name__ == "__main__":
    main()
