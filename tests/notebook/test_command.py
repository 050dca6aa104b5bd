"""Parsing the magic line and cell: options, storage, SQL comments."""

import pytest
from IPython.core.error import UsageError

from mpc_jupyter.command import Budget, Close, Connect, Pending, PlanOf, Query, Receipts, Status, parse


def test_subcommands() -> None:
    assert parse('connect "/tmp/a b/consortium.toml" --analyst bob') == Connect("/tmp/a b/consortium.toml", "bob")
    assert parse("status") == Status()
    assert parse("receipts r") == Receipts("r")
    assert parse("plan") == PlanOf(None)
    assert parse("close") == Close()
    assert parse("budget") == Budget()


def test_dp_options() -> None:
    assert parse("--dp", "SELECT 1") == Query("SELECT 1", dp=True)
    assert parse("--epsilon 0.5", "SELECT 1") == Query("SELECT 1", dp=True, epsilon=0.5)
    assert parse("--epsilon=2 --out r SELECT 1") == Query("SELECT 1", out="r", dp=True, epsilon=2.0)
    for bad in ("--epsilon 0", "--epsilon -1", "--epsilon x", "--epsilon inf"):
        with pytest.raises(UsageError, match=r"epsilon|number"):
            parse(bad, "SELECT 1")


def test_cell_options_and_storage_in_the_body() -> None:
    command = parse("--plot bar --explain --shares", "counts <<\nSELECT 1 -- note\nFROM t")
    assert command == Query("SELECT 1 -- note\nFROM t", store="counts", plot="bar", explain=True, shares=True)


def test_storage_on_the_magic_line_and_out() -> None:
    assert parse("--out r r2 <<", "SELECT 1").store == "r2"
    assert parse("--out r", "SELECT 1").out == "r"
    assert parse("--out=r --plot=hist SELECT 1") == Query("SELECT 1", out="r", plot="hist")


def test_plot_without_kind_and_a_variable_named_like_a_kind() -> None:
    assert parse("--plot", "SELECT 1").plot == "default"
    assert parse("--plot hist << SELECT 1") == Query("SELECT 1", store="hist", plot="default")


def test_sql_comments_never_reach_the_option_parser() -> None:
    assert parse("", "-- first a comment\n--explain is not an option here\nSELECT 1").sql.startswith("-- first")
    assert parse("SELECT 1 -- --out x").sql == "SELECT 1 -- --out x"


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("--outt x SELECT 1", None, "unrecognized arguments: --outt"),
        ("--plot", None, "no query"),
        ("SELECT 1", "SELECT 2", "query goes in the cell body"),
        ("--out 1x SELECT 1", None, "not a valid Python variable name"),
        ("a <<", "b <<\nSELECT 1", "given twice"),
        ("status now", None, "takes no arguments"),
    ],
)
def test_usage_errors(line: str, cell: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(line, cell)


def test_pending_subcommand() -> None:
    assert parse("pending") == Pending()
    with pytest.raises(UsageError):
        parse("pending now")
