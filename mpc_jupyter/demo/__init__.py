"""The demo consortium: synthetic hospitals whose data the demo's site agents serve.

``mpc_jupyter.demo.data`` generates each hospital's seeded, EHR-like tables and writes them as
Parquet files that a site agent loads into DuckDB (see ``docs/demo-data.md``).
"""
