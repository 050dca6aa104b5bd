"""Each site's privacy accountant: charges on disk, the period's window, composition, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from site_agent.errors import ConfigError, PolicyRefusal
from site_agent.policy.privacy import PrivacyPolicy
from site_agent.privacy import skellam
from site_agent.privacy.accountant import Accountant, Charge
from site_agent.privacy.skellam import Sensitivity

DAY = 86400.0


def one_query(eps: float) -> tuple[float, ...]:
    sens = [Sensitivity(1, 1)]
    return tuple(skellam.query_rdp(skellam.calibrate(sens, eps, 1e-5), sens))


def test_charges_survive_a_new_accountant_and_compose_below_their_sum(tmp_path: Path) -> None:
    budget = PrivacyPolicy(epsilon=10.0)
    rdp = one_query(0.5)
    first = Accountant(tmp_path / "budget")
    assert first.spent("ana", budget, 0.0).epsilon == 0.0 and first.charges("ana") == []
    for i in range(8):
        first.charge("ana", Charge(f"q{i}", 1000.0 + i, 0.5, rdp))
    again = Accountant(tmp_path / "budget")  # as after a restart
    spent = again.spent("ana", budget, 2000.0)
    assert spent.queries == 8 and again.digest("ana") == first.digest("ana")
    assert 0.5 < spent.epsilon < 8 * 0.5  # RDP composition: more than one query, less than basic composition
    assert spent.remaining == pytest.approx(10.0 - spent.epsilon)
    assert again.spent("bob", budget, 2000.0).queries == 0  # per analyst


def test_the_period_window_and_the_refusal_naming_the_rule(tmp_path: Path) -> None:
    acc = Accountant(tmp_path)
    rdp = one_query(1.0)
    budget = PrivacyPolicy(epsilon=1.4, period="30d")  # two queries at 1 compose to 1.46
    acc.charge("ana", Charge("old", 0.0, 1.0, rdp))
    with pytest.raises(PolicyRefusal) as err:
        acc.check("ana", list(rdp), budget, 10 * DAY, "central")
    assert (err.value.site, err.value.rule) == ("central", "epsilon")
    assert "privacy budget is spent" in str(err.value) and "period 30d" in str(err.value)
    after = acc.check("ana", list(rdp), budget, 31 * DAY, "central")  # the old charge left the window
    assert after == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(PolicyRefusal):  # a budget that never renews keeps counting it
        acc.check("ana", list(rdp), PrivacyPolicy(epsilon=1.4, period="none"), 400 * DAY, "central")


def test_digest_follows_the_charges_and_a_damaged_file_is_reported(tmp_path: Path) -> None:
    acc = Accountant(tmp_path)
    empty = acc.digest("ana")
    acc.charge("ana", Charge("q", 1.0, 0.5, one_query(0.5)))
    assert acc.digest("ana") != empty
    path = next(tmp_path.glob("*.json"))
    path.write_text("[{")
    with pytest.raises(ConfigError, match="accountant"):
        acc.charges("ana")


def test_the_digest_does_not_depend_on_the_order_of_charges(tmp_path: Path) -> None:
    """Two members that charged two concurrent queries in opposite orders agree on the account."""
    rdp = one_query(0.5)
    one, two = Accountant(tmp_path / "one"), Accountant(tmp_path / "two")
    first, second = Charge("q1", 10.0, 0.5, rdp), Charge("q2", 11.0, 0.5, rdp)
    one.charge("ana", first), one.charge("ana", second)
    two.charge("ana", second), two.charge("ana", first)
    assert one.digest("ana") == two.digest("ana")
