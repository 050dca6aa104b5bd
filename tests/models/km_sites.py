"""In-process consortia for KAPLAN_MEIER: lifelines' lung data split by institution and GBSG2
dealt over three sites, with the schemas the integration tests use (``tests/lung.py``,
``tests/gbsg2.py``); every site's local SQL, the MPC program (all three members in one process,
``run_in_memory``) and the analyst's assembly run as in production, without sockets."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import pandas as pd

from site_agent.query import DisclosureRules
from site_agent.query.schema_file import load_schema_file

from ..gbsg2 import GBSG2_SCHEMA, gbsg2_by_site
from ..lung import LUNG_SCHEMA, lung_by_site
from ..query.conftest import Consortium


def _consortium(name: str, schema_text: str, frames: dict[str, pd.DataFrame], k: int) -> Consortium:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schema.toml"
        path.write_text(schema_text)
        schema = load_schema_file(path)
    return Consortium({site: {name: df} for site, df in frames.items()}, schema, DisclosureRules(min_cell_size=k))


@cache
def lung_sites(k: int) -> Consortium:
    """The lung consortium under minimum cell size k."""
    return _consortium("lung", LUNG_SCHEMA, lung_by_site(), k)


@cache
def gbsg2_sites(k: int) -> Consortium:
    """The GBSG2 consortium under minimum cell size k."""
    return _consortium("gbsg2", GBSG2_SCHEMA, gbsg2_by_site(), k)
