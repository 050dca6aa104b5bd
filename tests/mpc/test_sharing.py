"""Input parties' sharing and the analyst's reconstruction."""

import numpy as np
import pytest

from site_agent.errors import ProtocolViolation
from site_agent.mpc.sharing import deal, deal_compressed, reconstruct

VALUES = (np.arange(1000, dtype=np.int64) - 500).view(np.uint64)


def test_deal_and_reconstruct() -> None:
    assert np.array_equal(reconstruct(deal(VALUES)), VALUES)


def test_compressed_deal_sends_seeds_and_one_array() -> None:
    parts = deal_compressed(VALUES)
    assert isinstance(parts[0].first, bytes) and isinstance(parts[0].second, bytes)
    shares = [p.expand(VALUES.shape) for p in parts]
    assert np.array_equal(reconstruct(shares), VALUES)


def test_a_wrong_component_is_caught() -> None:
    shares = deal(VALUES)
    shares[1].v[0, 3] += np.uint64(1)
    with pytest.raises(ProtocolViolation, match="disagree"):
        reconstruct(shares)


def test_wrong_sizes_are_caught() -> None:
    parts = deal_compressed(VALUES)
    with pytest.raises(ProtocolViolation):
        parts[1].expand((999,))
    with pytest.raises(ProtocolViolation):
        reconstruct(deal(VALUES)[:2])
