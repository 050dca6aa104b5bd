"""The demo consortium on disk: three synthetic hospitals with keys, configs, policies and data.

``prepare_demo(folder, patients, seed)`` creates the consortium, or reuses the one already in
``folder`` when it was made with the same sites, size and seed, or replaces it cleanly with
``fresh=True`` (or when the size or seed differ). A folder is only ever deleted when it holds
the demo's marker file ``demo.json``, so ``--dir`` pointing at anything else is refused.

Layout::

    FOLDER/demo.json          what was generated (sites, patients, seed) and whether it completed
    FOLDER/consortium.toml    the consortium file the notebooks connect to (analyst "analyst")
    FOLDER/schema.toml        the public common schema (domains and grids)
    FOLDER/sites/SITE/        agent.toml, policy.toml and keys of each hospital
    FOLDER/data/SITE/*.parquet
    FOLDER/logs/SITE.log      the agents' logs while the demo runs
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from site_agent.errors import ConfigError

from . import omop
from .consortium import SiteSpec, TableSpec, build_consortium
from .data import DEFAULT_SEED, DEFAULT_SITES, TABLE_SCHEMAS, identifier_columns, write_consortium_data
from .schema import demo_schema_toml

CONSORTIUM_FOLDER = "demo-consortium"
"""Where the demo keeps its consortium by default: beside ``examples/``."""
OMOP_FOLDER = "omop-consortium"
"""Where ``mpc-jupyter demo --omop`` keeps its OMOP CDM consortium by default."""
MARKER = "demo.json"
ANALYST = "analyst"


@dataclass(frozen=True)
class DemoSettings:
    """What a demo consortium was generated from."""

    patients: int
    seed: int = DEFAULT_SEED
    sites: tuple[str, ...] = DEFAULT_SITES
    omop: bool = False  # OMOP CDM tables (mpc_jupyter.demo.omop) instead of the EHR-like demo tables


@dataclass(frozen=True)
class DemoConsortium:
    """A complete demo consortium in ``folder``; ``reused`` says whether it was already there."""

    folder: Path
    settings: DemoSettings
    reused: bool

    @property
    def path(self) -> Path:
        """The consortium file to connect to."""
        return self.folder / "consortium.toml"

    def data_files(self, table: str) -> list[Path]:
        """Every site's Parquet file of ``table`` (to compare results with pooled pandas)."""
        return [self.folder / "data" / site / f"{table}.parquet" for site in self.settings.sites]


def read_marker(folder: Path) -> tuple[DemoSettings, bool] | None:
    """The settings of the demo in ``folder`` and whether it completed; None if it holds none."""
    try:
        raw = json.loads((folder / MARKER).read_text())
        settings = DemoSettings(int(raw["patients"]), int(raw["seed"]), tuple(raw["sites"]), bool(raw.get("omop")))
        return settings, bool(raw["complete"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(folder: Path, settings: DemoSettings, complete: bool) -> None:
    body = {**asdict(settings), "sites": list(settings.sites), "complete": complete}
    (folder / MARKER).write_text(json.dumps(body, indent=2) + "\n")


def site_specs(folder: Path, sites: Sequence[str], omop_tables: bool = False) -> list[SiteSpec]:
    """Each hospital serves the five demo tables (or the seven OMOP tables); identifier columns
    are never selectable."""
    tables = list(omop.OMOP_TABLES if omop_tables else TABLE_SCHEMAS)
    identifiers = omop.identifier_columns if omop_tables else identifier_columns
    return [
        SiteSpec(
            site,
            {
                table: TableSpec(folder / "data" / site / f"{table}.parquet", identifiers=identifiers(table))
                for table in tables
            },
        )
        for site in sites
    ]


def remove_demo(folder: Path) -> None:
    """Delete a demo consortium folder; refuses a folder that is not one (no ``demo.json``)."""
    if not folder.exists():
        return
    if read_marker(folder) is None and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not a demo consortium (no {MARKER}): choose another --dir")
    shutil.rmtree(folder)


def prepare_demo(
    folder: Path, settings: DemoSettings, fresh: bool = False, say: Callable[[str], None] = print
) -> DemoConsortium:
    """Reuse the demo consortium in ``folder`` if it matches ``settings``, else (re)create it."""
    folder = folder.resolve()
    found = read_marker(folder)
    if not fresh and found == (settings, True):
        say(f"reusing the demo consortium in {folder}")
        return DemoConsortium(folder, settings, reused=True)
    if found is not None or fresh:
        say(f"replacing the demo consortium in {folder}")
    remove_demo(folder)
    say(f"creating a consortium of {len(settings.sites)} hospitals in {folder}")
    schema = omop.omop_schema_toml() if settings.omop else demo_schema_toml(settings.sites)
    build_consortium(folder, site_specs(folder, settings.sites, settings.omop), schema, ANALYST)
    _write_marker(folder, settings, complete=False)
    unit = "OMOP persons" if settings.omop else "patients"
    say(f"generating {settings.patients:,} {unit} per hospital (seed {settings.seed})")
    write_data = omop.write_omop_data if settings.omop else write_consortium_data
    write_data(folder / "data", settings.sites, settings.patients, settings.seed)
    _write_marker(folder, settings, complete=True)
    return DemoConsortium(folder, settings, reused=False)
