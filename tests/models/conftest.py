"""In-process consortia for the model statements: lifelines' lung data split by institution and
GBSG2 dealt over three sites, with the schemas the integration tests use (``tests/lung.py``,
``tests/gbsg2.py``); every site's local SQL, the MPC program (all three members in one process,
``run_in_memory``) and the analyst's assembly run as in production, without sockets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from site_agent.query import DisclosureRules
from site_agent.query.schema_file import load_schema_file

from ..gbsg2 import GBSG2_SCHEMA, gbsg2_by_site
from ..lung import LUNG_SCHEMA, lung_by_site
from ..query.conftest import Consortium

Make = Callable[[int], Consortium]


def _factory(tmp: Path, name: str, schema_text: str, frames: dict[str, pd.DataFrame]) -> Make:
    path = tmp / f"{name}.toml"
    path.write_text(schema_text)
    schema = load_schema_file(path)
    tables = {site: {name: df} for site, df in frames.items()}
    made: dict[int, Consortium] = {}

    def make(k: int) -> Consortium:
        if k not in made:
            made[k] = Consortium(tables, schema, DisclosureRules(min_cell_size=k))
        return made[k]

    return make


@pytest.fixture(scope="session")
def lung_sites(tmp_path_factory: pytest.TempPathFactory) -> Make:
    """The lung consortium under minimum cell size k (``lung_sites(5)``)."""
    return _factory(tmp_path_factory.mktemp("km"), "lung", LUNG_SCHEMA, lung_by_site())


@pytest.fixture(scope="session")
def gbsg2_sites(tmp_path_factory: pytest.TempPathFactory) -> Make:
    return _factory(tmp_path_factory.mktemp("km"), "gbsg2", GBSG2_SCHEMA, gbsg2_by_site())
