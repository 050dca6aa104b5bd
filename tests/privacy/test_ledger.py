"""Differences across queries (issue 9, family 8): the ledger of released query sets.

Unit tests compare the ledger's symmetric-difference counts with plain Python sets; the attack
runs against three real agents: ``WHERE sex = 1`` then ``WHERE sex = 1 AND NOT (T)``, and the
attacker subtracts the two sums.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_jupyter.client import QueryFailed
from site_agent.privacy.ledger import MAX_SETS, Ledger, Membership, person_hashes

from ..integration.conftest import SITES
from .conftest import K, Target, derive, forget, value

# --- the ledger alone -------------------------------------------------------------------------


def _membership(rng: np.random.Generator, sets: int, cells: int, people: int) -> tuple[Membership, dict]:
    """Random memberships and the same as Python sets {(set, cell): {person, ...}}."""
    per_row, truth = [], {}
    ids = np.arange(people)
    for r in range(sets):
        rows = rng.choice(ids, size=people // 2)  # repeats: a person with several rows
        cell = rng.integers(0, cells, size=rows.size)
        per_row.append((person_hashes(rows), cell[:, None]))
        for c in range(cells):
            truth[(r, c)] = set(person_hashes(rows[cell == c]).tolist())
    return Membership.of(per_row, cells), truth


def test_differences_equal_python_sets(tmp_path) -> None:
    rng = np.random.default_rng(7)
    ledger = Ledger(tmp_path)
    first, first_truth = _membership(rng, sets=2, cells=3, people=40)
    released = np.array([[True, False, True], [True, True, True]])
    ledger.record("ana", "q1" * 16, first, released)
    remembered = [first_truth[(r, c)] for r, c in zip(*np.nonzero(released), strict=True)]
    assert len(ledger.names("ana")) == len(remembered)
    new, new_truth = _membership(rng, sets=3, cells=2, people=40)
    got = ledger.differences("ana", new)
    assert got.shape == (3, 2, len(remembered))
    for (r, c), persons in new_truth.items():
        assert list(got[r, c]) == [len(persons ^ old) for old in remembered]
    assert ledger.differences("bob", new).shape == (3, 2, 0)  # per analyst


def test_person_ids_hash_alike_whatever_the_column_type() -> None:
    """One site may store person ids as integers and another as text: the ledger must see one person."""
    assert person_hashes([5, 6, 70]).tolist() == person_hashes(["5", "6", "70"]).tolist()
    assert len(set(person_hashes([1, 2, 3]).tolist())) == 3


def test_memberships_count_persons_per_set_and_cell() -> None:
    one = person_hashes([1, 1, 2])
    # person 1 in cells 0 and 1 of the same set (e.g. a cell and its margin), person 2 in cell 0;
    # the last cell is empty
    members = Membership.of([(one, np.array([[0], [1], [0]]))], 3)
    assert members.sizes().tolist() == [[2, 1, 0]] and members.sizes().dtype == np.int64
    alone = Membership.of([(person_hashes([1, 1]), np.array([[0], [1]]))], 2)  # one person, two cells
    assert alone.sizes().tolist() == [[1, 1]]
    assert sorted(members.set_of(0, 0).tolist()) == sorted(person_hashes([1, 2]).tolist())
    none = Membership.of([], 3)  # a query with no query sets
    assert none.sizes().shape == (0, 3)


def test_differences_with_empty_slots_and_no_sets(tmp_path) -> None:
    ledger = Ledger(tmp_path / "not" / "yet" / "there")  # record creates the folders
    remembered = Membership.of([(person_hashes([1, 2]), np.array([[0], [0]]))], 1)
    ledger.record("ana", "q" * 32, remembered, np.array([[True]]))
    new = Membership.of([(person_hashes([1]), np.array([[0]]))], 2)  # cell 1 empty: the last slot is 0
    assert ledger.differences("ana", new).tolist() == [[[1], [2]]]
    assert ledger.differences("ana", Membership.of([], 2)).shape == (0, 2, 1)


def test_the_ledger_persists_and_forgets_the_oldest(tmp_path) -> None:
    rng = np.random.default_rng(8)
    members, _ = _membership(rng, sets=1, cells=MAX_SETS // 2 + 1, people=4000)
    everything = np.ones((1, members.out_cells), dtype=bool)
    Ledger(tmp_path).record("ana", "a" * 32, members, everything)
    Ledger(tmp_path).record("ana", "b" * 32, members, everything)
    names = Ledger(tmp_path).names("ana")  # a new object reads the same folder
    assert len(names) == MAX_SETS and names[-1].startswith("b" * 16) and names[0].startswith("a" * 16)
    assert Ledger(tmp_path).digest("ana") == Ledger(tmp_path).digest("ana") != Ledger(tmp_path).digest("bob")


# --- the attack against real agents ----------------------------------------------------------


def _base(target: Target) -> str:
    row = target.row
    return "sex = 1" if target.table == "lung" else f"tgrade = '{row['tgrade']}'"


def test_differencing_two_queries_gives_nothing(target: Target) -> None:
    forget(target.running)
    base = _base(target)
    first = target.ask(f"SELECT COUNT(*) AS n, SUM({{v}}) AS s FROM {{t}} WHERE {base}")
    second = target.ask(f"SELECT COUNT(*) AS n, SUM({{v}}) AS s FROM {{t}} WHERE {base} AND NOT ({{T}})")
    assert first is not None and second is not None
    assert value(first, "s") is not None  # the first, honest query answers
    stolen = derive(value(first, "s"), value(second, "s"), sign=(1, -1))
    assert stolen is None or stolen != pytest.approx(target.row[target.column])
    members = derive(value(first, "n"), value(second, "n"), sign=(1, -1))
    assert members is None or members != 1


def test_the_same_or_a_different_enough_query_still_answers(target: Target) -> None:
    forget(target.running)
    pooled = target.running.pooled
    base = _base(target)
    sql = f"SELECT COUNT(*) AS n, AVG({{v}}) AS m FROM {{t}} WHERE {base}"
    for _ in range(2):  # the same query twice: its sets differ from the remembered ones by 0
        out = target.ask(sql)
        assert out is not None
        chosen = pooled.query(base.replace("=", "=="))
        assert value(out, "n") == len(chosen)
        assert value(out, "m") == pytest.approx(chosen[target.column].mean(), rel=1e-6)
    wider = target.ask(f"SELECT COUNT(*) AS n FROM {{t}} WHERE {base} OR age < 50")
    assert wider is not None and value(wider, "n") is not None and value(wider, "n") >= K


def test_members_with_different_ledgers_refuse_together(target: Target) -> None:
    forget(target.running)
    sql = f"SELECT COUNT(*) AS n FROM {target.table}"
    target.running.client.query(sql)
    forget(target.running, SITES[:1])  # one site lost its state
    with pytest.raises(QueryFailed, match="release ledger"):
        target.running.client.query(sql)
    forget(target.running)
    assert value(target.running.client.query(sql), "n") == len(target.running.pooled)
