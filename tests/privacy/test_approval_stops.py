"""What a DPO's approval leaves withheld (``approval_stops``), on shares, against plain numpy:
in a cell of 1 to k-1 persons only the hard stops, elsewhere the release rule's own."""

import numpy as np

from site_agent.privacy.checks import approval_stops

from ..mpc.helpers import run_open, shared

K = 5


def test_small_cells_keep_only_hard_stops_large_and_empty_cells_keep_the_rule() -> None:
    persons = np.array([0, 1, 4, 5, 120, -3, 2, 60])  # -3: a site's failure penalty, never "small"
    rng = np.random.default_rng(7)
    hard = rng.integers(0, 2, size=(3, persons.size))
    rule = np.maximum(hard, rng.integers(0, 2, size=(3, persons.size)))  # hard stops are rule stops
    rule[:, 1] = rule[:, 6] = 1  # small cells the rule withheld
    hard[:, 6] = [0, 1, 0]  # ... one of them also for a difference in its second row
    r, h, n = shared(rule, seed=1), shared(hard, seed=2), shared(persons, seed=3)
    got = run_open(lambda p: approval_stops(p, r[p.index], h[p.index], n[p.index], K)).view(np.int64)
    small = (persons >= 1) & (persons < K)
    expected = np.where(small[None, :], hard, rule)
    assert np.array_equal(got, expected)
    assert got[:, 1].tolist() == hard[:, 1].tolist() and got[:, 6].tolist() == [0, 1, 0]
    assert np.array_equal(got[:, [3, 4, 5, 7]], rule[:, [3, 4, 5, 7]])  # k or more, or failed: the rule
