"""Two hospitals and a neutral compute member that holds no data, as real agents over TLS.

The lung data is split in two hospitals (east: institutions 1-11, west: the rest); the third
committee member, ``neutral``, has ``data = false``: no tables, its policy has no table rules
but a larger minimum cell size. Pooled and per-site results must equal pandas on the two
hospitals' rows, SITE must list the two hospitals only, the neutral member's rules other than
table rules must count, and the hospitals' column rules alone decide what is usable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import Consortium, QueryFailed
from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium
from site_agent.config import load_agent, load_consortium

from ..lung import LUNG_SCHEMA, lung_by_site
from ..query.quantile_reference import coarsened_type7
from .conftest import COLUMNS

HOSPITALS = ("east", "west")
NEUTRAL = "neutral"
NEUTRAL_MIN_CELL = 12


@dataclass
class TwoHospitals:
    config: Path
    procs: AgentProcesses
    frames: dict[str, pd.DataFrame]
    client: Consortium

    @property
    def pooled(self) -> pd.DataFrame:
        return pd.concat([df.assign(hospital=h) for h, df in self.frames.items()], ignore_index=True)

    def audit(self, site: str) -> list[dict[str, object]]:
        path = load_agent(self.config.parent / "sites" / site / "agent.toml").audit_log
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHospitals]:
    root = tmp_path_factory.mktemp("neutral")
    lung = pd.concat(list(lung_by_site().values()), ignore_index=True)
    frames = {"east": lung[lung.inst <= 11], "west": lung[lung.inst > 11]}
    (root / "data").mkdir()
    specs = []
    for site, df in frames.items():
        csv = root / "data" / f"{site}.csv"
        df.to_csv(csv, index=False)
        # east does not expose meal_cal; west exposes everything but the identifier.
        columns = [c for c in COLUMNS if c not in ("id", "meal_cal")] if site == "east" else None
        specs.append(SiteSpec(site, {"lung": TableSpec(csv, columns=columns, identifiers=["id"])}))
    specs.insert(
        1, SiteSpec(NEUTRAL, {}, data=False, min_cell_size=NEUTRAL_MIN_CELL)
    )  # committee order: east, neutral, west
    config = build_consortium(root / "consortium", specs, LUNG_SCHEMA)
    procs = AgentProcesses(config.parent, [s.name for s in specs]).start()
    client = Consortium.connect(config, "analyst")
    try:
        yield TwoHospitals(config, procs, frames, client)
    finally:
        client.close()
        procs.stop()


def test_the_consortium_file_names_the_neutral_member(two: TwoHospitals) -> None:
    cfg = load_consortium(two.config)
    assert cfg.require_committee() == ("east", NEUTRAL, "west")
    assert cfg.data_sites == HOSPITALS
    assert "data = false" in two.config.read_text()
    assert not load_agent(two.config.parent / "sites" / NEUTRAL / "agent.toml").tables


def test_pooled_statistics_equal_pandas_on_the_two_hospitals(two: TwoHospitals) -> None:
    before = len(two.audit(NEUTRAL))
    out = two.client.query(
        "SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(time) AS sd_time, MEDIAN(age) AS median_age "
        "FROM lung GROUP BY sex"
    )
    got = out.set_index("sex")
    pooled = two.pooled
    assert len(got) == 2
    for sex, grp in pooled.groupby("sex"):
        row = got.loc[sex]
        assert row["n"] == len(grp)
        np.testing.assert_allclose(row["mean_age"], grp.age.mean(), rtol=1e-6)
        np.testing.assert_allclose(row["sd_time"], grp.time.std(), rtol=1e-6)
        # k persons share the median's bins (docs/privacy-quantiles.md); k is the neutral member's
        assert row["median_age"] == coarsened_type7(grp.age, 0.5, (30, 90, 1), NEUTRAL_MIN_CELL).value
    assert {r["site"] for r in out.attrs["receipts"]} == {"east", NEUTRAL, "west"}
    # The neutral member computed on shares and recorded the query like any member.
    entries = two.audit(NEUTRAL)[before:]
    assert [(e["decision"], e["analyst"]) for e in entries] == [("accepted", "analyst")]
    assert "COUNT(*)" in str(entries[0]["query"])


def test_site_breakdown_lists_the_hospitals_only(two: TwoHospitals) -> None:
    out = two.client.query("SELECT SITE AS hospital, COUNT(*) AS n, AVG(age) AS mean_age FROM lung GROUP BY hospital")
    assert out["hospital"].tolist() == list(HOSPITALS)
    got = out.set_index("hospital")
    for hospital, grp in two.pooled.groupby("hospital"):
        assert got.loc[hospital, "n"] == len(grp)
        np.testing.assert_allclose(got.loc[hospital, "mean_age"], grp.age.mean(), rtol=1e-6)


def test_the_neutral_members_min_cell_size_counts(two: TwoHospitals) -> None:
    out = two.client.query(
        "SELECT SITE AS hospital, sex, ph_ecog, COUNT(*) AS n FROM lung WHERE ph_ecog IS NOT NULL "
        "GROUP BY hospital, sex, ph_ecog"
    )
    got = out.set_index(["hospital", "sex", "ph_ecog"])
    rows = two.pooled.dropna(subset=["ph_ecog"]).astype({"ph_ecog": int})
    counts = rows.groupby(["hospital", "sex", "ph_ecog"]).size()
    small = counts[(counts >= 5) & (counts < NEUTRAL_MIN_CELL)]
    assert len(small) > 0  # e.g. east, sex 2, ph_ecog 2: 10 rows, released by the hospitals' 5 alone
    for key in small.index:
        assert got.loc[key, "n"] == f"<{NEUTRAL_MIN_CELL}"
    assert got.loc[("east", 1, 1), "n"] == counts.loc[("east", 1, 1)]


def test_a_column_only_a_hospital_restricts_is_refused_naming_it(two: TwoHospitals) -> None:
    before = len(two.audit(NEUTRAL))
    with pytest.raises(QueryFailed) as err:
        two.client.query("SELECT AVG(meal_cal) AS m FROM lung")
    assert (err.value.site, err.value.category, err.value.rule) == ("east", "policy", "columns")
    assert [e["decision"] for e in two.audit(NEUTRAL)[before:]] == ["refused"]
    # west exposes every column and the neutral member has no table rules: wt_loss is usable.
    out = two.client.query("SELECT COUNT(*) AS n, AVG(wt_loss) AS w FROM lung")
    np.testing.assert_allclose(out["w"].iloc[0], two.pooled.wt_loss.mean(), rtol=1e-6)
