"""``mpc-site-agent review list | show ID | approve ID | deny ID --config agent.toml``.

The site's data-protection officer looks at the results held for review at this site and
decides. The commands read and edit the agent's review folder under its lock
(``site_agent.review.store`` says why this, rather than a call to the agent); the running agent
records each decision in the audit log and tells the other committee members within a second.

``show`` prints the query, the plan in words, and what would be released: each output's name
and shape, how many cells pass the release rule (public suppression flags), and each cell's
size as a band ("10-19"), which the committee opened for the DPOs; for a model, its terms'
names, each output's name and size, and the persons of its rows (its events, each BY group's
persons) as bands; for a KAPLAN_MEIER, the step table's shape. Never a value: this member
holds only shares, and the command opens nothing (a model's coefficients, which the committee
opened as its last iterate, stay in the record and are not printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import itertools
import time
from typing import Any

from ..config import load_agent
from ..errors import MpcError
from ..review.store import APPROVED, DENIED, PENDING, Held, ReviewStore


def _store(config_path: str) -> tuple[str, ReviewStore]:
    config = load_agent(config_path)
    return config.site, ReviewStore(config.audit_log.parent / "review")


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _status(held: Held) -> str:
    if held.state == PENDING:
        return f"pending: waiting for {', '.join(held.waiting)} until {_when(held.deadline)}"
    if held.state == DENIED:
        return f"denied by {', '.join(held.denied_by)}"
    if held.state == APPROVED and held.keep_until is not None:
        sent = "sent, receipt not yet confirmed" if held.receipt is not None else "not fetched yet"
        return f"approved: {sent}; kept until {_when(held.keep_until)}"
    return held.state


def _outputs(held: Held) -> str:
    return ", ".join(f"{r['name']} {'x'.join(map(str, r['shape'])) or 'scalar'}" for r in held.reveals)


def cmd_list(args: argparse.Namespace) -> int:
    _, store = _store(args.config)
    rows = [h for h in store.all() if args.all or h.state in (PENDING, APPROVED)]
    if not rows:
        print("no results held for review" + ("" if args.all else " (--all lists decided ones too)"))
    for h in rows:
        print(f"{h.id[:16]}  {_when(h.created)}  {h.analyst}  {h.kind}  {_status(h)}")
        print(f"    {' '.join(h.query.split())[:100]}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..query.disclosure import RELEASED as RELEASED_FLAG
    from ..query.explain import explain
    from ..query.plan import Plan

    _, store = _store(args.config)
    held = store.get(store.find(args.id))
    assert held is not None
    flags = held.meta.get("flags", [])
    released = sum(1 for f in flags if f == RELEASED_FLAG)
    print(f"id        {held.id}")
    print(f"analyst   {held.analyst}")
    print(f"asked     {_when(held.created)}")
    print(f"status    {_status(held)}")
    print(f"reviewers {', '.join(held.sites)}")
    for site, d in sorted(held.decisions.items()):
        print(f"          {site}: {d.decision} at {_when(d.time)} by {d.by}")
    plan = Plan(held.meta["plan"])
    if "model" in plan.data:
        _show_model(held, plan)
        return 0
    if "km" in plan.data:  # what the members hold shares of: the step table's columns by released step
        print(f"outputs   {', '.join(f'{n} {s}' for n, s in _layout(held))} (names and sizes; values are never shown)")
        print(f"          {_step_table(held)}")
    else:
        print(f"outputs   {_outputs(held)} (names and shapes; values are never shown)")
    if held.withheld is None:
        print(f"release   {released} of {len(flags)} release rows pass the release rule; the rest stay suppressed")
    else:
        rule = sum(1 for f in held.withheld if f == RELEASED_FLAG)
        print(
            f"release   the release rule passes {rule} of {len(flags)} release rows; approving releases "
            f"{released} as computed (the rest stay withheld)"
        )
        print("withheld cells (the release rule's; values are never shown):")
        for cell, fate in _withheld_cells(plan, held.withheld, flags):
            print(f"    {cell}: {fate}")
    if held.bands:
        print("cell sizes (bands; the sizes themselves are never opened):")
        labels = itertools.product(*([str(v) for v in k["domain"]] for k in plan.keys))
        for label, band in zip(labels, held.bands, strict=False):
            print(f"    {', '.join(label) or 'all'}: {band}")
    print("\nQuery:\n" + "\n".join("    " + line for line in held.query.strip().splitlines()))
    print("\n" + explain(plan))
    return 0


def _layout(held: Held) -> list[tuple[str, int]]:
    """The outputs the members hold shares of, by name and size, a float's three words as one."""
    sizes: dict[str, int] = {}
    for entry in held.meta.get("layout", []):
        name, size = str(entry[0]), int(entry[-1])
        base, _, part = name.rpartition(".")
        if part in ("sign", "mant", "exp") and base:
            sizes[base] = size
        else:
            sizes[name] = size
    return list(sizes.items())


def _step_table(held: Held) -> str:
    """A KAPLAN_MEIER's released step table: its shape (the number of released steps is public
    to the committee: the step pattern opened by the release rule for survival curves)."""
    steps = dict(_layout(held)).get("km_at_risk", 0)
    return f"step table: {steps} released steps x (time, at_risk, observed, censored, estimate, greenwood)"


def _show_model(held: Held, plan: Any) -> None:
    """What a held model would release: its terms' names, each output's name and size, and its
    sizes as bands. The coefficients the committee opened (``meta["coef"]``) are never printed."""
    from ..agent.models import ModelCompiled

    model = plan.data["model"]
    outputs = _layout(held)
    if "coef" in held.meta:
        outputs.insert(0, ("coef", len(held.meta["coef"])))
    print(f"model     {model['kind']}" + (f" ({model['family']} family)" if "family" in model else ""))
    if "names" in model:
        print(f"terms     {', '.join(model['names'])}")
    if "released" in held.meta:
        groups = ["all"] if model.get("by") is None else [f"{model['by']} = {g}" for g in model["groups"]]
        kept = [groups[int(i)] for i in held.meta["released"] if 0 <= int(i) < len(groups)]
        print(f"groups    {len(kept)} of {len(groups)} pass the release rule: {', '.join(kept) or 'none'}")
    shown = ", ".join(f"{name} {size}" for name, size in outputs) or "none"
    print(f"outputs   {shown} (names and sizes; values are never shown)")
    print("sizes (bands; the sizes themselves are never opened):")
    for line in held.bands:
        print(f"    {line}")
    print("\nQuery:\n" + "\n".join("    " + line for line in held.query.strip().splitlines()))
    print("\n" + ModelCompiled(plan).explain())


def _withheld_cells(plan: Any, withheld: list[int], flags: list[int]) -> list[tuple[str, str]]:
    """Each output cell the release rule withheld in some release row: its label, and whether
    approving releases it (a cell of 1 to k-1 persons, or a secondary suppression around one) or
    it stays withheld (a difference, too few sites, a quantile bin, a failure, anything withheld
    in a cell of k or more persons, or a secondary suppression around such a cell)."""
    import numpy as np

    from ..query.cells import Cells
    from ..query.disclosure import SUPPRESSED

    rows = len(plan.data["supports"])
    rule = np.asarray(withheld).reshape(rows, -1) == SUPPRESSED
    kept = np.asarray(flags).reshape(rows, -1) == SUPPRESSED
    out = []
    for at, label in enumerate(Cells.of(plan.dims, plan.grouping_sets).labels()):
        if rule[:, at].any():
            name = ", ".join(
                "(all)" if i is None else str(key["domain"][i]) for key, i in zip(plan.keys, label, strict=True)
            )
            fate = "stays withheld" if kept[:, at].any() else "released if approved"
            out.append((name or "all", fate))
    return out


def _decide(args: argparse.Namespace, decision: str) -> int:
    site, store = _store(args.config)
    held_id = store.find(args.id)
    now = time.time()

    def change(held: Held) -> bool:
        if held.expire(now):
            return True
        return held.decide(site, decision, getpass.getuser(), now)

    held = store.update(held_id, change)
    assert held is not None
    if held.state == "expired":
        print(f"review: {held_id[:16]} expired at {_when(held.keep_until or held.deadline)}; it was discarded")
        return 1
    if decision == DENIED:
        print(f"denied {held_id[:16]} at site {site}: every member discards it; nothing is released")
    elif held.state == APPROVED:
        print(f"approved {held_id[:16]} at site {site}: every reviewing site approved; the analyst can fetch it")
    else:
        print(f"approved {held_id[:16]} at site {site}; still waiting for {', '.join(held.waiting)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``review`` subcommands; a refusal is one line and exit code 1."""
    try:
        if args.review_command == "list":
            return cmd_list(args)
        if args.review_command == "show":
            return cmd_show(args)
        return _decide(args, APPROVED if args.review_command == "approve" else DENIED)
    except MpcError as exc:
        print(f"review: {exc}")
        return 1


def add_parser(sub: Any) -> None:
    """Register ``review`` and its subcommands on the ``mpc-site-agent`` parser."""
    review = sub.add_parser("review", help="output review by the site's data-protection officer")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    listing = review_sub.add_parser("list", help="results held for review at this site")
    listing.add_argument("--all", action="store_true", help="also those released, denied or expired")
    for name, text in (
        ("show", "the query, the plan and what would be released"),
        ("approve", "approve a held result as this site"),
        ("deny", "deny a held result: it is discarded at every member"),
    ):
        cmd = review_sub.add_parser(name, help=text)
        cmd.add_argument("id", help="the result's id (a unique prefix is enough)")
        cmd.add_argument("--config", required=True)
    listing.add_argument("--config", required=True)
    review.set_defaults(func=run)
