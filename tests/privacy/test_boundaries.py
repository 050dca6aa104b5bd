"""Every release threshold at k - 1, k and k + 1, against three real agents (k = 5).

One consortium for the module (default policy, k = 5), on a table built so that each boundary
is exact: ``part`` selects the block of rows a test reads, and in each block groups hold
exactly k - 1, k and k + 1 persons (or residual degrees of freedom, events, bin shares at the
limit). Where a number is released it must equal pandas (statsmodels, lifelines) on the pooled
rows; where it is withheld, the attacker's arithmetic on what was released must not give it.

Each test fails under the off-by-one mutation of the comparison it pins (docs/testing.md,
"Boundaries").
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from mpc_jupyter.client import QueryFailed

from ..integration.conftest import SITES, Dataset, Running, start_retrying
from ..models.conftest import relative
from ..models.km_reference import check_group
from .conftest import K, derive, forget, value
from .test_survival_attacks import first_event_time

SUPPRESSED = f"<{K}"

SCHEMA = """\
[tables.t]
id = { type = "integer", person = true }
part = { type = "integer", domain = [1, 2, 3, 4, 5, 6, 7, 8] }
g = { type = "integer", domain = [0, 1, 2, 3, 4, 5, 6, 7] }
c = { type = "integer", domain = [0, 1, 2, 3] }
x = { type = "integer", grid = [0, 20, 1] }
time = "float"
e = { type = "integer", domain = [0, 1] }
y = "float"
"""


def _rows() -> pd.DataFrame:
    """The planted blocks, one row per person unless said otherwise (see each test)."""
    rng = np.random.default_rng(16)
    rows: list[dict[str, float]] = []

    def add(part: int, n: int, **cols: float) -> None:
        for _ in range(n):
            rows.append({"part": part, "g": 0, "c": 0, "x": 0, "time": 1.0, "e": 0, "y": 0.0, **cols})

    # 1: min cell size, groups of 4 (in 5 rows: one person twice), 5, 6 persons
    for g, n in ((1, 4), (2, 5), (3, 6)):
        for _ in range(n):
            add(1, 1, g=g, x=int(rng.integers(0, 20)))
    # 2: secondary suppression, lines g with children c of (1, 3 | 4, 6, 10) persons: the two
    # small children's total, which the line gives away, is 4, 5, 6
    for g, small in ((0, (1, 3)), (1, (1, 4)), (2, (2, 4))):
        for c, n in enumerate((*small, 6, 10)):
            add(2, n, g=g, c=c)
    # 3: the ledger: 20 persons at x = 1, and 4, 5, 6 persons at x = 12, 16, 18
    for x, n in ((1, 20), (12, 4), (16, 5), (18, 6)):
        add(3, n, x=x)
    # 4: quantiles: groups of 4, 5, 6 persons at x = 5; groups whose median bin holds 4, 5, 6
    for g, n in ((1, 4), (2, 5), (3, 6)):
        add(4, n, g=g, x=5)
    for g, mid in ((4, 4), (5, 5), (6, 6)):
        for x, n in ((1, 4), (5, mid), (9, 4 if mid != 4 else 5)):
            add(4, n, g=g, x=x)
    # 5: Kaplan-Meier: 10 censored at t = 9 and events at t = 2 (and 3) per group
    for g, events in ((1, {2: 4}), (2, {2: 5}), (3, {2: 4, 3: 1}), (4, {2: 6})):
        add(5, 10, g=g, time=9.0, e=0)
        for t, n in events.items():
            add(5, n, g=g, time=float(t), e=1)
    # 6: LINEAR y ~ x: 11, 12, 13 persons (residual df 9, 10, 11)
    for g, n in ((1, 11), (2, 12), (3, 13)):
        for _ in range(n):
            x = int(rng.integers(0, 20))
            add(6, 1, g=g, x=x, y=float(2 * x + rng.normal(0, 3)))
    # 7: LOGISTIC e = 1 ~ x: 40 persons, 9, 10, 11 events (events per term 9, 10, 11)
    for g, events in ((1, 9), (2, 10), (3, 11)):
        for i in range(40):
            x = int(rng.integers(0, 20))
            add(7, 1, g=g, x=x, e=int(i < events))
    # 8: LINEAR y ~ C(c): level c = 1 held by 4, 5, 6 persons (the other levels by 20, 8, 8)
    for g, small in ((1, 4), (2, 5), (3, 6)):
        for c, n in enumerate((20, small, 8, 8)):
            for _ in range(n):
                add(8, 1, g=g, c=c, y=float(3 * c + rng.normal(0, 2)))
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    twice = frame[(frame.part == 1) & (frame.g == 1)].iloc[:1]  # one person of the 4 has two rows
    return pd.concat([frame, twice], ignore_index=True)


def _by_site() -> dict[str, pd.DataFrame]:
    """Persons dealt round-robin over the three sites (a person's rows stay at one site)."""
    frame = _rows()
    return {site: frame[frame.id % 3 == i].reset_index(drop=True) for i, site in enumerate(SITES)}


BOUNDS = Dataset("t", SCHEMA, _by_site)


@pytest.fixture(scope="module")
def bounds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_retrying(tmp_path_factory.mktemp("bounds"), {}, None, BOUNDS)
    yield running
    running.close()


@pytest.fixture
def fresh(bounds: Running) -> Iterator[Running]:
    """The consortium with its ledgers started afresh (what other tests released plays no part)."""
    forget(bounds)
    yield bounds
    forget(bounds)


def _part(running: Running, part: int) -> pd.DataFrame:
    pooled = running.pooled
    return pooled[pooled.part == part]


def _refused(running: Running, text: str, rule: str, why: str) -> None:
    """``text`` is refused by the model rule ``rule`` with the exact message, and every site
    writes a refusal that reveals nothing."""
    before = running.audit_counts()
    with pytest.raises(QueryFailed) as err:
        running.client.query(text)
    assert err.value.rule == rule
    assert str(err.value) == f"refused by the model rule {rule}: {why}; nothing was released"
    for site in SITES:
        new = running.wait_audit(site, before[site])
        assert [e["decision"] for e in new] == ["refused"] and new[0]["reveals"] == [], (site, new)


def test_min_cell_size_at_k_minus_1_k_k_plus_1(fresh: Running) -> None:
    """Groups of 4 persons (5 rows), 5 and 6 persons: the first is withheld, count and mean
    alike; the others equal pandas. Rows are not persons: counting rows would release 5."""
    out = fresh.client.query("SELECT g, COUNT(*) AS n, AVG(x) AS m FROM t WHERE part = 1 GROUP BY g").set_index("g")
    rows = _part(fresh, 1)
    persons = rows.groupby("g").id.nunique()
    assert persons.to_dict() == {1: K - 1, 2: K, 3: K + 1} and len(rows[rows.g == 1]) == K
    assert out.loc[1, "n"] == SUPPRESSED and value(out.loc[[1]], "m") is None
    for g in (2, 3):
        assert out.loc[g, "n"] == persons[g]
        assert float(out.loc[g, "m"]) == pytest.approx(rows[rows.g == g].x.mean(), abs=1e-6)
    assert all(out.loc[g, "n"] == 0 for g in (0, 4, 5, 6, 7))  # empty cells are released as 0


@pytest.mark.parametrize(("line", "hidden"), [(0, K - 1), (1, K), (2, K + 1)])
def test_secondary_suppression_at_k_minus_1_k_k_plus_1(fresh: Running, line: int, hidden: int) -> None:
    """A line (subtotal g, children c) whose two primary-suppressed children hold ``hidden``
    persons together: the subtotal minus the released children gives that total away, so at
    k - 1 the smallest open child (6 persons) is suppressed too and the attacker's difference
    covers three cells; at k and k + 1 the difference is released as it is (>= k persons)."""
    out = fresh.client.query(f"SELECT c, COUNT(*) AS n FROM t WHERE part = 2 AND g = {line} GROUP BY ROLLUP(c)")
    out = out.set_index("c")
    rows = _part(fresh, 2)
    rows = rows[rows.g == line]
    sizes = rows.groupby("c").size()
    assert sizes[0] + sizes[1] == hidden
    assert out.loc[0, "n"] == SUPPRESSED and out.loc[1, "n"] == SUPPRESSED
    assert out.loc["(all)", "n"] == len(rows) and out.loc[3, "n"] == sizes[3]
    released = [float(v) for v in out.n.drop("(all)") if v != SUPPRESSED]
    left_over = float(out.loc["(all)", "n"]) - sum(released)  # the attacker's subtraction
    if hidden < K:
        assert out.loc[2, "n"] == SUPPRESSED
        assert left_over == sizes[0] + sizes[1] + sizes[2] >= K
    else:
        assert out.loc[2, "n"] == sizes[2]
        assert left_over == hidden


@pytest.mark.parametrize(("extra", "size"), [(12, K - 1), (16, K), (18, K + 1)])
def test_ledger_difference_at_k_minus_1_k_k_plus_1(fresh: Running, extra: int, size: int) -> None:
    """Two queries whose sets differ by ``size`` persons (x = ``extra``): the second one's count
    is withheld when the difference holds k - 1, released (equal to pandas) at k and k + 1."""
    rows = _part(fresh, 3)
    first = fresh.client.query(f"SELECT COUNT(*) AS n FROM t WHERE part = 3 AND (x < 10 OR x = {extra})")
    second = fresh.client.query("SELECT COUNT(*) AS n, AVG(x) AS m FROM t WHERE part = 3 AND x < 10")
    inner = rows[rows.x < 10]
    assert (rows.x == extra).sum() == size
    assert value(first, "n") == len(inner) + size
    derived = derive(value(first, "n"), value(second, "n"), sign=(1, -1))  # the persons at x = extra
    if size < K:
        assert value(second, "n") is None and value(second, "m") is None
        assert derived is None
    else:
        assert value(second, "n") == len(inner)
        assert value(second, "m") == pytest.approx(inner.x.mean(), abs=1e-6)
        assert derived == size


def test_quantile_group_and_bin_share_at_k_minus_1_k_k_plus_1(fresh: Running) -> None:
    """MEDIAN(x): groups of 4, 5, 6 persons at one value (the first withheld, the others its
    value, as pandas); groups of 4 + m + 4 persons at 1, 5, 9 whose median bin (x = 5) holds
    m = 4, 5, 6 persons: at 4 the median is read on the coarser grid (bins of 5: the bin 5..9,
    centre 7), at 5 and 6 it is pandas' median. The attacker never learns that the median of
    the first group is 5."""
    out = fresh.client.query("SELECT g, MEDIAN(x) AS med FROM t WHERE part = 4 GROUP BY g").set_index("g")
    rows = _part(fresh, 4)
    medians = rows.groupby("g").x.median()
    sizes = rows.groupby("g").id.nunique()
    assert sizes[1] == K - 1 and sizes[2] == K and sizes[3] == K + 1
    assert value(out.loc[[1]], "med") is None
    for g in (2, 3, 5, 6):
        assert float(out.loc[g, "med"]) == medians[g] == 5
    assert [(rows[rows.g == g].x == 5).sum() for g in (4, 5, 6)] == [K - 1, K, K + 1]
    assert medians[4] == 5 and float(out.loc[4, "med"]) == 7.0


def test_kaplan_meier_step_rule_at_k_minus_1_k_k_plus_1(fresh: Running) -> None:
    """Ten censored at t = 9 and events at t = 2 in each group: 4 events give no curve (their
    count would follow from the first step), 5 and 6 a step at t = 2 equal to lifelines; 4 events
    at t = 2 and 1 at t = 3 make one step ending at 3, so the attacker's first event time is 3."""
    out = fresh.client.query("KAPLAN_MEIER time, e = 1 BY g FROM t WHERE part = 5 AT 0 TO 10 STEP 1")
    rows = _part(fresh, 5)
    curves = {info["g"]: info["curve"] for info in out.attrs["groups"]}
    assert curves[1] is False and first_event_time(out, g=1) is None
    for g in (2, 3, 4):
        group = rows[rows.g == g]
        check_group(out, group, group.e == 1, K, g=g)
    assert first_event_time(out, g=2) == 2.0 and first_event_time(out, g=4) == 2.0
    assert first_event_time(out, g=3) == 3.0  # 4 events alone at t = 2 do not end a step


@pytest.mark.parametrize(("g", "df"), [(1, 9), (2, 10), (3, 11)])
def test_model_residual_df_at_limit_minus_1_limit_limit_plus_1(fresh: Running, g: int, df: int) -> None:
    """LINEAR y ~ x on 11, 12, 13 persons: residual df 9 is refused with the rule named at every
    site's audit (nothing revealed); 10 and 11 equal statsmodels."""
    rows = _part(fresh, 6)
    rows = rows[rows.g == g]
    assert len(rows) - 2 == df
    text = f"LINEAR y ~ x FROM t WHERE part = 6 AND g = {g}"
    if df < 10:
        _refused(fresh, text, "model_residual_df", "the model leaves fewer than 10 residual degrees of freedom")
        return
    ours = fresh.client.query(text)
    ref = smf.ols("y ~ x", rows).fit()
    assert relative(ours["coef"], ref.params) < 1e-8


@pytest.mark.parametrize(("g", "events"), [(1, 9), (2, 10), (3, 11)])
def test_events_per_term_at_limit_minus_1_limit_limit_plus_1(fresh: Running, g: int, events: int) -> None:
    """LOGISTIC e = 1 ~ x on 40 persons with 9, 10, 11 events (one term): 9 is refused with the
    rule named, 10 and 11 equal statsmodels."""
    rows = _part(fresh, 7)
    rows = rows[rows.g == g]
    assert int(rows.e.sum()) == events and len(rows) == 40
    text = f"LOGISTIC e = 1 ~ x FROM t WHERE part = 7 AND g = {g}"
    if events < 10:
        _refused(fresh, text, "model_events_per_term", "the model has fewer than 10 events per term")
        return
    ours = fresh.client.query(text)
    ref = smf.logit("e ~ x", rows).fit(disp=0, tol=1e-12)
    assert relative(ours["coef"], ref.params) < 1e-6


@pytest.mark.parametrize(("g", "level"), [(1, K - 1), (2, K), (3, K + 1)])
def test_model_level_size_at_k_minus_1_k_k_plus_1(fresh: Running, g: int, level: int) -> None:
    """LINEAR y ~ C(c) where level c = 1 holds 4, 5, 6 persons: at 4 the model is refused
    (min_cell_size; its coefficient would be those persons' mean difference), at 5 and 6 it
    equals statsmodels."""
    rows = _part(fresh, 8)
    rows = rows[rows.g == g]
    assert (rows.c == 1).sum() == level
    text = f"LINEAR y ~ C(c) FROM t WHERE part = 8 AND g = {g}"
    if level < K:
        why = f"the model's rows, or a level of a categorical term, hold fewer than {K} persons"
        _refused(fresh, text, "min_cell_size", why)
        return
    ours = fresh.client.query(text)
    ref = smf.ols("y ~ C(c)", rows).fit()
    assert relative(ours["coef"], ref.params) < 1e-8
