"""The plan in words: each site's local SQL, what is secret-shared, MPC steps with their cost,
and every reveal point. Rounds and bytes are measured by running the MPC program on all-zero
inputs (the protocol's communication does not depend on the data)."""

from __future__ import annotations

from typing import Any

from ..models.plan_statements import plan_statement
from .execute import dry_run_stats
from .plan import Plan

_STEP_WORDS = {
    "check_local": "open the sum of the sites' secret failure words: the query fails alike everywhere if any failed",
    "pool": "add the sites' shares and form ROLLUP/CUBE margins (local, no communication)",
    "sites": "count the sites with a row in each cell (min_sites): [n > 0] per site, summed, compared",
    "dominance": "dominance rule (dominance = [n, p]): per cell and split of n persons among the sites' "
    "largest, p * total < 100 * top n, one comparison batch; a dominated cell is withheld",
    "suppress": "release rule: every query set, non-NULL count, pair difference and difference with the "
    "analyst's earlier released sets must hold 0 or >= k persons; secondary suppression over margins",
    "reveal_flags": "open the suppression flags to the committee",
    "review_flags": "output review, only where the release rule withheld a cell (then about the rounds of "
    "suppress; none counted here): the flags a DPO's approval would leave, on shares, opened to the committee",
    "round": "round released counts to the policy's base on shares (round_counts): the exact count is never opened",
    "mean_fixed": "pooled means (fixed point) for the variance pooling",
    "pool_m2": "pooled M2 = sum M2_i + sum n_i (mean_i - mean)^2",
    "divide": "divisions as canonical floating point (normalise, Newton reciprocal)",
    "sqrt": "square roots (Newton inverse square root)",
    "quantile": "quantiles from the pooled histogram: first crossing of cumulative counts, type-7 interpolation",
    "extreme": "maximum (or minimum) over sites and cells (comparison tournament)",
    "wilson": "Wilson score 95% limits for proportions",
    "byar": "Byar 95% limits for Poisson rates",
    "reveal": "hand the unsuppressed outputs' shares to the analyst",
    "noise": "DP: add the three members' Skellam samples to every pooled quantity on shares (local)",
    "reveal_noisy": "DP: hand the noised quantities' shares, every cell, to the analyst",
}


def _formula(o: dict[str, Any]) -> str:
    """How the analyst computes a DP output from the opened quantities."""
    if o["kind"] in ("var", "std"):
        var = f"({o['squares']} - {o['sum']}^2 / {o['count']}) / ({o['count']} - {o['ddof']})"
        return f"sqrt({var})" if o["kind"] == "std" else var
    if o["kind"] == "quantile":
        return f"type-7 quantile {o['q']:g} of the noisy histogram {o['histogram']}"
    if o["kind"] == "rate":
        return f"{o['sum']} / {o['time']}" + (f" * {o['per']:g}" if o["per"] != 1 else "")
    if "sum" in o and "count" in o:
        return f"{o['sum']} / {o['count']}"
    return str(o.get("count") or o["sum"])


def _dp_lines(d: dict[str, Any]) -> list[str]:
    """DP mode: epsilon, delta, the rows bound, and each noised quantity's sensitivity and noise."""
    dp = d["params"]["dp"]
    out = [
        f"DP mode: ({dp['epsilon']:g}, {dp['delta']:g})-differential privacy per person, distributed Skellam noise "
        f"added on shares (each member adds its own sample; any two members' samples give the stated guarantee).",
        f"Contribution bounding: at most {dp['max_rows_per_person']} row(s) per person per table "
        f"({dp['rows_per_person']} in the joined rows); summed values clipped to their columns' bounds. "
        "No cell is suppressed.",
        "Noised quantities (L1 / L2 sensitivity in the quantity's integer units; sd of the released noise "
        "in the value's units):",
    ]
    for q in d["quantities"]:
        out.append(
            f"   {q['name']} = {q['what']}: sensitivity {q['l1']:.6g} / {q['l2']:.6g}, "
            f"noise variance {q['variance']:.4g} (two members), sd {q['sd']:.4g}"
        )
    made = [f"{o['name']} = {_formula(o)}" for o in d["outputs"]]
    out.append(f"Outputs, computed by the analyst from the opened quantities: {'; '.join(made)}.")
    return out


def explain(plan: Plan, sites: int = 3) -> str:
    """A readable account of ``plan`` for ``sites`` input sites."""
    d = plan.data
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    keys = ", ".join(f"{k['name']} ({len(k['domain'])} values)" for k in d["keys"]) or "none (one cell)"
    lines.append(f"Cells: keys {keys}; {plan.base_cells} base cells, {plan.out_cells} output cells.")
    if "dp" in d["params"]:
        lines += _dp_lines(d)
    else:
        lines.append(f"Minimum cell size {d['params']['min_cell_size']} (strictest site policy).")
    if "redact_at_or_below" in d["params"]:
        lines.append(
            f"Counts at or below {d['params']['redact_at_or_below']} are withheld (redact_at_or_below): "
            "the minimum cell size above is the larger of min_cell_size and that threshold plus one."
        )
    if "round_counts" in d["params"]:
        lines.append(
            f"Released counts are rounded to a multiple of {d['params']['round_counts']} (round_counts); "
            "margins are rounded on their own."
        )
    if "min_sites" in d["params"]:
        lines.append(
            f"A cell is withheld unless at least {d['params']['min_sites']} sites have rows in it (min_sites)."
        )
    statement = plan_statement(plan)
    if statement is not None:
        lines += statement.describe(plan)
    if "dominance" in d["params"]:
        n, pct = d["params"]["dominance"]
        lines.append(
            f"A sum (SUM, AVG, variance, rate) is withheld where its {n} largest persons make more than {pct}% "
            "of the cell's total of absolute contributions (dominance)."
        )
    if "review" in d:
        lines += review_lines(d["review"], "each base cell's size (persons, or rows without a person column) is")
    if plan.site_key is not None:
        lines.append(
            "Per-site breakdown (statement kind per_site_breakdown): SITE is the committee site; the "
            "local SQL is the same at every site and each site's pre-aggregates fill only its own SITE cells."
        )
    lines.append("")
    lines.append("1. Local step at every site, in the clear, on its own data:")
    for q in d["local"]:
        lines.append(f"   [{q['name']}] {q['sql']}")
    if "ledger" in d:
        lines.append(f"   [ledger] {d['ledger']['sql']}")
        lines.append(
            "      (stays at the site: its persons in each query set, compared with the sets it released "
            "to this analyst before; only the differences' sizes are shared)"
        )
    release: dict[str, Any] = next((s for s in d["steps"] if s["op"] == "suppress"), {"rows": []})
    if release["rows"]:
        lines.append("")
        lines.append("Release rule (docs/privacy.md), per release row: the counts that must be 0 or >= k persons:")
    for i, row in enumerate(release["rows"]):
        outputs = [o["name"] for o in d["outputs"] if o["support"] == i]
        lines.append(
            f"   row {i} ({', '.join(outputs)}): {', '.join(row['checks'])}"
            + (f"; not 0 either: {', '.join(row['strict'])}" if row["strict"] else "")
            + (f"; flags: {', '.join(row['flags'])}" if row["flags"] else "")
        )
    lines.append("")
    lines.append("2. Secret-shared by every site (replicated shares to the three committee members):")
    for s in d["inputs"]:
        if not s["query"]:  # no local query: the site's secret failure word
            lines.append(f"   {s['name']}: one secret word, 0 unless the site's local step failed")
            continue
        if s["encoding"] == "noise":
            lines.append(f"   {s['name']}: per cell, this member's own Skellam sample (variance {s['variance']:.4g})")
            continue
        enc = "integer" if s["encoding"] == "int" else f"fixed point, {d['params']['frac_bits']} fractional bits"
        if s.get("cells") == "out":
            what = {"top": "the site's largest per-person contributions", "total": "total of absolute contributions"}
            lines.append(f"   {s['name']}: per output cell, {what.get(s['column'], 'out-of-range flag')}, {enc}")
            continue
        lines.append(f"   {s['name']}: per cell{' and bin' if s['query'] != 'cells' else ''}, {enc}")
    lines.append("")
    lines.append(f"3. MPC steps (rounds; bytes sent by all three members together; {sites} sites):")
    total_rounds = total_bytes = 0
    words = {**_STEP_WORDS, **(statement.step_words if statement is not None else {})}
    for step, (_, st) in zip(d["steps"], dry_run_stats(plan, sites), strict=True):
        total_rounds += st.rounds
        total_bytes += st.bytes_sent
        lines.append(f"   {step['op']:<13} {st.rounds:>4} rounds {st.bytes_sent:>10,} B  {words[step['op']]}")
    lines.append(f"   {'total':<13} {total_rounds:>4} rounds {total_bytes:>10,} B")
    lines.append("")
    lines.append("4. Reveal points (nothing else is ever opened):")
    for r in d["reveals"]:
        lines.append(f"   {r['name']} [{r['shape']}]: {r['what']}")
    return "\n".join(lines)


def review_lines(review: dict[str, Any], sizes: str) -> list[str]:
    """Output review's terms in words (a plan's ``review``; docs/review-and-report.md), ``sizes``
    saying what the officers see as bands ("each base cell's size is")."""
    lines = []
    if review["sites"]:
        lines.append(
            f"Output review: the result is held as shares at every member until the data-protection "
            f'officers of {", ".join(review["sites"])} approve it (review = "dpo").'
        )
    if review["withheld_sites"]:
        lines.append(
            "Output review of withheld cells: where the release rule withholds a cell, the result is held "
            f"as shares at every member until the data-protection officers of {', '.join(review['withheld_sites'])} "
            'approve releasing it as computed (review = "failing" or "dpo"): approval releases the cells '
            "of 1 to k-1 persons (every statistic of theirs, dominated or not) and the secondary suppressions "
            "around them; a difference (within the query or with earlier results), too few sites, a quantile "
            "bin or a site's failure still withholds, and so does everything the release rule withholds in a "
            "cell of k or more persons. Reveal points: the flags approval would leave are opened to the "
            "committee; the analyst learns only that the result is held, i.e. that the release rule withheld "
            "some cell (which the release rule's flags show the analyst in full without review)."
        )
    lines.append(
        f"A held result not approved within {review['hours']} hours, or denied, is discarded and nothing "
        "is released; approved, it stays fetchable until the analyst's client confirms receipt, at most "
        f"{review['keep_hours']} hours after the last approval, then it is discarded. For the officers, "
        f"{sizes} opened to the committee as a band (0-9, 10-19, 20-49, 50-99, 100-199, 200-499, 500-999, 1000+)."
    )
    return lines
