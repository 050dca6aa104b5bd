"""The plan in words: each site's local SQL, what is secret-shared, MPC steps with their cost,
and every reveal point. Rounds and bytes are measured by running the MPC program on all-zero
inputs (the protocol's communication does not depend on the data)."""

from __future__ import annotations

from .execute import dry_run_stats
from .plan import Plan

_STEP_WORDS = {
    "check_local": "open the sum of the sites' secret failure words: the query fails alike everywhere if any failed",
    "pool": "add the sites' shares and form ROLLUP/CUBE margins (local, no communication)",
    "sites": "count the sites with a row in each cell (min_sites): [n > 0] per site, summed, compared",
    "suppress": "release rule: every query set, non-NULL count, pair difference and difference with the "
    "analyst's earlier released sets must hold 0 or >= k persons; secondary suppression over margins",
    "reveal_flags": "open the suppression flags to the committee",
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
}


def explain(plan: Plan, sites: int = 3) -> str:
    """A readable account of ``plan`` for ``sites`` input sites."""
    d = plan.data
    lines = [f"Plan {plan.digest()[:16]} for:", *("    " + t for t in d["query"].strip().splitlines()), ""]
    keys = ", ".join(f"{k['name']} ({len(k['domain'])} values)" for k in d["keys"]) or "none (one cell)"
    lines.append(f"Cells: keys {keys}; {plan.base_cells} base cells, {plan.out_cells} output cells.")
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
    if "review" in d:
        lines.append(
            f"Output review: the result is held as shares at every member until the data-protection "
            f'officers of {", ".join(d["review"]["sites"])} approve it (review = "dpo"); not approved '
            f"within {d['review']['hours']} hours, or denied, it is discarded and nothing is released. "
            "For the officers, each base cell's size (persons, or rows without a person column) is "
            "opened to the committee as a band (0-9, 10-19, 20-49, 50-99, 100-199, 200-499, 500-999, 1000+)."
        )
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
    release = next(s for s in d["steps"] if s["op"] == "suppress")
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
        enc = "integer" if s["encoding"] == "int" else f"fixed point, {d['params']['frac_bits']} fractional bits"
        lines.append(f"   {s['name']}: per cell{' and bin' if s['query'] != 'cells' else ''}, {enc}")
    lines.append("")
    lines.append(f"3. MPC steps (rounds; bytes sent by all three members together; {sites} sites):")
    total_rounds = total_bytes = 0
    for step, (_, st) in zip(d["steps"], dry_run_stats(plan, sites), strict=True):
        total_rounds += st.rounds
        total_bytes += st.bytes_sent
        lines.append(f"   {step['op']:<13} {st.rounds:>4} rounds {st.bytes_sent:>10,} B  {_STEP_WORDS[step['op']]}")
    lines.append(f"   {'total':<13} {total_rounds:>4} rounds {total_bytes:>10,} B")
    lines.append("")
    lines.append("4. Reveal points (nothing else is ever opened):")
    for r in d["reveals"]:
        lines.append(f"   {r['name']} [{r['shape']}]: {r['what']}")
    return "\n".join(lines)
