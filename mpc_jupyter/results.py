"""Query results as the analyst sees them: a DataFrame with a receipt line under it.

:class:`MpcResult` is a ``pandas.DataFrame`` subclass, so everything pandas does works on it
unchanged; only its notebook display differs: the table (suppressed cells read ``<k``) and,
under it, one line saying who computed it, how long it took and what it cost::

    3 sites (north, central, south) · 0.84 s · 287 rounds · 590 kB · plan 84173456 · policies 41877835

Operations on a result (``head``, ``merge``, arithmetic) give plain DataFrames: the receipt
describes the released answer, not what the analyst made of it. The full record stays in
``.attrs`` (see :mod:`mpc_jupyter.client`); :func:`receipts` tabulates the receipts and
:func:`mpc_cost` the MPC cost of the plan.
"""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd

from site_agent.query.execute import dry_run_stats
from site_agent.query.plan import Plan

SUPPRESSED = re.compile(r"<\d+")
"""How a suppressed cell reads in a result column: ``<k`` with the minimum cell size k (``<5``)."""


def is_suppressed(column: pd.Series) -> np.ndarray:
    """Which cells of ``column`` are suppressed (a boolean array)."""
    return np.array([isinstance(v, str) and SUPPRESSED.fullmatch(v) is not None for v in column], dtype=bool)


class MpcResult(pd.DataFrame):  # type: ignore[misc]  # pandas ships no type stubs here
    """A released query result: a DataFrame, displayed with its receipt line."""

    # pandas builds derived frames with _constructor: they are plain DataFrames.
    @property
    def _constructor(self) -> Any:
        return pd.DataFrame

    display_limit: int | None = None
    """Rows shown in the notebook (None: pandas' own ``display.max_rows``)."""

    def _repr_html_(self) -> str | None:
        with pd.option_context("display.max_rows", self.display_limit or pd.get_option("display.max_rows")):
            table = pd.DataFrame(self)._repr_html_() or ""
        line = html.escape(receipt_line(self))
        fit = model_line(self)
        head = f'<div class="mpc-model">{html.escape(fit)}</div>' if fit else ""
        return f'{head}{table}<div class="mpc-receipt" style="font-size:85%;color:#666">{line}</div>'

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(summary_text(self))

    def print_summary(self) -> None:
        """Print the result as text (see :func:`print_summary`)."""
        print_summary(self)

    def receipt_line(self) -> str:
        """The one-line receipt shown under the table."""
        return receipt_line(self)

    def receipts(self) -> pd.DataFrame:
        """One row per site: its signed receipt (see :func:`receipts`)."""
        return receipts(self)


def as_result(frame: pd.DataFrame, **attrs: Any) -> MpcResult:
    """``frame`` (as the client returns it) as an :class:`MpcResult`, ``attrs`` added."""
    result = MpcResult(frame)
    result.attrs = {**frame.attrs, **attrs}
    return result


def mpc_cost(frame: pd.DataFrame) -> tuple[int, int] | None:
    """(rounds, bytes sent by the committee) of the result's plan, or None without a plan.

    The protocol's communication does not depend on the data, so the plan alone fixes it: it
    is measured once by running the plan's MPC program on zeros, and cached in ``.attrs``.
    """
    cached = frame.attrs.get("mpc_cost")
    if cached is not None:
        return int(cached[0]), int(cached[1])
    data = frame.attrs.get("plan")
    # a model's rounds depend on its iterations (see "stats"); linkage is not a planner's plan
    if data is None or "model" in data or data.get("kind") == "linkage":
        return None
    stats = [s for _, s in dry_run_stats(Plan(data), len(frame.attrs.get("sites", [])) or 3)]
    cost = (sum(s.rounds for s in stats), sum(s.bytes_sent for s in stats))
    frame.attrs["mpc_cost"] = list(cost)
    return cost


def model_line(frame: pd.DataFrame) -> str:
    """A model summary's fit statistics on one line (empty for other results), as statsmodels
    prints above its coefficient table."""
    attrs = frame.attrs
    if "model" not in attrs:
        return ""
    if attrs["model"] == "VALIDATE":
        grid = attrs["grid"]
        refused = attrs.get("calibration_refused") or {}
        return " · ".join(
            [
                "VALIDATE LOGISTIC",
                f"threshold {attrs['threshold']:g}",
                f"AUC grid {grid['lo']:g} to {grid['hi']:g} step {grid['step']:g}",
                *([f"no calibration fit for {', '.join(refused)} (too few events)"] if refused else []),
            ]
        )
    if attrs["model"] == "VALIDATE COX":
        times, risks = attrs["time_grid"], attrs["risk_grid"]
        return " · ".join(
            [
                "VALIDATE COX",
                f"time grid {times['lo']:g} to {times['hi']:g} step {times['step']:g}",
                f"risk grid from {risks['lo']:.4g} step {risks['step']:.4g} ({risks['bins']} bins)",
            ]
        )
    dropped = attrs.get("n_dropped")
    rows = f"n = {attrs['n']}" + (
        f" ({dropped} dropped)" if dropped else " (dropped rows withheld: 1 to k-1)" if dropped is None else ""
    )
    if attrs["model"] == "GRADIENT":
        return f"GRADIENT LOGISTIC · {rows} · score at the given coefficients"
    cox = attrs["model"] == "COX"
    parts = [
        f"COX ({attrs['ties']} ties)" if cox else f"{attrs['model']} ({attrs['family']})",
        rows,
        (f"events = {attrs['events']}" if attrs["events"] is not None else "events withheld (n - events: 1 to k-1)")
        if cox
        else f"df resid = {attrs['df_resid']}",
    ]
    if "r_squared" in attrs:
        parts.append(f"R² = {attrs['r_squared']:.4f}")
    if cox:  # lifelines' print_summary: the log partial likelihood and the likelihood ratio test
        parts += [
            f"log partial likelihood = {attrs['llf']:.4f}",
            f"LR test = {attrs['lr_test']:.2f} on {attrs['lr_df']} df, p = {attrs['lr_p']:.3g}",
            f"Concordance = {attrs['concordance']:.4f}",
        ]
    else:
        parts += [f"log-likelihood = {attrs['llf']:.4f}", f"deviance = {attrs['deviance']:.4f}"]
    steps = attrs.get("iterations")
    parts.append(f"converged in {steps} steps" if attrs.get("converged") else f"NOT converged after {steps} steps")
    return " · ".join(parts)


def summary_text(frame: pd.DataFrame, whole: bool = False) -> str:
    """A result as text: a model's fit statistics on one line (as statsmodels and lifelines print
    them above the coefficient table), the table (every row if ``whole``, else as pandas shows
    it), and the receipt line."""
    fit = model_line(frame)
    table = pd.DataFrame(frame).to_string() if whole else repr(pd.DataFrame(frame))
    return f"{fit + chr(10) if fit else ''}{table}\n{receipt_line(frame)}"


def print_summary(frame: pd.DataFrame) -> None:
    """Print :func:`summary_text` of a result, e.g. of ``Consortium.query("LINEAR ...")``, as
    lifelines' ``print_summary()`` does."""
    print(summary_text(frame, whole=True))


def receipt_line(frame: pd.DataFrame) -> str:
    """Sites, seconds, rounds, bytes, plan and policy digests (short), on one line."""
    attrs = frame.attrs
    sites = attrs.get("sites", [])
    parts = [f"{len(sites)} sites ({', '.join(sites)})"]
    if "seconds" in attrs:
        parts.append(f"{attrs['seconds']:.2f} s")
    cost = mpc_cost(frame)
    if cost is not None:
        parts += [f"{cost[0]:,} rounds", _bytes(cost[1])]
    if "plan_digest" in attrs:
        parts.append(f"plan {attrs['plan_digest'][:8]}")
    digests = attrs.get("policy_digests") or {}
    if digests:
        distinct = list(dict.fromkeys(d[:8] for d in digests.values()))
        parts.append(("policy " if len(distinct) == 1 else "policies ") + " ".join(distinct))
    suppressed = sum(sum(flags) for flags in attrs.get("suppressed", {}).values())
    if suppressed:
        parts.append(f"{suppressed} suppressed")
    return " · ".join(parts)


def receipts(frame: pd.DataFrame) -> pd.DataFrame:
    """The sites' signed receipts of a result: site, audit log position, entry hash, signature,
    and the site's policy digest when known. Check them against a site's audit log with
    ``mpc-site-agent audit verify``."""
    digests = frame.attrs.get("policy_digests") or {}
    rows = [{**r, "policy_digest": digests.get(r["site"], "")} for r in frame.attrs.get("receipts", [])]
    return pd.DataFrame(rows, columns=["site", "seq", "hash", "signature", "policy_digest"])


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} B"
