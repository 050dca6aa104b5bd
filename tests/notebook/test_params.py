"""Parameter binding: values become literals of their type, never SQL text."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mpc_jupyter.params import BindError, bind, sql_literal


def test_scalars_become_typed_literals() -> None:
    ns = {"n": 65, "x": 1.5, "s": "north", "b": True, "d": dt.date(2020, 1, 2), "none": None, "i": np.int64(3)}
    text, params = bind("{n} {x} {s} {b} {d} {none} :i", ns)
    assert text == "65 1.5 'north' TRUE DATE '2020-01-02' NULL 3"
    assert params == {"n": 65, "x": 1.5, "s": "north", "b": True, "d": "2020-01-02", "none": None, "i": 3}


def test_quotes_are_escaped_so_an_injection_stays_one_string() -> None:
    text, _ = bind("WHERE name = {s}", {"s": "x' OR '1'='1"})
    assert text == "WHERE name = 'x'' OR ''1''=''1'"


def test_negative_numbers_cannot_start_a_comment() -> None:
    text, _ = bind("SELECT age -{n} FROM lung", {"n": -3})
    assert text == "SELECT age -(-3) FROM lung"
    assert "--" not in text


def test_lists_become_in_lists() -> None:
    assert bind("x IN {v}", {"v": [1, 2, 3]})[0] == "x IN (1, 2, 3)"
    assert bind("x IN :v", {"v": pd.Series(["a", "b'"])})[0] == "x IN ('a', 'b''')"
    assert bind("x IN {v}", {"v": {3, 1}})[0] == "x IN (1, 3)"


def test_placeholders_in_strings_comments_and_casts_are_left_alone() -> None:
    sql = "SELECT '{n}', ':n', \"{n}\" -- {n} :n\n/* {n} */ x::INTEGER, :n"
    text, params = bind(sql, {"n": 7})
    assert text == "SELECT '{n}', ':n', \"{n}\" -- {n} :n\n/* {n} */ x::INTEGER, 7"
    assert params == {"n": 7}


@pytest.mark.parametrize(
    ("sql", "ns", "message"),
    [
        ("{missing}", {}, "not defined"),
        ("{n + 1}", {"n": 1}, "only a notebook variable"),
        ("{v}", {"v": []}, "empty list"),
        ("{v}", {"v": float("nan")}, "no SQL literal"),
        ("{v}", {"v": object()}, "cannot be bound"),
    ],
)
def test_refusals(sql: str, ns: dict[str, object], message: str) -> None:
    with pytest.raises(BindError, match=message):
        bind(sql, ns)


def test_timestamps() -> None:
    assert sql_literal(pd.Timestamp("2021-03-04 05:06:07")) == "TIMESTAMP '2021-03-04 05:06:07'"


def test_a_model_for_trees_is_sent_as_a_parameter_not_a_literal() -> None:
    model = {"format": "xgboost", "base_score": 0.5, "trees": [{"nodeid": 0, "leaf": np.float64(0.25).item()}]}
    text, params = bind("VALIDATE LOGISTIC status = 2 ~ TREES( {model} ) FROM lung WHERE age > :age", {
        "model": model, "age": 60})
    assert text == "VALIDATE LOGISTIC status = 2 ~ TREES( :model ) FROM lung WHERE age > 60"
    assert params == {"model": model, "age": 60}
    assert bind("VALIDATE LOGISTIC y ~ TREES(:m) FROM t", {"m": '{"format": "sklearn"}'})[1] == {
        "m": {"format": "sklearn"}}
    with pytest.raises(BindError, match="plain JSON"):
        bind("VALIDATE LOGISTIC y ~ TREES(:m) FROM t", {"m": {"trees": [float("nan")]}})
    with pytest.raises(BindError):  # elsewhere a dict is no SQL value
        bind("SELECT COUNT(*) FROM t WHERE x = :m", {"m": model})
