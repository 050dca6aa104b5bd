"""Parse what follows ``%mpc`` / ``%%mpc`` into one command.

Forms::

    %mpc connect [PATH] [--analyst NAME]   open a consortium file (default: $MPC_CONSORTIUM)
    %mpc status                            the committee's sites
    %mpc budget                            this analyst's DP budget at each site
    %mpc receipts [NAME]                   full receipts of a stored result (default: the last)
    %mpc plan [NAME]                       the plan of a stored result, explained by the committee
    %mpc pending                           results held for output review: fetch those approved
    %mpc close                             close the connection
    %mpc [OPTIONS] [NAME <<] SELECT ...    a one-line query
    %%mpc [OPTIONS] [NAME <<]              a cell query; the body is the query; its first
                                           line may be ``NAME <<`` instead

Only the magic line's leading ``--option`` tokens are options; everything after the first
token that is not one of them is query text, kept verbatim. So SQL ``--`` comments (in the
body, or after the query on a line) never reach the option parser, and a typo such as
``--outt`` is reported rather than sent to the sites as a comment.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shlex
from dataclasses import dataclass
from typing import NoReturn

from IPython.core.error import UsageError

from .client import CONSORTIUM_ENV

PLOT_KINDS = ("auto", "bar", "hist", "step", "forest")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as a ``UsageError`` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%mpc: {message}")


def _query_parser() -> _Parser:
    parser = _Parser(prog="%%mpc", add_help=False, description="Run a query across the consortium.")
    parser.add_argument("--out", metavar="NAME", help="store the result in the notebook variable NAME")
    parser.add_argument(
        "--plot",
        nargs="?",
        const="default",
        choices=(*PLOT_KINDS, "default"),
        metavar="KIND",
        help=f"draw a chart of the result ({', '.join(PLOT_KINDS)}; default: MpcMagic.chart_kind)",
    )
    parser.add_argument("--explain", action="store_true", help="show the plan instead of running the query")
    parser.add_argument("--shares", action="store_true", help="show the shares each committee member sent")
    parser.add_argument(
        "--dp", action="store_true", help="DP mode: every value noised on shares, charged to the budget"
    )
    parser.add_argument(
        "--epsilon", type=_positive, metavar="E", help="the epsilon to spend (implies --dp; default: the sites' cap)"
    )
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"epsilon must be a positive number, not {text}")
    return value


def _connect_parser() -> _Parser:
    parser = _Parser(prog="%mpc connect", add_help=False)
    parser.add_argument("path", nargs="?", help=f"the consortium file (consortium.toml; default: ${CONSORTIUM_ENV})")
    parser.add_argument("--analyst", help="who signs the queries (default: the file's only analyst)")
    return parser


QUERY_OPTIONS = _query_parser()
CONNECT_OPTIONS = _connect_parser()


@dataclass(frozen=True)
class Connect:
    path: str | None
    analyst: str | None


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Budget:
    pass


@dataclass(frozen=True)
class Receipts:
    name: str | None


@dataclass(frozen=True)
class PlanOf:
    name: str | None


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class Query:
    """A query and what to do with its answer."""

    sql: str
    store: str | None = None  # NAME << : store silently
    out: str | None = None  # --out NAME : store and display
    plot: str | None = None  # a kind from PLOT_KINDS, or "default"
    explain: bool = False
    shares: bool = False
    dp: bool = False  # --dp, or --epsilon E
    epsilon: float | None = None


Command = Connect | Status | Budget | Receipts | PlanOf | Close | Pending | Query

_STORE = re.compile(r"\A\s*([A-Za-z_]\w*)\s*<<")
_OPTION_WORD = re.compile(r"--[A-Za-z]")


def parse(line: str, cell: str | None = None) -> Command:
    """The command that ``%mpc line`` (``cell`` None) or ``%%mpc line`` + ``cell`` asks for."""
    words = line.split()
    if cell is None and words and words[0] in ("connect", "status", "budget", "receipts", "plan", "close", "pending"):
        return _subcommand(words[0], line.split(None, 1)[1] if len(words) > 1 else "")
    options, rest = _split_options(line)
    args = QUERY_OPTIONS.parse_args(options)
    store, rest = _take_store(rest)
    if cell is None:
        sql = rest
    else:
        if rest.strip():
            raise UsageError("%%mpc: the query goes in the cell body; the first line holds only options and NAME <<")
        body_store, sql = _take_store(cell)
        if store and body_store:
            raise UsageError("%%mpc: NAME << given twice")
        store = store or body_store
    if not sql.strip():
        raise UsageError("%mpc: no query (write a SELECT after the options, or in the cell body)")
    for name in (store, args.out):
        if name is not None:
            _check_name(name)
    return Query(
        sql=sql.strip(),
        store=store,
        out=args.out,
        plot=args.plot,
        explain=args.explain,
        shares=args.shares,
        dp=args.dp or args.epsilon is not None,
        epsilon=args.epsilon,
    )


def _subcommand(word: str, rest: str) -> Command:
    if word == "connect":
        args = CONNECT_OPTIONS.parse_args(_shell_words(rest))
        return Connect(args.path, args.analyst)
    extra = rest.split()
    if word in ("receipts", "plan"):
        if len(extra) > 1:
            raise UsageError(f"%mpc {word} [NAME]: one name at most")
        name = extra[0] if extra else None
        return Receipts(name) if word == "receipts" else PlanOf(name)
    if extra:
        raise UsageError(f"%mpc {word} takes no arguments (got {' '.join(extra)!r})")
    if word == "budget":
        return Budget()
    if word == "status":
        return Status()
    return Pending() if word == "pending" else Close()


def _shell_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"%mpc: {exc}") from None


def _split_options(line: str) -> tuple[list[str], str]:
    """The leading option tokens (and their values) and the verbatim rest of the line."""
    options: list[str] = []
    rest = line
    while True:
        stripped = rest.lstrip()
        head, _, tail = stripped.partition(" ")
        if not _OPTION_WORD.match(head):
            return options, stripped
        option, eq, _ = head.partition("=")
        options.append(head)
        rest = tail
        if not eq and option in ("--out", "--plot", "--epsilon"):
            following, _, after = rest.lstrip().partition(" ")
            takes_value = option in ("--out", "--epsilon") or following in PLOT_KINDS
            if following and takes_value and not _STORE.match(rest):  # "--plot hist << ..." stores in hist
                options.append(following)
                rest = after


def _take_store(text: str) -> tuple[str | None, str]:
    match = _STORE.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


def _check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"%mpc: {name!r} is not a valid Python variable name")
