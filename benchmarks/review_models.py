"""Output review of models: what opening a held model's sizes as bands costs.

    PYTHONPATH=. python benchmarks/review_models.py

Each model is compiled once under a policy with ``review = "auto"`` and once with
``review = "dpo"`` (then its program opens its persons, events or BY groups as bands for the
DPO, ``site_agent/privacy/bands.py``), and run in process on the lung data split by
institution; rounds and bytes of the whole session (docs/benchmarks.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from site_agent.agent.planning import compile_query
from site_agent.models.statement import execute
from site_agent.policy import Policy, combine, load_policy
from site_agent.query.schema_file import load_schema_file
from tests.lung import LUNG_SCHEMA, lung_by_site

MODELS = (
    "LINEAR wt_loss ~ age + C(sex) + ph_karno FROM lung",
    "LOGISTIC status = 2 ~ age + C(sex) + ph_ecog FROM lung",
    "VALIDATE LOGISTIC status = 2 ~ 1.2 + 0.01*age - 0.5*C(sex)[2] + 0.3*ph_ecog FROM lung BY sex",
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
    for text in MODELS:
        for review in ("auto", "dpo"):
            plan = compile_query(text, schema, combine([_policy(folder, review)]), sites=tuple(sites)).plan
            frame = execute(plan, sites)
            print(f"{review:<8} {frame.attrs['rounds']:>6} {frame.attrs['bytes']:>11,}  {text}")


if __name__ == "__main__":
    main()
