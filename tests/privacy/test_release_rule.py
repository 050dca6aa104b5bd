"""Attacks on the release rule by an analyst with valid keys, against three real agents.

Each test plays the attacker: it runs the queries, applies the attacker's arithmetic to what
was released, and compares what the attacker derives with the truth from the pooled rows. A
withheld number (suppressed cell or refused query) derives nothing. Families (issue 9's table):
1 conditional sums, 2 identifier bypass, 4 site subtotals through joins, 6 extreme quantiles.
Each family runs on lung (target T: the one patient with age 74, sex 1, institution 12) and on
GBSG2 (a patient singled out by age, tumour size and grade).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.client import QueryFailed

from .conftest import K, Target, derive, value


def first(frame: pd.DataFrame | None, column: str) -> float | None:
    return None if frame is None else value(frame, column)


# --- family 1: conditional sums --------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) AS n, SUM(CASE WHEN {T} THEN {v} ELSE 0 END) AS s FROM {t}",
        "SELECT COUNT(*) AS n, SUM(CASE WHEN {T} THEN {v} END) AS s FROM {t}",
        "SELECT AVG(CASE WHEN {T} THEN {v} END) AS s FROM {t}",
        "SELECT SUM(IF({T}, {v}, 0)) AS s FROM {t}",
        "SELECT SUM(CASE WHEN NOT ({T}) THEN 0 ELSE {v} END) AS s FROM {t}",
        "SELECT SUM({v} * GREATEST(0, LEAST(1, 1 - ABS(age - 74)))) AS s FROM {t}",
        "SELECT SUM(CAST(({T}) AS INTEGER) * {v}) AS s FROM {t}",
    ],
)
def test_a_conditional_sum_does_not_give_the_value(target: Target, sql: str) -> None:
    stolen = first(target.ask(sql), "s")
    assert stolen != target.row[target.column]


def test_a_sum_minus_the_sum_without_the_target_gives_nothing(target: Target) -> None:
    out = target.ask("SELECT SUM({v}) AS total, SUM(CASE WHEN NOT ({T}) THEN {v} END) AS rest FROM {t}")
    assert out is not None
    truth_total = target.running.pooled[target.column].sum()
    assert value(out, "total") == pytest.approx(truth_total)  # the honest part still answers
    stolen = derive(value(out, "total"), value(out, "rest"), sign=(1, -1))
    assert stolen is None or stolen != pytest.approx(target.row[target.column])


def test_membership_by_counting_everyone_but_the_target_gives_nothing(target: Target) -> None:
    out = target.ask("SELECT COUNT(*) AS n, COUNT(CASE WHEN NOT ({T}) THEN 1 END) AS others FROM {t}")
    assert out is not None and value(out, "n") == len(target.running.pooled)
    assert derive(value(out, "n"), value(out, "others"), sign=(1, -1)) is None


def test_membership_by_a_proportion_gives_nothing(target: Target) -> None:
    out = target.ask("SELECT COUNT(*) AS n, PROPORTION({T}) AS p, AVG({T}) AS a, SUM({T}) AS s FROM {t}")
    assert out is not None
    n = value(out, "n")
    for col in ("p", "a"):
        members = None if value(out, col) is None else round(value(out, col) * n)  # type: ignore[operator]
        assert members is None
    assert value(out, "s") is None


# --- family 2: identifier rule bypass --------------------------------------------------------


def test_reading_a_record_bit_by_bit_through_count_distinct_gives_nothing(target: Target) -> None:
    pid = int(target.row["id"])
    bits = []
    for b in range(12):
        out = target.ask(
            f"SELECT COUNT(DISTINCT CASE WHEN id = {pid} AND CAST(FLOOR({{v}} / {2**b}) AS BIGINT) % 2 = 1 "
            "THEN 1 END) AS bit FROM {t}"
        )
        bits.append(first(out, "bit"))
    stolen = None if any(b is None for b in bits) else sum(int(b) << i for i, b in enumerate(bits))  # type: ignore[arg-type]
    assert stolen != target.row[target.column]


@pytest.mark.parametrize(
    "join",
    [
        "JOIN {t} b ON b.id = {pid}",
        "JOIN {t} b ON b.id = a.id AND b.id = {pid}",
        "JOIN {t} b ON a.id = b.id + 0",
    ],
)
def test_joining_one_chosen_record_to_every_row_gives_nothing(target: Target, join: str) -> None:
    pid = int(target.row["id"])
    sql = "SELECT COUNT(*) AS n, AVG(b.{v}) AS s FROM {t} a " + join.replace("{pid}", str(pid))
    assert first(target.ask(sql), "s") != target.row[target.column]


def test_a_self_join_along_the_person_still_answers(target: Target) -> None:
    out = target.ask("SELECT COUNT(*) AS n, AVG(b.{v}) AS m FROM {t} a JOIN {t} b ON a.id = b.id")
    assert out is not None
    pooled = target.running.pooled
    assert value(out, "n") == len(pooled)
    assert value(out, "m") == pytest.approx(pooled[target.column].mean(), rel=1e-6)


def test_an_identifier_is_usable_in_no_filter_and_no_group(target: Target) -> None:
    pid = int(target.row["id"])
    for sql in (
        f"SELECT COUNT(*) AS n, AVG({{v}}) AS s FROM {{t}} WHERE id = {pid} OR id > 100000",
        f"SELECT id = {pid} AS me, COUNT(*) AS n, SUM({{v}}) AS s FROM {{t}} GROUP BY me",
    ):
        out = target.ask(sql)
        assert out is None or all(value(out, "s", r) != target.row[target.column] for r in range(len(out)))


# --- family 4: site subtotals through joins ---------------------------------------------------


def test_a_join_anchored_on_the_target_does_not_give_the_site_size(target: Target) -> None:
    sql = "SELECT COUNT(*) AS n FROM {t} a JOIN {t} b ON " + target.where.replace("age", "b.age").replace(
        "sex", "b.sex"
    ).replace("inst", "b.inst").replace("tsize", "b.tsize").replace("tgrade", "b.tgrade")
    out = target.ask(sql)
    site_sizes = {len(f) for f in target.running.frames.values()}
    assert first(out, "n") not in site_sizes


@pytest.mark.parametrize("joins", [1, 2])
def test_cross_joins_do_not_give_the_sum_of_squared_site_sizes(target: Target, joins: int) -> None:
    sql = "SELECT COUNT(*) AS n FROM {t} a" + "".join(f" JOIN {{t}} j{i} ON TRUE" for i in range(joins))
    sizes = np.array([len(f) for f in target.running.frames.values()])
    assert first(target.ask(sql), "n") != float((sizes ** (joins + 1)).sum())


# --- family 6: quantiles as extremes ---------------------------------------------------------


@pytest.mark.parametrize("q", [0, 0.01, 0.99, 1])
def test_extreme_quantiles_are_refused_without_min_max(target: Target, q: float) -> None:
    out = target.ask(f"SELECT QUANTILE_CONT(time, {q}) AS x FROM {{t}}")
    extreme = target.running.pooled.time.quantile(q)
    assert first(out, "x") != extreme
    with pytest.raises(QueryFailed) as err:
        target.running.client.query(f"SELECT QUANTILE_CONT(time, {q}) AS x FROM {target.table}")
    assert err.value.rule == "allow_min_max"


def test_quantiles_of_a_small_group_do_not_give_its_members_values(target: Target) -> None:
    pooled = target.running.pooled
    cut = pooled.time.sort_values().iloc[K - 1]
    group = pooled[pooled.time <= cut]
    assert len(group) == K  # the K earliest times are distinct in both datasets
    qs = (0.25, 0.5, 0.75)  # with K = 5 values, type-7 quantiles at h = 1, 2, 3: three members' ages
    items = ", ".join(f"QUANTILE_CONT(age, {q}) AS q{i}" for i, q in enumerate(qs))
    out = target.ask(f"SELECT COUNT(*) AS n, {items} FROM {{t}} WHERE time <= {cut}")
    assert out is not None and value(out, "n") == K
    stolen = [first(out, f"q{i}") for i in range(len(qs))]
    assert stolen != sorted(group.age)[1:4]
