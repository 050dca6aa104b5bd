"""Charts of query results (matplotlib), drawn so that suppression stays visible.

A suppressed cell (``"<k"`` in a result column, k the minimum cell size) is never drawn as zero, which would be a
false, and for a count a disclosive, value: it is a gap, marked with a hatched band and the
label ``<k``. Every function returns a ``matplotlib.figure.Figure`` made without pyplot
(no global state, nothing shown twice); the extension registers its PNG display.

Input contracts (column names default to what the planner produces):

* :func:`bar` — one row per cell; key columns (the plan's group keys, else the first
  column) and a value column. One key: one bar per row. Two keys: the second key's values
  are side-by-side bars in each group of the first. Error bars when ``<value>_ci_low`` and
  ``<value>_ci_high`` exist (``PROPORTION``, ``RATE``).
* :func:`hist` — binned counts: one row per bin in bin order, a key (a ``CASE`` label or a
  numeric grid value) and a count; bars touch. Numeric keys are placed at their value.
* :func:`step` — a step curve per group (e.g. Kaplan-Meier): ``time``, ``estimate`` and
  optional ``<estimate>_ci_low``/``_ci_high`` band columns, rows in time order.
* :func:`forest` — one row per term: ``estimate``, ``<estimate>_ci_low``, ``_ci_high``;
  labels from ``label`` or the index; a reference line at ``ref`` (0 for coefficients,
  1 on a log axis for ratios).

:func:`plot` picks one from the result's shape (``kind="auto"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .results import is_suppressed

KINDS = ("auto", "bar", "hist", "step", "forest")
DEFAULT_FIGSIZE = (6.4, 4.0)


def plot(frame: pd.DataFrame, kind: str = "auto", figsize: Sequence[float] = DEFAULT_FIGSIZE, **options: Any) -> Figure:
    """A chart of ``frame``; ``kind`` one of :data:`KINDS` (``auto`` looks at the columns)."""
    if kind == "auto":
        kind = _guess_kind(frame)
    if kind == "bar":
        return bar(frame, figsize=figsize, **options)
    if kind == "hist":
        return hist(frame, figsize=figsize, **options)
    if kind == "step":
        return step(frame, figsize=figsize, **options)
    if kind == "forest":
        return forest(frame, figsize=figsize, **options)
    raise ValueError(f"unknown chart kind {kind!r} (kinds: {', '.join(KINDS)})")


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The group keys: the plan's keys when the result has its plan, else the first column."""
    plan = frame.attrs.get("plan") or {}
    keys = [k["name"] for k in plan.get("keys", []) if k["name"] in frame.columns]
    return keys or list(frame.columns[:1])


def value_columns(frame: pd.DataFrame) -> list[str]:
    """Output columns that are values (not keys, not interval limits)."""
    keys = set(key_columns(frame))
    return [c for c in frame.columns if c not in keys and not str(c).endswith(("_ci_low", "_ci_high"))]


def bar(
    frame: pd.DataFrame,
    value: str | None = None,
    x: str | None = None,
    group: str | None = None,
    figsize: Sequence[float] = DEFAULT_FIGSIZE,
) -> Figure:
    """Grouped bars of ``value`` by ``x`` (and ``group``), with CI error bars when present."""
    keys = key_columns(frame)
    x = x or keys[0]
    group = group if group is not None else next((k for k in keys if k != x), None)
    value = value or value_columns(frame)[0]
    fig = Figure(figsize=_size(figsize), layout="constrained")
    ax = fig.add_subplot()
    categories = list(dict.fromkeys(frame[x]))
    series = list(dict.fromkeys(frame[group])) if group else [None]
    width = 0.8 / len(series)
    top = _finite_max(frame, [value, f"{value}_ci_high"])
    for j, level in enumerate(series):
        rows = frame if level is None else frame[frame[group] == level]
        where = {c: i for i, c in enumerate(categories)}
        pos = np.array([where[c] for c in rows[x]], dtype=float) - 0.4 + width * (j + 0.5)
        heights, hidden = _numeric(rows[value])
        label = None if level is None else f"{group} = {level}"
        shown = ~hidden
        ax.bar(pos[shown], heights[shown], width=width * 0.95, label=label, color=f"C{j}")
        low, high = f"{value}_ci_low", f"{value}_ci_high"
        if low in rows and high in rows:
            lo, _ = _numeric(rows[low])
            hi, _ = _numeric(rows[high])
            err = np.vstack([heights - lo, hi - heights])[:, shown]
            ax.errorbar(pos[shown], heights[shown], yerr=err, fmt="none", ecolor="0.2", capsize=3)
        _mark_gaps(ax, pos[hidden], rows[value][hidden], width * 0.95, top)
    _category_ticks(ax, np.arange(len(categories), dtype=float), [str(c) for c in categories], figsize)
    ax.set_xlabel(x)
    ax.set_ylabel(value)
    if group:
        ax.legend(title=None, fontsize="small")
    return fig


def hist(
    frame: pd.DataFrame, value: str | None = None, key: str | None = None, figsize: Sequence[float] = DEFAULT_FIGSIZE
) -> Figure:
    """A histogram from binned counts: one touching bar per bin, suppressed bins as gaps."""
    key = key or key_columns(frame)[0]
    value = value or value_columns(frame)[0]
    fig = Figure(figsize=_size(figsize), layout="constrained")
    ax = fig.add_subplot()
    labels = frame[key]
    numeric = pd.api.types.is_numeric_dtype(labels)
    if numeric:
        pos = labels.to_numpy(dtype=float)
        width = float(np.min(np.diff(np.sort(pos)))) if len(pos) > 1 else 1.0
    else:
        pos, width = np.arange(len(frame), dtype=float), 1.0
    heights, hidden = _numeric(frame[value])
    ax.bar(pos[~hidden], heights[~hidden], width=width, align="center", edgecolor="white", color="C0")
    _mark_gaps(ax, pos[hidden], frame[value][hidden], width, _finite_max(frame, [value]))
    if not numeric:
        _category_ticks(ax, pos, [str(v) for v in labels], figsize)
    ax.set_xlabel(key)
    ax.set_ylabel(value)
    return fig


def step(
    frame: pd.DataFrame,
    time: str = "time",
    estimate: str = "estimate",
    group: str | None = None,
    figsize: Sequence[float] = DEFAULT_FIGSIZE,
) -> Figure:
    """Step curves of ``estimate`` over ``time`` (one per ``group``, by default the first of a
    KAPLAN_MEIER result's ``BY`` keys), with CI bands if present."""
    group = group if group is not None else next(iter(frame.attrs.get("by") or []), None)
    fig = Figure(figsize=_size(figsize), layout="constrained")
    ax = fig.add_subplot()
    groups = frame.groupby(group, sort=False) if group else [(None, frame)]
    for j, (level, rows) in enumerate(groups):
        t = rows[time].to_numpy(dtype=float)
        y, hidden = _numeric(rows[estimate])
        label = None if level is None else f"{group} = {level}"
        ax.step(t, y, where="post", color=f"C{j}", label=label)
        low, high = f"{estimate}_ci_low", f"{estimate}_ci_high"
        if low in rows and high in rows:
            lo, _ = _numeric(rows[low])
            hi, _ = _numeric(rows[high])
            ax.fill_between(t, lo, hi, step="post", alpha=0.2, color=f"C{j}", linewidth=0)
        for at, text in zip(t[hidden], rows[estimate][hidden], strict=True):
            ax.annotate(str(text), (at, 0), xycoords=("data", "axes fraction"), fontsize="small", color="0.4")
    ax.set_xlabel(time)
    ax.set_ylabel(estimate)
    if group:
        ax.legend(fontsize="small")
    return fig


def forest(
    frame: pd.DataFrame,
    estimate: str = "coef",
    label: str | None = None,
    ref: float = 0.0,
    log: bool = False,
    figsize: Sequence[float] | None = None,
) -> Figure:
    """A forest plot: one point and interval per term, the first row at the top."""
    low, high = f"{estimate}_ci_low", f"{estimate}_ci_high"
    if low not in frame and {"[0.025", "0.975]"} <= set(frame.columns):  # a model summary (statsmodels' names)
        low, high = "[0.025", "0.975]"
    if low not in frame and {f"{estimate} lower 95%", f"{estimate} upper 95%"} <= set(frame.columns):  # lifelines'
        low, high = f"{estimate} lower 95%", f"{estimate} upper 95%"
    missing = [c for c in (estimate, low, high) if c not in frame]
    if missing:
        raise ValueError(f"forest plot needs columns {estimate}, {low}, {high} (missing: {', '.join(missing)})")
    names = [str(v) for v in (frame[label] if label else frame.index)]
    n = len(frame)
    fig = Figure(figsize=_size(figsize or (6.4, 1.0 + 0.4 * n)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)[::-1].astype(float)
    est, hidden = _numeric(frame[estimate])
    lo, _ = _numeric(frame[low])
    hi, _ = _numeric(frame[high])
    shown = ~hidden
    err = np.vstack([est - lo, hi - est])[:, shown]
    ax.errorbar(est[shown], y[shown], xerr=err, fmt="s", color="C0", ecolor="0.2", capsize=3)
    for at, text in zip(y[hidden], frame[estimate][hidden], strict=True):
        ax.annotate(str(text), (0.5, at), xycoords=("axes fraction", "data"), ha="center", va="center", color="0.4")
    ax.set_ylim(-0.5, n - 0.5)
    ax.axvline(ref, color="0.5", linestyle="--", linewidth=1)
    if log:
        ax.set_xscale("log")
    ax.set_yticks(y, names)
    ax.set_xlabel(estimate)
    return fig


CHARS_PER_INCH = 10.0
"""Tick label characters that fit side by side in an inch of figure width (10 pt text, gaps)."""


def _category_ticks(ax: Axes, positions: np.ndarray, labels: Sequence[str], figsize: Sequence[float]) -> None:
    """Category labels under the bars, slanted when they would overlap side by side."""
    ax.set_xticks(positions, list(labels))
    longest = max((len(label) for label in labels), default=0)
    if longest * len(labels) > _size(figsize)[0] * CHARS_PER_INCH:
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")


def _size(figsize: Sequence[float]) -> tuple[float, float]:
    width, height = figsize
    return float(width), float(height)


def _guess_kind(frame: pd.DataFrame) -> str:
    if {"time", "estimate"} <= set(frame.columns):
        return "step"
    cols = set(frame.columns)
    intervals = {"coef_ci_low", "coef_ci_high"} <= cols or "[0.025" in cols or "coef lower 95%" in cols
    if "coef" in cols and intervals:  # ours, statsmodels' and lifelines' (Cox) names
        return "forest"
    return "bar"


def _numeric(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as floats (suppressed cells NaN) and the mask of suppressed cells."""
    hidden = is_suppressed(column)
    values = pd.to_numeric(column.where(~hidden), errors="coerce").to_numpy(dtype=float)
    return values, hidden


def _finite_max(frame: pd.DataFrame, columns: list[str]) -> float:
    found = [_numeric(frame[c])[0] for c in columns if c in frame]
    values = np.concatenate(found) if found else np.array([])
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size and values.max() > 0 else 1.0


def _mark_gaps(ax: Axes, positions: np.ndarray, labels: pd.Series, width: float, top: float) -> None:
    """Hatched bands where suppressed cells would be, labelled ``<k``: a gap, never a zero."""
    for at, label in zip(positions, labels, strict=True):
        ax.bar(at, top, width=width, fill=False, hatch="///", edgecolor="0.6", linewidth=0.0, gid="suppressed")
        ax.annotate(str(label), (at, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize="small")
