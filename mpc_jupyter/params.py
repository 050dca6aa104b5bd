"""Parameter binding: ``{name}`` and ``:name`` placeholders become typed SQL literals.

A ``%%mpc`` cell may refer to notebook variables, as ``{name}`` or ``:name``. They are
bound here, deliberately, rather than by IPython's ``{}``/``$`` expansion (the magics are
``@no_var_expand``): each value is rendered as one literal of its type, so no value can
change the query's structure.

* ``bool`` -> ``TRUE``/``FALSE``; ``int`` and finite ``float`` (numpy scalars too) -> a
  number, negative ones in parentheses (so ``x -{n}`` cannot become a ``--`` comment);
* ``str`` -> ``'...'`` with quotes doubled; ``datetime.date`` -> ``DATE '...'``,
  ``datetime.datetime`` / ``pandas.Timestamp`` -> ``TIMESTAMP '...'``; ``None`` -> ``NULL``;
* a list, tuple, set, numpy array, Series or Index of those -> ``(a, b, c)`` for ``IN``.

A placeholder right after ``~`` whose value is a LOGISTIC or COX result becomes that fit's
linear predictor (:func:`mpc_jupyter.models.predictor`): VALIDATE of a stored result.
A placeholder that is the argument of ``TREES(...)`` (VALIDATE LOGISTIC ~ TREES(:model),
docs/models.md) stays in the text: its value, a model as JSON, is sent as a parameter only.

Placeholders inside string literals, quoted identifiers and ``--`` or ``/* */`` comments are
left alone, and ``::`` (DuckDB's cast) is not a placeholder. The query as signed holds the
literals; the bound values are also returned, JSON-encoded, for the signed envelope.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .models import predictor


class BindError(ValueError):
    """A placeholder names no notebook variable, or its value has no SQL literal."""


_TOKEN = re.compile(
    r"""
      (?P<skip>'(?:[^']|'')*'? | "(?:[^"]|"")*"? | --[^\n]* | /\*.*?(?:\*/|\Z) | ::)
    | \{\s*(?P<brace>[^{}]*?)\s*\}
    | (?<![\w:]):(?P<colon>[A-Za-z_]\w*)
    """,
    re.VERBOSE | re.DOTALL,
)
_NAME = re.compile(r"[A-Za-z_]\w*\Z")


def bind(text: str, namespace: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``text`` with every placeholder replaced by a literal; and the values bound, by name."""
    bound: dict[str, Any] = {}

    def replace(match: re.Match[str]) -> str:
        if match.group("skip") is not None:
            return match.group(0)
        name = match.group("brace") if match.group("brace") is not None else match.group("colon")
        if not _NAME.match(name):
            raise BindError(f"{{{name}}}: only a notebook variable's name can be bound, not an expression")
        if name not in namespace:
            raise BindError(f"{name!r} is not defined in the notebook")
        value = namespace[name]
        if _MODEL_ARGUMENT.search(match.string, 0, match.start()):  # TREES(:model): sent as a parameter
            bound[name] = _model_parameter(value, name)
            return f":{name}"
        if isinstance(value, pd.DataFrame) and _PREDICTOR_PLACE.search(match.string, 0, match.start()):
            return predictor(value)  # VALIDATE ... ~ :fit, a stored LOGISTIC or COX result
        literal = sql_literal(value, name)
        bound[name] = _jsonable(value)
        return literal

    return _TOKEN.sub(replace, text), bound


_MODEL_ARGUMENT = re.compile(r"\bTREES\s*\(\s*\Z", re.IGNORECASE)
_PREDICTOR_PLACE = re.compile(r"~\s*\Z")


def _model_parameter(value: Any, name: str) -> Any:
    """A model given to ``TREES(:name)`` (docs/models.md): not an SQL literal but a statement
    parameter, sent as JSON in the signed envelope (a dict, or its JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BindError(f"{name}: the model is not valid JSON") from None
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise BindError(f"{name}: a model is plain JSON (export it with mpc_jupyter.models.export_sklearn)") from None


def sql_literal(value: Any, name: str = "value") -> str:
    """One SQL literal for ``value``; ``BindError`` for a type without one."""
    if isinstance(value, list | tuple | set | frozenset | np.ndarray | pd.Series | pd.Index):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        if not items:
            raise BindError(f"{name}: an empty list cannot be bound (SQL has no empty IN list)")
        return "(" + ", ".join(_scalar(item, name) for item in items) + ")"
    return _scalar(value, name)


def _scalar(value: Any, name: str) -> str:
    if value is None or value is pd.NaT:
        return "NULL"
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        number = int(value)
        return str(number) if number >= 0 else f"({number})"
    if isinstance(value, float | np.floating):
        real = float(value)
        if not math.isfinite(real):
            raise BindError(f"{name}: {real} has no SQL literal")
        return repr(real) if real >= 0 else f"({real!r})"
    if isinstance(value, str):
        if "\x00" in value:
            raise BindError(f"{name}: strings with NUL characters cannot be bound")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{pd.Timestamp(value).isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    raise BindError(f"{name}: a {type(value).__name__} cannot be bound as an SQL value")


def _jsonable(value: Any) -> Any:
    """The bound value as the signed envelope records it (JSON types only)."""
    if isinstance(value, list | tuple | set | frozenset | np.ndarray | pd.Series | pd.Index):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        return [_jsonable(v) for v in items]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
