"""A PostgreSQL server shared by the tests of this folder (started once, stopped at the end)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .pgserver import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
