"""The agreement round: a refusal or a different plan stops every member before any share moves."""

import hashlib

import pytest

from site_agent.agent.agreement import ACCEPT, REFUSE, agree
from site_agent.errors import PlanMismatch, QueryRefused
from site_agent.mpc.party import run_in_memory

NAMES = {0: "north", 1: "central", 2: "south"}
DIGEST = hashlib.sha256(b"plan").hexdigest()


def test_all_accept_same_plan() -> None:
    results, stats = run_in_memory(lambda p: agree(p, DIGEST, ACCEPT, NAMES))
    assert results == [None, None, None] and all(s.rounds == 1 for s in stats)


def test_a_refusal_names_the_site() -> None:
    with pytest.raises(QueryRefused) as err:
        run_in_memory(lambda p: agree(p, DIGEST, REFUSE if p.index == 2 else ACCEPT, NAMES))
    assert err.value.site in ("south",)


def test_a_different_plan_is_caught() -> None:
    other = hashlib.sha256(b"other plan").hexdigest()
    with pytest.raises(PlanMismatch, match="different plan"):
        run_in_memory(lambda p: agree(p, other if p.index == 1 else DIGEST, ACCEPT, NAMES))
