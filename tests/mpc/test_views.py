"""What one member sees is uniform and independent of the secret inputs.

For each protocol we record everything member k receives (and its own shares) for two
very different secret inputs, and check (a) each of the 64 bit positions is set about
half the time, and (b) the top byte is distributed alike for both inputs (chi-square).
Opening protocols are excluded: their output is meant to be seen.
"""

from collections.abc import Callable

import numpy as np
import pytest

from site_agent.mpc import arithmetic as ar
from site_agent.mpc import boolean as bl
from site_agent.mpc.fixed import FixedPoint
from site_agent.mpc.normalize import WORD_ROW, inject
from site_agent.mpc.party import run_in_memory
from site_agent.mpc.sharing import deal

N = 20000
FP = FixedPoint()


def view_of(member: int, program: Callable, x: np.ndarray) -> np.ndarray:
    xs = deal(x, np.random.default_rng(1))
    ys = deal(x[::-1].copy(), np.random.default_rng(2))
    seen: list[np.ndarray] = []

    def tap(sender: int, receiver: int, msg: np.ndarray) -> None:
        if receiver == member:
            seen.append(msg)

    run_in_memory(lambda p: program(p, xs[p.index], ys[p.index]), seed=3, tap=tap)
    seen.append(xs[member].v.reshape(-1))
    return np.concatenate(seen)


PROTOCOLS = {
    "mul": lambda p, x, y: ar.mul(p, x, y),
    "mul_fixed": lambda p, x, y: ar.mul_fixed(p, x, y, 16),
    "trunc": lambda p, x, y: ar.trunc(p, x, 16),
    "lt": lambda p, x, y: bl.lt(p, x, y),
    "eq": lambda p, x, y: bl.eq(p, x, y),
    "b2a": lambda p, x, y: _a2b_b2a(p, x),
    "inject": lambda p, x, y: _a2b_inject(p, x),
}


def _a2b_inject(p, x):
    bits = yield from bl.a2b(p, x)
    return (yield from inject(p, [(bits, [WORD_ROW, [3**j for j in range(64)]])]))


def _a2b_b2a(p, x):
    return (yield from bl.b2a(p, (yield from bl.a2b(p, x))))


def bit_frequencies(words: np.ndarray) -> np.ndarray:
    bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    return bits.mean(axis=0)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
@pytest.mark.parametrize("member", [0, 1, 2])
def test_view_is_uniform_and_input_independent(name: str, member: int) -> None:
    zeros = np.zeros(N, dtype=np.uint64)
    big = FP.encode(np.linspace(-30000, 30000, N))
    v0, v1 = view_of(member, PROTOCOLS[name], zeros), view_of(member, PROTOCOLS[name], big)
    for v in (v0, v1):
        tolerance = 6 * 0.5 / np.sqrt(v.size)
        assert np.all(np.abs(bit_frequencies(v) - 0.5) < tolerance), name
    h0 = np.bincount((v0 >> np.uint64(56)).astype(np.int64), minlength=256)
    h1 = np.bincount((v1 >> np.uint64(56)).astype(np.int64), minlength=256)
    expected = (h0 + h1) / 2
    chi2 = float(np.sum((h0 - expected) ** 2 / expected + (h1 - expected) ** 2 / expected))
    assert chi2 < 255 + 6 * np.sqrt(2 * 255), (name, chi2)  # 6 sigma above the mean of chi2(255)
