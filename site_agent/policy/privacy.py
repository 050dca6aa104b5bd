"""A site's differential-privacy rules: the ``[privacy]`` section of ``policy.toml``.

::

    [privacy]
    mode = "both"              # "exact": exact release only; "dp": DP mode only; "both": either
    epsilon_per_query = 1.0    # the most one query may spend
    epsilon = 10.0             # each analyst's budget per period (RDP composition, see below)
    delta = 1e-5               # the delta of every (epsilon, delta) statement
    period = "365d"            # the budget renews after this long ("30d", "12h", or "none": never)
    max_rows_per_person = 1    # DP mode: rows one person contributes to one query at most

The strictest site wins, as for every rule (:func:`combine`): the modes every site allows, the
smallest epsilons and delta, the longest period, the fewest rows per person. The budget is kept
by every site's accountant (:mod:`site_agent.privacy.accountant`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from site_agent.errors import ConfigError, PolicyRefusal
from site_agent.tomlfile import Section

MODES = {"exact": frozenset({"exact"}), "dp": frozenset({"dp"}), "both": frozenset({"exact", "dp"})}
_PERIOD = re.compile(r"\A(\d+)([dh])\Z")
_UNIT_SECONDS = {"d": 86400, "h": 3600}


def period_seconds(period: str) -> float | None:
    """Seconds of a period such as ``"30d"`` or ``"12h"``; None for ``"none"`` (never renews)."""
    if period == "none":
        return None
    match = _PERIOD.match(period)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"period must be like '365d', '12h' or 'none', not {period!r}")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True)
class PrivacyPolicy:
    """One site's ``[privacy]`` rules (defaults: both modes, 1 per query, 10 per year, delta 1e-5)."""

    mode: str = "both"
    epsilon_per_query: float = 1.0
    epsilon: float = 10.0
    delta: float = 1e-5
    period: str = "365d"
    max_rows_per_person: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not (self.epsilon_per_query > 0 and self.epsilon > 0):
            raise ValueError("epsilon and epsilon_per_query must be positive")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), not {self.delta}")
        if self.max_rows_per_person < 1:
            raise ValueError("max_rows_per_person must be at least 1")
        period_seconds(self.period)

    @property
    def modes(self) -> frozenset[str]:
        return MODES[self.mode]

    @property
    def period_seconds(self) -> float | None:
        return period_seconds(self.period)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "epsilon_per_query": self.epsilon_per_query,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "period": self.period,
            "max_rows_per_person": self.max_rows_per_person,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PrivacyPolicy:
        return cls(
            mode=str(data["mode"]),
            epsilon_per_query=float(data["epsilon_per_query"]),
            epsilon=float(data["epsilon"]),
            delta=float(data["delta"]),
            period=str(data["period"]),
            max_rows_per_person=int(data["max_rows_per_person"]),
        )


def load_privacy(section: Section, also: tuple[str, ...] = ()) -> PrivacyPolicy:
    """The ``[privacy]`` section (absent: the defaults); ``ConfigError`` naming the key. ``also``
    are the section's other keys, read by the caller (output review)."""
    section.only("mode", "epsilon_per_query", "epsilon", "delta", "period", "max_rows_per_person", *also)
    values: dict[str, Any] = {}
    for key in ("epsilon_per_query", "epsilon", "delta"):
        if key in section:
            value = section.data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise section.error(key, f"must be a number, got {type(value).__name__}")
            values[key] = float(value)
    if "mode" in section:
        values["mode"] = section.get_str("mode")
    if "period" in section:
        values["period"] = section.get_str("period")
    if "max_rows_per_person" in section:
        values["max_rows_per_person"] = section.get_int("max_rows_per_person", minimum=1)
    try:
        return PrivacyPolicy(**values)
    except ValueError as exc:
        raise ConfigError(f"{section.where(None)}: {exc}") from None


def combine_privacy(parts: Iterable[PrivacyPolicy]) -> PrivacyPolicy:
    """The strictest of several sites' rules. Modes no site shares combine to ``both`` here and are
    refused by :func:`check_mode`, which names the site (the combination keeps every part)."""
    ps = list(parts)
    modes = frozenset.intersection(*(p.modes for p in ps))
    mode = next((name for name, m in MODES.items() if m == modes), "both")
    periods = [p.period for p in ps]
    longest = "none" if "none" in periods else max(periods, key=lambda q: period_seconds(q) or 0.0)
    return PrivacyPolicy(
        mode=mode,
        epsilon_per_query=min(p.epsilon_per_query for p in ps),
        epsilon=min(p.epsilon for p in ps),
        delta=min(p.delta for p in ps),
        period=longest,
        max_rows_per_person=min(p.max_rows_per_person for p in ps),
    )


def check_mode(sites: Iterable[tuple[str, PrivacyPolicy]], dp: bool) -> None:
    """Refuse a query in a mode some site does not allow (rule ``mode``), naming that site."""
    wanted = "dp" if dp else "exact"
    for site, p in sites:
        if wanted not in p.modes:
            how = "only in DP mode (%%mpc --dp)" if p.mode == "dp" else "only exactly (without --dp)"
            raise PolicyRefusal(site, "mode", f"this site answers {how}")
