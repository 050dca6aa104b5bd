"""Consortia for the attack tests: real agents on the lung data split by institution.

``open_lung`` runs every site's default policy (k = 5, MIN/MAX off, ``id`` an identifier, every
column exposed): what an attacker holding valid analyst keys faces in a default deployment.
It is built by the integration tests' own helpers (tests/integration/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..integration.conftest import Running, start_retrying


@pytest.fixture(scope="session")
def open_lung(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_retrying(tmp_path_factory.mktemp("privacy") / "open_lung", {})
    yield running
    running.close()
