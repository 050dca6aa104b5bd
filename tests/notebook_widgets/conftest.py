"""A clock the tests drive by hand, and a small in-process consortium for real query answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mpc_jupyter.demo.data import generate_site, identifier_columns
from mpc_jupyter.demo.schema import demo_schema_toml
from site_agent.query import DisclosureRules, compile_query, execute
from site_agent.query.catalog import Schema
from site_agent.query.schema_file import load_schema_file


class ManualClock:
    """``call_later`` records the call; ``advance(seconds)`` runs those that fall due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[_Call] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Call:
        call = _Call(self.now + delay, callback)
        self.calls.append(call)
        return call

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for call in sorted(self.calls, key=lambda c: c.due):
            if call.due <= self.now and not call.cancelled and not call.ran:
                call.ran = True
                call.callback()

    @property
    def waiting(self) -> int:
        return sum(not c.cancelled and not c.ran for c in self.calls)


class _Call:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due, self.callback = due, callback
        self.cancelled = self.ran = False

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    path = tmp_path_factory.mktemp("schema") / "schema.toml"
    path.write_text(demo_schema_toml())
    return load_schema_file(Path(path))


@pytest.fixture(scope="session")
def sites() -> Iterator[dict[str, duckdb.DuckDBPyConnection]]:
    """Three small demo hospitals in DuckDB, as the query engine's in-process executor takes them."""
    connections = {}
    for name in ("north", "central", "south"):
        con = duckdb.connect()
        for table, frame in generate_site(name, patients=400, seed=7).items():
            con.register("incoming", frame)
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM incoming')
            con.unregister("incoming")
        connections[name] = con
    yield connections
    for con in connections.values():
        con.close()


@pytest.fixture(scope="session")
def run_query(schema: Schema, sites: dict[str, duckdb.DuckDBPyConnection]) -> Callable[[str], pd.DataFrame]:
    """Compile and execute a query on the three sites (the same engine the agents run)."""
    identifiers = frozenset(c for t in ("patients", "admissions") for c in identifier_columns(t))
    rules = DisclosureRules(min_cell_size=5, identifiers=identifiers)
    return lambda text: execute(compile_query(text, schema, rules), sites)
