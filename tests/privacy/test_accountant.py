"""Each site's privacy accountant: charges on disk, the period's window, composition, refusals,
and check-and-reserve as one step (threads, the wait-die order, reservations given back)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from site_agent.errors import ConfigError, PolicyRefusal
from site_agent.policy.privacy import PrivacyPolicy
from site_agent.privacy import skellam
from site_agent.privacy.accountant import CHARGED, RESERVED, WAIT, Accountant, Charge
from site_agent.privacy.skellam import Sensitivity

DAY = 86400.0


def one_query(eps: float) -> tuple[float, ...]:
    sens = [Sensitivity(1, 1, one_cell=True)]
    return tuple(skellam.query_rdp(skellam.calibrate(sens, eps, 1e-5), sens))


def room_for(n: int, eps: float = 1.0) -> float:
    """A budget that holds exactly ``n`` queries at ``eps`` (halfway between n and n + 1 composed)."""
    curve = one_query(eps)
    at = [skellam.epsilon([k * x for x in curve], 1e-5) for k in (n, n + 1)]
    return (at[0] + at[1]) / 2


def charge(acc: Accountant, analyst: str, c: Charge, budget: PrivacyPolicy | None = None) -> None:
    """Reserve and commit, as a member does for a query that passed the agreement round."""
    assert acc.reserve(analyst, c, budget or PrivacyPolicy(epsilon=1e6), "north") == RESERVED
    acc.commit(analyst, c.query)


def test_charges_survive_a_new_accountant_and_compose_below_their_sum(tmp_path: Path) -> None:
    budget = PrivacyPolicy(epsilon=10.0)
    rdp = one_query(0.5)
    first = Accountant(tmp_path / "budget")
    assert first.spent("ana", budget, 0.0).epsilon == 0.0 and first.charges("ana") == []
    for i in range(8):
        charge(first, "ana", Charge(f"q{i}", 1000.0 + i, 0.5, rdp))
    again = Accountant(tmp_path / "budget")  # as after a restart
    spent = again.spent("ana", budget, 2000.0)
    assert spent.queries == 8 and again.charges("ana") == first.charges("ana")
    assert 0.5 < spent.epsilon < 8 * 0.5  # RDP composition: more than one query, less than basic composition
    assert spent.remaining == pytest.approx(10.0 - spent.epsilon)
    assert again.spent("bob", budget, 2000.0).queries == 0  # per analyst


def test_one_query_spends_exactly_what_it_was_calibrated_to(tmp_path: Path) -> None:
    acc = Accountant(tmp_path)
    charge(acc, "ana", Charge("q", 1.0, 0.7, one_query(0.7)))
    assert acc.spent("ana", PrivacyPolicy(), 2.0).epsilon == pytest.approx(0.7, abs=1e-6)
    assert acc.spent("ana", PrivacyPolicy(), 2.0).epsilon <= 0.7


def test_the_period_window_and_the_refusal_naming_the_rule(tmp_path: Path) -> None:
    acc = Accountant(tmp_path)
    rdp = one_query(1.0)
    budget = PrivacyPolicy(epsilon=1.4, period="30d")  # two queries at 1 compose to 1.97
    charge(acc, "ana", Charge("old", 0.0, 1.0, rdp))
    with pytest.raises(PolicyRefusal) as err:
        acc.reserve("ana", Charge("new", 10 * DAY, 1.0, rdp), budget, "central")
    assert (err.value.site, err.value.rule) == ("central", "epsilon")
    assert "privacy budget is spent" in str(err.value) and "period 30d" in str(err.value)
    assert acc.charged("ana", "old") and not acc.charged("ana", "new")
    never = PrivacyPolicy(epsilon=1.4, period="none")
    with pytest.raises(PolicyRefusal):  # a budget that never renews keeps counting it
        acc.reserve("ana", Charge("later", 400 * DAY, 1.0, rdp), never, "central")
    assert acc.reserve("ana", Charge("new", 31 * DAY, 1.0, rdp), budget, "central") == RESERVED  # the old one left
    assert acc.spent("ana", budget, 31 * DAY).epsilon == pytest.approx(1.0, abs=1e-6)


def test_a_damaged_file_is_reported(tmp_path: Path) -> None:
    acc = Accountant(tmp_path)
    charge(acc, "ana", Charge("q", 1.0, 0.5, one_query(0.5)))
    path = next(tmp_path.glob("*.json"))
    path.write_text("[{")
    with pytest.raises(ConfigError, match="accountant"):
        acc.charges("ana")


def test_reserving_from_many_threads_at_once_never_overspends(tmp_path: Path) -> None:
    """Twelve threads reserve queries of one analyst at once, with room for exactly 4: exactly 4
    are reserved (the others wait or are refused) and the account holds exactly those."""
    acc, rdp = Accountant(tmp_path), one_query(1.0)
    budget = PrivacyPolicy(epsilon=room_for(4))
    verdicts: dict[str, str] = {}
    start = threading.Barrier(12)

    def ask(i: int) -> None:
        start.wait()
        try:
            verdicts[f"q{i}"] = acc.reserve("ana", Charge(f"q{i}", 100.0 + i, 1.0, rdp), budget, "north")
        except PolicyRefusal:
            verdicts[f"q{i}"] = "refused"

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reserved = {q for q, v in verdicts.items() if v == RESERVED}
    assert len(reserved) == 4 and {c.query for c in acc.charges("ana")} == reserved
    assert all(c.state == RESERVED for c in acc.charges("ana"))
    assert acc.spent("ana", budget, 200.0).epsilon <= budget.epsilon


def test_wait_die_an_older_query_waits_for_a_younger_one_and_a_younger_one_is_refused(tmp_path: Path) -> None:
    """Room for one: the younger query reserved first; the older one waits for it (it may be given
    back), gets the room when it is; a younger one then is refused on the older's reservation."""
    acc, rdp = Accountant(tmp_path), one_query(1.0)
    budget = PrivacyPolicy(epsilon=room_for(1))
    young, old, younger = Charge("b", 20.0, 1.0, rdp), Charge("a", 10.0, 1.0, rdp), Charge("c", 30.0, 1.0, rdp)
    assert acc.reserve("ana", young, budget, "north") == RESERVED
    assert acc.reserve("ana", old, budget, "north") == WAIT
    acc.give_back("ana", "b")  # the younger query stopped before the agreement round passed
    assert acc.charges("ana") == []
    assert acc.reserve("ana", old, budget, "north") == RESERVED
    with pytest.raises(PolicyRefusal, match="privacy budget is spent"):
        acc.reserve("ana", younger, budget, "north")
    acc.commit("ana", "a")
    acc.give_back("ana", "a")  # a committed query is never given back
    assert [c.state for c in acc.charges("ana")] == [CHARGED]
    with pytest.raises(PolicyRefusal):
        acc.reserve("ana", young, budget, "north")


def test_a_reservation_left_by_a_stopped_agent_counts_as_charged(tmp_path: Path) -> None:
    """The agent stopped during a query (its session may have opened values): after the restart
    the reservation is charged, and a query it would have waited for is refused instead."""
    rdp = one_query(1.0)
    budget = PrivacyPolicy(epsilon=room_for(1))
    before = Accountant(tmp_path)
    assert before.reserve("ana", Charge("b", 20.0, 1.0, rdp), budget, "north") == RESERVED
    after = Accountant(tmp_path)
    assert [c.state for c in after.charges("ana")] == [CHARGED]
    with pytest.raises(PolicyRefusal):
        after.reserve("ana", Charge("a", 10.0, 1.0, rdp), budget, "north")
