"""The transparency report: what a site's audit log says happened over a period, for its DPO.

``build_report`` reads the log through ``verified_entries`` (canonical lines, sequence numbers,
the hash chain of every entry, and the newest entry's signature, which authenticates every
entry before it: see ``site_agent.audit.verify``), refuses a log that does not verify
(``AuditError`` naming the first bad line), and summarises the entries whose time falls in
``[since, until)``:

* requests per analyst and statement kind: released, refused, failed, explained;
* every released output by name and shape (the log holds no values, so neither does this);
* every refusal with the policy rule that refused (or its category when no rule applies);
* output review: results held, the DPOs' decisions, releases after review (also listed with
  the outputs), and results discarded (denied or expired);
* failures with their reasons; explains;
* privacy budget per analyst, from the entries' ``BUDGET_FIELD`` where the log records one (DP
  queries): the sum of the queries' epsilons in the period, and the accountant's spent epsilon
  (composed, so at most that sum) and budget at the site after the analyst's last DP query;
* linkage key requests per requesting site (``LINKAGE_KIND`` entries, written by committee
  members when a site prepares its linkage keys): batches answered and points raised, batches
  refused;
* other events (membership changes, connections refused before any request);
* a per-day series of the above for the chart.

Rendering (text and HTML with a chart) lives in ``site_agent.audit.render``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from site_agent.audit.entry import EXPLAINED
from site_agent.audit.log import format_time
from site_agent.audit.verify import VerifyResult, verified_entries
from site_agent.crypto.signing import Ed25519PublicKey
from site_agent.errors import AuditError

BUDGET_FIELD = "privacy"
"""The audit entry field of a DP query (``site_agent.agent.service``): an object with the query's
``epsilon`` and the analyst's ``spent`` and ``budget`` at the site after it. Exact queries and
logs written before DP mode have none: the report then says "not recorded"."""

NO_KIND = "-"
"""The statement kind shown for requests refused before their plan was compiled."""

CONSORTIUM = "(consortium)"
"""The analyst name of membership-change entries (site_agent.agent.service)."""

LINKAGE_KIND = "linkage_keys"
"""The statement kind of a linkage key request's entry (site_agent.agent.linkage): ``analyst`` is
the requesting site, the reveal's shape the number of points answered."""

OUTCOMES = ("released", "held", "refused", "failed", "explained")
"""What became of a request: ``held`` for output review (released or discarded later: ``reviews``)."""


def parse_when(text: str, end: bool = False) -> dt.datetime:
    """A date (``2026-05-01``: midnight UTC, or the next midnight if ``end``) or an ISO 8601
    time (UTC when it names no zone); ``ValueError`` otherwise."""
    text = text.strip()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        when = dt.datetime.fromisoformat(text)
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start + dt.timedelta(days=1) if end else start


@dataclass(frozen=True)
class Output:
    """One request that released outputs: which, to whom, when (names and shapes only)."""

    seq: int
    time: str
    analyst: str
    kind: str
    query: str
    reveals: tuple[tuple[str, tuple[int, ...]], ...]
    budget: float | None


@dataclass(frozen=True)
class Record:
    """One request that released nothing (refused, failed, explained) or another event, and why:
    ``rule`` is the policy key that refused, else the category the agent wrote (``query``,
    ``peer``, ``local``, ...)."""

    seq: int
    time: str
    analyst: str
    kind: str
    rule: str
    reason: str
    query: str


@dataclass
class Report:
    """The summary of one site's audit log over ``[since, until)``."""

    site: str
    verified: VerifyResult
    since: dt.datetime
    until: dt.datetime | None
    entries: int = 0
    """Entries in the period."""
    requests: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    """(analyst, statement kind) -> outcome (``OUTCOMES``) -> count."""
    outputs: list[Output] = field(default_factory=list)
    refusals: list[Record] = field(default_factory=list)
    failures: list[Record] = field(default_factory=list)
    explains: list[Record] = field(default_factory=list)
    rules: Counter[str] = field(default_factory=Counter)
    """Refusals per rule (or category)."""
    budget: dict[str, float] = field(default_factory=dict)
    """Analyst -> the epsilons of the analyst's DP queries in the period, summed."""
    balance: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Analyst -> (spent, budget) at the site after the analyst's last DP query in the period."""
    budget_recorded: bool = False
    """Whether any entry in the period records a budget (else the column reads "not recorded")."""
    reviews: list[Record] = field(default_factory=list)
    """Output review steps after a result was held: approved, denied (at the deciding site),
    released, discarded, expired (at every member); ``rule`` holds the action."""
    linkage: dict[str, Counter[str]] = field(default_factory=dict)
    """Requesting site -> ``answered``, ``refused`` (linkage key batches) and ``points`` answered."""
    events: list[Record] = field(default_factory=list)
    """Membership changes and connections refused before any request."""
    daily: dict[dt.date, Counter[str]] = field(default_factory=dict)
    """Day -> outcome -> count."""
    daily_budget: dict[dt.date, float] = field(default_factory=dict)
    """Day -> budget spent (days without a recorded budget are absent)."""

    @property
    def analysts(self) -> list[str]:
        return sorted({a for a, _ in self.requests})

    def totals(self) -> Counter[str]:
        """Outcome -> count over every analyst and kind."""
        out: Counter[str] = Counter()
        for counts in self.requests.values():
            out.update(counts)
        return out

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values (``report --json``), for a DPO's own tools."""

        def record(r: Record) -> dict[str, Any]:
            return {
                "seq": r.seq,
                "time": r.time,
                "analyst": r.analyst,
                "kind": r.kind,
                "rule": r.rule,
                "reason": r.reason,
                "query": r.query,
            }

        return {
            "site": self.site,
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until is not None else None,
            "verified_entries": self.verified.entries,
            "last_hash": self.verified.last_hash,
            "entries": self.entries,
            "requests": [
                {"analyst": a, "kind": k, **{o: counts.get(o, 0) for o in OUTCOMES}}
                for (a, k), counts in self.requests.items()
            ],
            "outputs": [
                {
                    "seq": o.seq,
                    "time": o.time,
                    "analyst": o.analyst,
                    "kind": o.kind,
                    "query": o.query,
                    "reveals": [{"name": n, "shape": list(shape)} for n, shape in o.reveals],
                    "epsilon": o.budget,
                }
                for o in self.outputs
            ],
            "refusals": [record(r) for r in self.refusals],
            "failures": [record(r) for r in self.failures],
            "explains": [record(r) for r in self.explains],
            "events": [record(r) for r in self.events],
            "linkage_key_requests": {
                site: {o: counts.get(o, 0) for o in ("answered", "refused", "points")}
                for site, counts in self.linkage.items()
            },
            "reviews": [{**record(r), "action": r.rule} for r in self.reviews],
            "rules": dict(sorted(self.rules.items())),
            "budget": dict(sorted(self.budget.items())) if self.budget_recorded else None,
            "balance": {a: {"spent": sp, "budget": b} for a, (sp, b) in sorted(self.balance.items())},
            "daily": [
                {
                    "day": d.isoformat(),
                    **{o: c.get(o, 0) for o in OUTCOMES},
                    "epsilon": self.daily_budget.get(d, 0.0) if self.budget_recorded else None,
                }
                for d, c in self.daily.items()
            ],
        }


def _category(reason: str) -> str:
    """The category the agent wrote before the message (``policy: ...``, ``peer: ...``)."""
    head, sep, _ = reason.partition(":")
    return head if sep and head.isidentifier() else "failed"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _budget(entry: Mapping[str, Any]) -> tuple[float, float | None, float | None] | None:
    """(the query's epsilon, spent after it, budget) of a DP query's entry, else None."""
    record = entry.get(BUDGET_FIELD)
    if not isinstance(record, Mapping) or _number(record.get("epsilon")) is None:
        return None
    return float(record["epsilon"]), _number(record.get("spent")), _number(record.get("budget"))


def _output(entry: Mapping[str, Any], kind: str, spent: float | None) -> Output:
    return Output(
        seq=entry["seq"],
        time=entry["time"],
        analyst=entry["analyst"],
        kind=kind,
        query=entry["query"],
        reveals=tuple((r["name"], tuple(r["shape"])) for r in entry["reveals"]),
        budget=spent,
    )


def summarise(
    site: str,
    verified: VerifyResult,
    entries: Iterable[Mapping[str, Any]],
    since: dt.datetime,
    until: dt.datetime | None = None,
) -> Report:
    """Summarise verified ``entries`` whose time is in ``[since, until)``.

    Entry times are fixed-width RFC 3339 UTC strings (``format_time``), so the period is
    compared as strings, without parsing every entry's time."""
    report = Report(site=site, verified=verified, since=since, until=until)
    lo = format_time(since)
    hi = format_time(until) if until is not None else None
    requests: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    daily: defaultdict[dt.date, Counter[str]] = defaultdict(Counter)
    daily_budget: defaultdict[dt.date, float] = defaultdict(float)
    budget: defaultdict[str, float] = defaultdict(float)
    for entry in entries:
        when = entry["time"]
        if when < lo or (hi is not None and when >= hi):
            continue
        report.entries += 1
        analyst, reason, decision = entry["analyst"], entry["reason"], entry["decision"]
        kind = entry.get("kind") or NO_KIND
        record = Record(
            seq=entry["seq"],
            time=when,
            analyst=analyst,
            kind=kind,
            rule=entry.get("rule") or _category(reason),
            reason=reason,
            query=entry["query"],
        )
        if kind == LINKAGE_KIND:
            counts = report.linkage.setdefault(analyst, Counter())
            if decision == "accepted":
                counts["answered"] += 1
                counts["points"] += sum(int(r["shape"][0]) for r in entry["reveals"] if r["shape"])
            else:
                counts["refused"] += 1
            continue
        if analyst == CONSORTIUM or (not entry["query"] and decision == "refused"):
            report.events.append(record)
            continue
        day = dt.date.fromisoformat(when[:10])
        review = entry.get("review")
        action = review.get("action") if isinstance(review, Mapping) else None
        if action is not None and action != "held":
            report.reviews.append(dataclasses.replace(record, rule=str(action)))
            if action == "released":
                report.outputs.append(_output(entry, kind, None))
            continue
        if action == "held":
            outcome = "held"
        elif reason == EXPLAINED:
            outcome = "explained"
            report.explains.append(record)
        elif decision == "accepted":
            outcome = "released"
            dp = _budget(entry)
            spent = dp[0] if dp is not None else None
            if dp is not None:
                report.budget_recorded = True
                budget[analyst] += dp[0]
                daily_budget[day] += dp[0]
                if dp[1] is not None and dp[2] is not None:
                    report.balance[analyst] = (dp[1], dp[2])
            report.outputs.append(_output(entry, kind, spent))
        elif decision == "refused":
            outcome = "refused"
            report.refusals.append(record)
            report.rules[record.rule] += 1
        else:
            outcome = "failed"
            report.failures.append(record)
        requests[(analyst, kind)][outcome] += 1
        daily[day][outcome] += 1
    report.linkage = dict(sorted(report.linkage.items()))
    report.requests = dict(sorted(requests.items()))
    report.daily = dict(sorted(daily.items()))
    report.daily_budget = dict(daily_budget)
    report.budget = dict(budget)
    return report


def build_report(
    path: Path | str,
    public_key: Ed25519PublicKey,
    site: str,
    since: dt.datetime,
    until: dt.datetime | None = None,
) -> Report:
    """Verify the log at ``path`` and summarise ``[since, until)``; ``AuditError`` naming the
    first bad line if the log does not verify (nothing is summarised from a broken chain)."""
    result, entries = verified_entries(path, public_key, site, every_signature=False)
    if not result.ok:
        raise AuditError(
            f"{result.path}: the audit log does not verify at line {result.bad_line} (seq {result.entries}): "
            f"{result.reason}; no report from a broken chain"
        )
    return summarise(site, result, entries, since, until)
