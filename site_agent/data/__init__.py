"""Data connectors: where a site's local step runs.

The plan's local SQL (DuckDB dialect, written by ``query/plan.py``) runs in the engine that
holds the site's data and returns a few columns of pre-aggregates; rows never leave that engine.
Modules, in dependency order:

* ``connector``: the ``Connector`` protocol every engine implements, and ``Columns``, the
  result shape ``query/execute.py`` consumes (``execute(sql).fetchnumpy()``).
* ``mapping``: presents a local table under the consortium's names and codes (a SELECT with
  renamed and recoded columns), so the plan's SQL stays the consortium's.
* ``embedded``: DuckDB, the default: CSV, Parquet and DuckDB files, and the empty tables of a
  member without data.
* ``server``: a database server reached by push-down: the SQL is transpiled by sqlglot to the
  server's dialect and runs there (PostgreSQL through psycopg).
* ``routing``: one site with tables in several engines; each query goes to the engine that holds
  all its tables.
* ``profile`` and ``conformance``: a table in counts (for ``mpc-consortium schema draft``) and
  where it disagrees with ``schema.toml`` (for ``mpc-site-agent check``), by aggregate SQL run
  in the same engines.
"""

from .connector import Columns, Connector, Result
from .embedded import DuckDBConnector, empty_connector, open_files
from .routing import open_sources
from .server import SqlConnector, open_server, to_dialect

__all__ = [
    "Columns",
    "Connector",
    "DuckDBConnector",
    "Result",
    "SqlConnector",
    "empty_connector",
    "open_files",
    "open_server",
    "open_sources",
    "to_dialect",
]
