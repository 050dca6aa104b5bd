"""The shared normalisation and Newton-Raphson iterations: bit injection, magnitudes, 30 bits."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from site_agent.mpc import normalize as nm
from site_agent.mpc.boolean import a2b
from site_agent.mpc.party import Party, Protocol, run_in_memory
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import deal, reconstruct

WORDS = st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=20)


@given(WORDS, st.lists(st.integers(-(2**63), 2**64 - 1), min_size=64, max_size=64))
@settings(max_examples=30)
def test_inject_is_a_linear_combination_of_bits(values: list[int], coeffs: list[int]) -> None:
    ints = np.array(values, dtype=np.int64)
    shares = deal(ints.view(np.uint64), np.random.default_rng(1))

    def program(p: Party) -> Protocol[Any]:
        bits = yield from a2b(p, shares[p.index])
        out = yield from nm.inject(p, [(bits, [coeffs, nm.WORD_ROW])])
        return AShare.concat(out)

    got, stats = run_in_memory(program)
    combo, word = np.split(reconstruct(got), 2)
    np.testing.assert_array_equal(word, ints.view(np.uint64))
    want = [sum(c for j, c in enumerate(coeffs) if (v >> j) & 1) % 2**64 for v in ints.view(np.uint64).tolist()]
    assert combo.tolist() == want
    assert max(s.rounds for s in stats) == 8 + 2


@given(WORDS)
@settings(max_examples=30)
def test_magnitude_mantissa(values: list[int]) -> None:
    ints = np.array(values, dtype=np.int64)
    shares = deal(ints.view(np.uint64), np.random.default_rng(2))

    def program(p: Party) -> Protocol[Any]:
        nz = yield from nm.normalize(p, shares[p.index], 30, [lambda e: e], signed=True, magnitude=True)
        return AShare.concat([nz.mant, nz.sign, nz.values[0]])

    got, _ = run_in_memory(program)
    mant, sign, e = np.split(reconstruct(got).view(np.int64), 3)
    np.testing.assert_array_equal(sign, (ints < 0).astype(np.int64))
    ratio = mant / 2.0**30
    nonzero = ints != 0
    assert np.all((ratio[nonzero] >= 0.5) & (ratio[nonzero] <= 1))
    np.testing.assert_allclose(ratio * 2.0**e, np.abs(ints.astype(np.float64)), rtol=2**-29)


def test_newton_at_30_bits() -> None:
    m = np.linspace(0.5, 1.0, 101)
    enc = np.round(m * 2**30).astype(np.int64).view(np.uint64)
    shares = deal(enc, np.random.default_rng(3))

    def program(p: Party) -> Protocol[Any]:
        z = yield from nm.reciprocal_newton(p, shares[p.index], 30)
        z20 = yield from nm.reciprocal_newton(p, shares[p.index], 30, out_bits=20)
        r, mm = yield from nm.rsqrt_newton(p, shares[p.index], 30, also=shares[p.index])
        return AShare.concat([z, z20.lshift(10), r, mm])

    got, _ = run_in_memory(program)
    z, z20, r, mm = np.split(reconstruct(got).view(np.int64) / 2.0**30, 4)
    exact = enc.view(np.int64) / 2.0**30
    np.testing.assert_allclose(z, 1 / exact, rtol=2**-28)
    np.testing.assert_allclose(z20, 1 / exact, rtol=2**-19)
    np.testing.assert_allclose(r, 1 / np.sqrt(exact), rtol=2**-28)
    np.testing.assert_allclose(mm, exact * exact, rtol=2**-28)
