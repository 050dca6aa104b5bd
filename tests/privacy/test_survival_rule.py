"""The release rule for survival curves (site_agent/privacy/survival.py): the greedy step choice
on shares against its plain reference, and the rule every released step must satisfy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from site_agent.mpc import arithmetic as ar
from site_agent.mpc import sharing
from site_agent.mpc.party import run_in_memory
from site_agent.privacy.survival import (
    block_width,
    released_steps,
    step_pattern,
    step_pattern_reference,
)


def _on_shares(events: np.ndarray, censored: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ds = sharing.deal(events.astype(np.int64).view(np.uint64))
    cs = sharing.deal(censored.astype(np.int64).view(np.uint64))

    def program(p):  # type: ignore[no-untyped-def]
        ends, whole = yield from step_pattern(p, ds[p.index], cs[p.index], k)
        return (yield from ar.open_all(p, ends)), (yield from ar.open_all(p, whole))

    results, _ = run_in_memory(program)
    ends, whole = results[0]
    return ends.view(np.int64), whole.view(np.int64)


def _steps_pass(events: np.ndarray, censored: np.ndarray, ends: np.ndarray, k: int) -> bool:
    for a, b in released_steps(ends, events.shape[0]):
        for x in (events[a : b + 1].sum(), censored[a : b + 1].sum()):
            if 1 <= x < k:
                return False
    return True


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 24),
    st.integers(2, 6),
    st.floats(0.0, 3.0),
    st.integers(0, 2**31),
)
def test_step_pattern_equals_reference(groups: int, blocks: int, k: int, rate: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    events = rng.poisson(rate, (groups, blocks))
    censored = rng.poisson(rate / 2, (groups, blocks))
    ends, whole = _on_shares(events, censored, k)
    ref_ends, ref_whole = step_pattern_reference(events, censored, k)
    np.testing.assert_array_equal(ends, ref_ends)
    np.testing.assert_array_equal(whole, ref_whole)
    for g in range(groups):
        assert ends[g, -1] == 1
        if whole[g]:  # a released curve: every step's events and censorings are 0 or >= k
            assert _steps_pass(events[g], censored[g], ends[g], k)


def test_k1_every_block_is_a_step() -> None:
    events = np.array([[1, 0, 2, 0]])
    ends, whole = _on_shares(events, np.array([[0, 1, 0, 0]]), 1)
    assert ends.tolist() == [[1, 1, 1, 1]] and whole.tolist() == [1]


def test_a_group_with_few_censorings_has_no_curve() -> None:
    _, whole = step_pattern_reference(np.array([[5, 5, 0]]), np.array([[0, 0, 2]]), 5)
    assert whole.tolist() == [0]
    _, whole_shared = _on_shares(np.array([[5, 5, 0]]), np.array([[0, 0, 2]]), 5)
    assert whole_shared.tolist() == [0]


def test_the_last_step_takes_a_failing_remainder() -> None:
    """Events 5, 5, 1, 4: a cut after the second block would leave 1 + 4 = 5 events (passes),
    after the third 4 (fails): the steps are blocks 0, 1 and 2-3."""
    ends, whole = step_pattern_reference(np.array([[5, 5, 1, 4]]), np.zeros((1, 4), dtype=int), 5)
    assert ends.tolist() == [[1, 1, 0, 1]] and whole.tolist() == [1]


def test_released_steps_and_block_width() -> None:
    assert released_steps(np.array([0, 1, 0, 1]), 7, width=2) == [(0, 3), (4, 6)]
    assert released_steps(np.array([1, 1]), 2) == [(0, 0), (1, 1)]
    assert block_width(1101, 1) == 1 and block_width(100, 5) == 1 and block_width(1101, 5) == 9
