"""Input parties' sharing and the analyst's reconstruction."""

import numpy as np
import pytest

from site_agent.errors import ProtocolViolation
from site_agent.mpc.sharing import deal, deal_compressed, expand_seed, reconstruct

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


def _bit_frequencies(words: np.ndarray) -> np.ndarray:
    return ((words.reshape(-1, 1) >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)


def test_dealt_components_are_uniform_words() -> None:
    """Every bit of every component is a fair coin (6 sigma over 20,000 words): a component
    drawn from a small range would let its holders narrow the secret down."""
    zeros = np.zeros(20_000, dtype=np.uint64)
    tolerance = 6 * 0.5 / np.sqrt(zeros.size)
    plain = deal(zeros, np.random.default_rng(5))
    packed = deal_compressed(zeros)
    for share in [*plain, *(p.expand(zeros.shape) for p in packed)]:
        for component in share.v:
            assert np.all(np.abs(_bit_frequencies(component) - 0.5) < tolerance)


def test_deal_draws_from_the_generator_it_is_given() -> None:
    first, again = deal(VALUES, np.random.default_rng(9)), deal(VALUES, np.random.default_rng(9))
    assert all(np.array_equal(a.v, b.v) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(deal(VALUES)[0].v, deal(VALUES)[0].v)  # fresh entropy without one


def test_share_seeds_expand_to_the_aes_ctr_keystream() -> None:
    """FIPS-197 known answer: AES-128 under the zero key maps the zero block to
    66e94bd4ef8a2c3b884cfa59ca342b2e, the first keystream block of CTR mode from counter 0."""
    block = bytes.fromhex("66e94bd4ef8a2c3b884cfa59ca342b2e")
    expected = np.frombuffer(block, dtype="<u8").astype(np.uint64)
    np.testing.assert_array_equal(expand_seed(bytes(16), 2), expected)
    with pytest.raises(ProtocolViolation, match=r"^share seeds are 16 bytes$"):
        expand_seed(bytes(15), 2)


def test_matrices_deal_and_expand_in_their_shape() -> None:
    matrix = VALUES.reshape(40, 25)
    shares = [p.expand(matrix.shape) for p in deal_compressed(matrix)]
    assert all(s.shape == (40, 25) for s in shares)
    np.testing.assert_array_equal(reconstruct(shares), matrix)
    with pytest.raises(ProtocolViolation, match=r"^share has 1000 elements, expected 999$"):
        deal_compressed(VALUES)[1].expand((999,))


def test_reconstruction_errors_name_the_parties() -> None:
    with pytest.raises(ProtocolViolation, match=r"^reconstruction needs the shares of all three parties$"):
        reconstruct(deal(VALUES)[:2])
    for i in range(3):
        shares = deal(VALUES)
        shares[(i + 1) % 3].v[0, 7] += np.uint64(1)  # party i+1's first component, party i's second
        with pytest.raises(ProtocolViolation, match=f"^parties {i} and {(i + 1) % 3} disagree on a share component$"):
            reconstruct(shares)
