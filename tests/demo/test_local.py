"""The demo consortium on disk: schema domains cover the data; reuse, replace and refusal."""

from pathlib import Path

import pytest

from mpc_jupyter.demo.data import generate_site
from mpc_jupyter.demo.local import MARKER, DemoSettings, prepare_demo, read_marker
from mpc_jupyter.demo.schema import GRIDS, demo_schema_toml, domains
from site_agent.errors import ConfigError
from site_agent.query.schema_file import load_schema_file


def test_domains_cover_every_generated_value(tmp_path: Path) -> None:
    keys = domains()
    for site in ("north", "central", "south"):
        for table, frame in generate_site(site, patients=3000, seed=3).items():
            for column in frame.columns:
                if f"{table}.{column}" in keys:
                    assert set(frame[column].unique()) <= set(keys[f"{table}.{column}"]), (table, column)
                if f"{table}.{column}" in GRIDS:
                    lo, hi, _ = GRIDS[f"{table}.{column}"]
                    assert lo <= frame[column].min() and frame[column].max() <= hi, (table, column)
    path = tmp_path / "schema.toml"
    path.write_text(demo_schema_toml())
    schema = load_schema_file(path)
    assert schema.tables["admissions"].columns["readmitted_30d"].domain == (False, True)
    assert schema.tables["labs"].columns["value"].grid == (0.0, 1000.0, 0.1)


def test_reuse_replace_and_refuse(tmp_path: Path) -> None:
    said: list[str] = []
    folder = tmp_path / "demo"
    first = prepare_demo(folder, DemoSettings(200), say=said.append)
    assert not first.reused and first.path.exists() and all(p.exists() for p in first.data_files("admissions"))
    assert read_marker(folder) == (DemoSettings(200), True)
    again = prepare_demo(folder, DemoSettings(200), say=said.append)
    assert again.reused and said[-1].startswith("reusing")
    (folder / "stale-file").write_text("from the first run")
    fresh = prepare_demo(folder, DemoSettings(200), fresh=True, say=said.append)
    assert not fresh.reused and not (folder / "stale-file").exists()
    other = prepare_demo(folder, DemoSettings(300, seed=9), say=said.append)  # different settings: replaced
    assert not other.reused and read_marker(folder) == (DemoSettings(300, seed=9), True)
    (folder / MARKER).unlink()
    with pytest.raises(ConfigError, match="not a demo consortium"):
        prepare_demo(folder, DemoSettings(300, seed=9), say=said.append)
