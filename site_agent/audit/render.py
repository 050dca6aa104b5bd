"""The transparency report as text (stdout) or one self-contained HTML page with a chart.

Every string from the log (analyst names, query text, reasons) is attacker-influenced (the
analyst is an adversary), so the HTML escapes all of it; the chart is an inline SVG drawn by
matplotlib without pyplot (no display, no global state), imported only when HTML is asked for.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Iterable, Sequence

from site_agent.audit.report import OUTCOMES, Output, Record, Report

NOT_RECORDED = "not recorded"
VERIFIED = "verified (hash chain of every entry; the newest entry's signature, which covers all before it)"
TEXT_QUERY_WIDTH = 60


def _period(report: Report) -> str:
    until = report.until.isoformat() if report.until is not None else "now"
    return f"{report.since.isoformat()} to {until}"


def _outputs(output: Output) -> str:
    return ", ".join(f"{name} {'x'.join(map(str, shape)) or 'scalar'}" for name, shape in output.reveals) or "none"


BUDGET_HEADER = ("analyst", "epsilon of DP queries (sum)", "spent at this site after the last", "budget")


def _budget_rows(report: Report) -> list[list[object]]:
    """Per analyst: the period's DP epsilons summed, and the accountant's composed spend and
    budget after the last DP query ("not recorded" without any DP entry)."""
    rows: list[list[object]] = []
    for analyst in report.analysts:
        if not report.budget_recorded:
            rows.append([analyst, NOT_RECORDED, NOT_RECORDED, NOT_RECORDED])
            continue
        spent, budget = report.balance.get(analyst, (None, None))
        rows.append(
            [
                analyst,
                f"{report.budget.get(analyst, 0.0):g}",
                "-" if spent is None else f"{spent:.4g}",
                "-" if budget is None else f"{budget:g}",
            ]
        )
    return rows


def _linkage_lines(report: Report) -> list[str]:
    """One line per site that asked for linkage keys (this site as a committee member)."""
    return [
        f"linkage key requests from {site}: {c['answered']} answered ({c['points']} points), {c['refused']} refused"
        for site, c in report.linkage.items()
    ] or ["no linkage key requests"]


def _released_line(report: Report) -> str:
    after = sum(1 for r in report.reviews if r.rule == "released")
    return f"Results released: {len(report.outputs)}" + (f" ({after} after review)." if after else ".")


def _one_line(text: str, width: int = TEXT_QUERY_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A plain text table, columns padded to their widest cell."""
    cells = [list(map(str, header)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _request_rows(report: Report) -> list[list[object]]:
    rows: list[list[object]] = []
    for (analyst, kind), counts in report.requests.items():
        rows.append([analyst, kind, *(counts.get(o, 0) for o in OUTCOMES)])
    return rows


def _record_rows(records: Sequence[Record], width: int | None) -> list[list[object]]:
    """Refusals and failures: the full reason and query text (HTML) or one line of each (text)."""
    return [
        [r.seq, r.time, r.analyst, r.kind, r.rule]
        + ([r.reason, r.query] if width is None else [_one_line(r.reason, width), _one_line(r.query, width)])
        for r in records
    ]


REVIEW_HEADER = ("seq", "time", "analyst", "action", "reason", "query")


def _review_rows(records: Sequence[Record], width: int | None) -> list[list[object]]:
    return [
        [r.seq, r.time, r.analyst, r.rule]
        + ([r.reason, r.query] if width is None else [_one_line(r.reason, width), _one_line(r.query, width)])
        for r in records
    ]


RECORD_HEADER = ("seq", "time", "analyst", "kind", "rule", "reason", "query")


def render_text(report: Report) -> str:
    """The report as plain text tables (what ``report`` prints without ``--html``)."""
    v = report.verified
    lines = [
        f"Transparency report of site {report.site}: {_period(report)}",
        f"Audit log {v.path}: {VERIFIED}, {v.entries} entries, last hash {v.last_hash}",
        f"{report.entries} entries in the period. {_released_line(report)}",
        "",
        "Requests per analyst and statement kind",
        *_table(("analyst", "kind", *OUTCOMES), _request_rows(report)),
        "",
        "Privacy budget per analyst (DP queries)",
        *_table(BUDGET_HEADER, _budget_rows(report)),
        "",
        "Refusals per rule",
        *_table(("rule", "refusals"), sorted(report.rules.items())),
        "",
        "Per day",
        *_table(
            ("day", *OUTCOMES, "epsilon of DP queries"),
            (
                [day.isoformat(), *(c.get(o, 0) for o in OUTCOMES), _day_budget(report, day)]
                for day, c in report.daily.items()
            ),
        ),
        "",
        "Output review (after a result was held)",
        *_table(REVIEW_HEADER, _review_rows(report.reviews, TEXT_QUERY_WIDTH)),
        "",
        "Outputs released (names and shapes, never values)",
        *_table(
            ("seq", "time", "analyst", "kind", "outputs", "query"),
            ([o.seq, o.time, o.analyst, o.kind, _outputs(o), _one_line(o.query)] for o in report.outputs),
        ),
        "",
        "Refusals",
        *_table(RECORD_HEADER, _record_rows(report.refusals, TEXT_QUERY_WIDTH)),
        "",
        "Failures",
        *_table(RECORD_HEADER, _record_rows(report.failures, TEXT_QUERY_WIDTH)),
        "",
        "Explains (plans described; nothing computed or released)",
        *_table(
            ("seq", "time", "analyst", "kind", "query"),
            ([r.seq, r.time, r.analyst, r.kind, _one_line(r.query)] for r in report.explains),
        ),
        "",
        "Linkage key requests per site (batches of blinded points this member answered or refused)",
        *_linkage_lines(report),
        "",
        "Other events (membership changes, connections refused before any request)",
        *_table(
            ("seq", "time", "who", "reason"), ([r.seq, r.time, r.analyst, _one_line(r.reason)] for r in report.events)
        ),
    ]
    return "\n".join(lines) + "\n"


def _day_budget(report: Report, day: dt.date) -> str:
    if not report.budget_recorded:
        return NOT_RECORDED
    return f"{report.daily_budget.get(day, 0.0):g}"


def chart_svg(report: Report) -> str:
    """Requests per day, stacked by outcome, with the budget spent per day on a second axis
    when the log records one; an inline SVG document. ``report.daily`` must not be empty."""
    import numpy as np
    from matplotlib.dates import AutoDateLocator, DateFormatter, DayLocator
    from matplotlib.figure import Figure

    days = list(report.daily)
    x = np.array(days, dtype="datetime64[D]")
    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    bottom = [0] * len(days)
    colors = {
        "released": "#2b8a3e",
        "held": "#f08c00",
        "refused": "#c92a2a",
        "failed": "#868e96",
        "explained": "#1c7ed6",
    }
    for outcome in OUTCOMES:
        heights = [report.daily[d].get(outcome, 0) for d in days]
        ax.bar(x, heights, bottom=bottom, label=outcome, color=colors[outcome], width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("requests per day")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncols=len(OUTCOMES), fontsize="small", frameon=False)
    if report.budget_recorded:
        twin = ax.twinx()
        twin.plot(x, [report.daily_budget.get(d, 0.0) for d in days], color="#000000", marker="o", label="budget")
        twin.set_ylabel("epsilon of DP queries per day")
    one_day = np.timedelta64(1, "D")
    ax.set_xlim(x[0] - one_day, x[-1] + one_day)  # whole days, also for a period of one day
    short = x[-1] - x[0] <= np.timedelta64(14, "D")
    locator = DayLocator() if short else AutoDateLocator(minticks=3, maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))  # type: ignore[no-untyped-call]
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    svg = out.getvalue()
    return svg[svg.index("<svg") :]


def _html_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #212529; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #dee2e6; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
td { max-width: 40em; white-space: pre-wrap; overflow-wrap: break-word; }
.ok { color: #2b8a3e; }
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG chart, no scripts)."""
    v = report.verified
    t = report.totals()
    e = html.escape
    sections = [
        f"<h1>Transparency report of site {e(report.site)}</h1>",
        f"<p>Period: {e(_period(report))}. {report.entries} audit entries in the period.</p>",
        f'<p class="ok">Audit log {e(str(v.path))}: {VERIFIED}, {v.entries} entries, '
        f"last hash <code>{e(v.last_hash)}</code>.</p>",
        f"<p>Requests: {', '.join(f'{t.get(o, 0)} {o}' for o in OUTCOMES)}. {e(_released_line(report))}</p>",
        "<h2>Requests over time</h2>",
        chart_svg(report) if report.daily else "<p>No requests in the period.</p>",
        "<h2>Requests per analyst and statement kind</h2>",
        _html_table(("analyst", "kind", *OUTCOMES), _request_rows(report)),
        "<h2>Privacy budget per analyst (DP queries)</h2>",
        _html_table(BUDGET_HEADER, _budget_rows(report)),
        "<h2>Refusals per rule</h2>",
        _html_table(("rule", "refusals"), sorted(report.rules.items())),
        "<h2>Outputs released</h2><p>Names and shapes of what each query opened to the analyst; "
        "the audit log never holds values.</p>",
        _html_table(
            ("seq", "time", "analyst", "kind", "outputs", "query"),
            ([o.seq, o.time, o.analyst, o.kind, _outputs(o), o.query] for o in report.outputs),
        ),
        "<h2>Output review</h2><p>What became of results held for the data-protection officers: "
        "decisions (at the deciding site), releases, and results discarded (denied or expired).</p>",
        _html_table(REVIEW_HEADER, _review_rows(report.reviews, None)),
        "<h2>Refusals</h2>",
        _html_table(RECORD_HEADER, _record_rows(report.refusals, None)),
        "<h2>Failures</h2>",
        _html_table(RECORD_HEADER, _record_rows(report.failures, None)),
        "<h2>Explains</h2><p>Plans described to the analyst; nothing computed or released.</p>",
        _html_table(
            ("seq", "time", "analyst", "kind", "query"),
            ([r.seq, r.time, r.analyst, r.kind, r.query] for r in report.explains),
        ),
        "<h2>Linkage key requests per site</h2><p>Batches of blinded points this member answered "
        "(its key share raised them) or refused; never a point.</p>",
        "<ul>" + "".join(f"<li>{e(line)}</li>" for line in _linkage_lines(report)) + "</ul>",
        "<h2>Other events</h2><p>Membership changes and connections refused before any request.</p>",
        _html_table(("seq", "time", "who", "reason"), ([r.seq, r.time, r.analyst, r.reason] for r in report.events)),
    ]
    title = e(f"Transparency report of site {report.site}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
