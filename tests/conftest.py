"""Shared test configuration, and the one PostgreSQL server the tests that need one share."""

from collections.abc import Iterator

import pytest
from hypothesis import settings

from site_agent.tuning import tune_allocator
from tests.data.pgserver import PostgresServer

tune_allocator()

settings.register_profile("default", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("default")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (started on first use, stopped at the end of the session)."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
