"""Correlated randomness from pairwise AES-CTR keys."""

import numpy as np
import pytest

from site_agent.mpc.randomness import Randomness

# FIPS-197: AES-128 under the zero key maps the zero block to this, the first keystream
# block of CTR mode from counter 0.
ZERO_KEY_BLOCK = np.frombuffer(bytes.fromhex("66e94bd4ef8a2c3b884cfa59ca342b2e"), dtype="<u8").astype(np.uint64)


def test_streams_are_the_aes_ctr_keystream_in_order() -> None:
    rand = Randomness(0, {0: bytes(16), 1: bytes(range(16))})
    first = rand.stream(0, 1)
    second = rand.stream(0, 1)
    np.testing.assert_array_equal(np.concatenate([first, second]), ZERO_KEY_BLOCK)
    assert rand.stream(0, 1000).shape == (1000,)


def test_both_holders_of_a_key_draw_alike_and_zero_shares_cancel() -> None:
    members = [Randomness.from_seed(i, 42, b"session") for i in range(3)]
    for j in range(3):  # K_j is held by members j - 1 and j
        np.testing.assert_array_equal(members[(j + 2) % 3].stream(j, 8), members[j].stream(j, 8))
    total = sum((m.zero_share(16) for m in members), np.zeros(16, dtype=np.uint64))
    np.testing.assert_array_equal(total, np.zeros(16, dtype=np.uint64))
    xor = members[0].xor_zero_share(16) ^ members[1].xor_zero_share(16) ^ members[2].xor_zero_share(16)
    np.testing.assert_array_equal(xor, np.zeros(16, dtype=np.uint64))
    assert not np.array_equal(Randomness.from_seed(0, 42, b"other").stream(0, 4), members[0].stream(0, 4))


def test_a_member_holds_exactly_its_two_keys() -> None:
    with pytest.raises(ValueError, match=r"^party 1 must hold exactly keys \[1, 2\]$"):
        Randomness(1, {0: bytes(16), 1: bytes(16)})
    with pytest.raises(ValueError, match=r"^party index must be 0, 1 or 2$"):
        Randomness(3, {})
    with pytest.raises(ValueError, match=r"^PRF keys are 16 bytes$"):
        Randomness(0, {0: bytes(15), 1: bytes(16)})
    assert Randomness.from_seed(2, 1).holds(0) and not Randomness.from_seed(2, 1).holds(1)
