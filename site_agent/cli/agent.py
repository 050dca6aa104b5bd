"""``mpc-site-agent``: run and check a site agent.

* ``serve --config agent.toml``: foreground daemon (systemd-friendly), JSON log lines on
  stdout, clean stop on SIGTERM/SIGINT (queries in flight are aborted, nothing is
  released, each gets an audit entry).
* ``check --config agent.toml``: validates config, policy, keys, data and peer reachability,
  and reports where the site's data disagree with ``schema.toml`` (counts per column: values
  outside a domain, NULLs, types; never a value) as a ``WARN`` line: those make some queries
  refuse but do not stop the agent.
* ``audit verify --config agent.toml``: checks the audit log's chain and signatures and
  names the first bad entry.
* ``report --config agent.toml --since DATE [--until DATE] [--html FILE | --json]``: the transparency
  report for the site's data-protection officer, from the audit log after verifying it (a log
  that does not verify gets no report: the first bad line is named and the exit code is 1).
  Text tables on stdout, one HTML page with a chart, or JSON (docs/review-and-report.md).
* ``review list | show ID | approve ID | deny ID --config agent.toml``: output review by the
  site's data-protection officer (``site_agent.cli.review``).
* ``approve CHANGE --config agent.toml``: adds this site's signature to a proposed membership
  change (``mpc-consortium propose``, ``revoke``, ``rotate``) after checking that it follows the
  consortium version this site runs; prints what the change does.
* ``linkage keygen`` and ``linkage prepare --config agent.toml``: a member's share of the linkage
  PRF key, and a site's linkage keys with the committee (``site_agent/cli/linkage.py``,
  docs/linkage.md).

Exit codes: 0 fine, 1 a check failed (or ``serve`` met a configuration error, printed as one
line naming the file and key), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from ..audit import verify
from ..audit.render import render_html, render_text
from ..audit.report import build_report, parse_when
from ..config import Address, load_agent, load_consortium, write_consortium
from ..crypto.certs import client_context, server_context
from ..crypto.signing import load_private_key, public_key_pem
from ..errors import ConfigError, MpcError
from ..linkage.declaration import key_path, keys_db, linkage_of, load_key_share
from ..membership.changes import approve, approvers, describe_change, digest
from ..policy import load_policy
from ..tuning import tune_allocator
from . import linkage, review

# The daemon, the planner and the data connectors (pandas, DuckDB, sqlglot: about a second of
# imports) are imported by the commands that use them, so that ``audit verify`` and ``report``
# start at once.


def cmd_serve(args: argparse.Namespace) -> int:
    from ..agent.service import configure_logging, serve_forever

    configure_logging()
    tune_allocator()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(args.config, stop)

    try:
        asyncio.run(main())
    except ConfigError as exc:  # a broken agent.toml, policy, schema or table: one line, no traceback
        print(f"mpc-site-agent serve: configuration error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def one_line(exc: BaseException) -> str:
    """An error's message on one line (database drivers add context lines)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _step(name: str, action: Callable[[], str], warn: bool = False) -> bool:
    """Run one check and print one line; ``warn``: a problem is reported but does not fail."""
    try:
        detail = action()
    except (MpcError, OSError, ValueError) as exc:
        print(f"{'WARN' if warn else 'FAIL'}  {name}: {one_line(exc)}")
        return warn
    print(f"ok    {name}{': ' + detail if detail else ''}")
    return True


def cmd_check(args: argparse.Namespace) -> int:
    from ..agent import planning
    from ..agent.data import describe, open_tables
    from ..data.conformance import conformance

    try:
        config = load_agent(args.config)
        consortium = load_consortium(config.consortium)
    except MpcError as exc:
        print(f"FAIL  configuration: {exc}")
        return 1
    role = (
        "compute member"
        if config.site in consortium.committee
        else "input-only site (dials the committee, needs no inbound port)"
    )
    print(f"ok    configuration: site {config.site!r} in consortium {consortium.id!r}, {role}")

    def keys() -> str:
        server_context(config.tls_cert, config.tls_key, config.ca_cert)
        client_context(config.tls_cert, config.tls_key, config.ca_cert)
        key = load_private_key(config.signing_key)
        if public_key_pem(key).strip() != consortium.site(config.site).signing_key.strip():
            raise MpcError("the signing key does not match the public key in the consortium file")
        return "TLS certificate and signing key match the consortium"

    holds_data = consortium.site(config.site).data

    def policy() -> str:
        p = load_policy(config.policy, config.site, holds_data)
        missing = sorted(set(p.tables or ()) - set(config.tables))
        if missing:
            raise MpcError(f"policy exposes tables not declared in agent.toml: {', '.join(missing)}")
        if config.site not in consortium.committee and p.review != "auto":
            raise MpcError(f'review = "{p.review}": an input-only site cannot hold results for review (use "auto")')
        return f"digest {p.digest()[:16]}, min cell size {p.min_cell_size}"

    def data() -> str:
        if not holds_data:
            if config.tables:
                raise MpcError(f"the site holds no data (data = false) but declares tables: {', '.join(config.tables)}")
            return "no data (a neutral compute member: serves the schema's tables empty)"
        con = open_tables(config.tables)
        try:
            info = describe(con)
        finally:
            con.close()
        return ", ".join(f"{t} ({v['rows']} rows)" for t, v in info.items()) or "no tables declared"

    def schema() -> str:
        planning.load_schema(consortium)
        return "consortium schema loads"

    def agreement() -> str:
        if not holds_data or not config.tables:
            return "no tables to compare"
        con = open_tables(config.tables)
        try:
            findings = conformance(con, planning.load_schema(consortium), config.tables)
        finally:
            con.close()
        fails = [str(f) for f in findings if f.severity == "fail"]
        notes = [str(f) for f in findings if f.severity == "note"]
        if fails:
            raise MpcError("; ".join(fails + notes))
        return "; ".join(notes) or "every column agrees with schema.toml"

    def peers() -> str:
        out = []
        if config.relay:
            relay = Address.parse(config.relay.removeprefix("wss://"))
            with socket.create_connection((relay.host, relay.port), timeout=3):
                out.append(f"relay {config.relay} reachable")
        for name in consortium.require_committee():
            if name == config.site:
                continue
            site = consortium.site(name)
            # A relayed peer is reached through its relay: that is what must answer.
            address = Address.parse(site.relay.removeprefix("wss://")) if site.relay else site.address
            with socket.create_connection((address.host, address.port), timeout=3):
                out.append(f"{name} reachable" + (f" (through {site.relay})" if site.relay else ""))
        return ", ".join(out)

    def linkage_ready() -> str:
        declared = linkage_of(consortium.path.parent / planning.SCHEMA_FILE, planning.load_schema(consortium))
        if declared is None:
            return "the consortium declares no record linkage"
        load_key_share(key_path(config))
        if holds_data and not keys_db(config).exists():
            raise MpcError(f"no linkage keys at {keys_db(config)}: run `mpc-site-agent linkage prepare`")
        return f"key share present{', linkage keys prepared' if holds_data else ''} (table {declared.table})"

    results = [_step(n, f) for n, f in (("keys", keys), ("policy", policy), ("data", data), ("schema", schema))]
    # Linkage not ready makes COUNT(DISTINCT PERSON) fail, nothing else: reported, not failed.
    results.append(_step("linkage", linkage_ready, warn=True))
    # Disagreements make some queries refuse (a GROUP BY on a column with values outside its
    # domain) but the agent serves every other query: reported, not a failed check.
    results.append(_step("data vs schema", agreement, warn=True))
    results.append(_step("peers", peers) or args.offline)
    return 0 if all(results) else 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        config = load_agent(args.config)
        consortium = load_consortium(config.consortium)
        result = verify(config.audit_log, consortium.site(config.site).public_key(), config.site)
    except MpcError as exc:
        print(f"audit verify: {exc}")
        return 1
    print(result)
    return 0 if result.ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    try:
        config = load_agent(args.config)
        consortium = load_consortium(config.consortium)
        report = build_report(
            config.audit_log, consortium.site(config.site).public_key(), config.site, args.since, args.until
        )
        if args.html:
            Path(args.html).write_text(render_html(report))
            print(f"report: {report.entries} entries of {report.verified.entries} verified, written to {args.html}")
        elif args.json:
            print(json.dumps(report.to_json(), indent=1, sort_keys=True))
        else:
            sys.stdout.write(render_text(report))
    except (MpcError, OSError) as exc:
        print(f"report: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _when(end: bool) -> Callable[[str], dt.datetime]:
    """An argparse type: a date or ISO time (``parse_when``); a bad one is a usage error."""

    def parse(text: str) -> dt.datetime:
        try:
            return parse_when(text, end)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a date (2026-05-01) or ISO time") from None

    return parse


def cmd_approve(args: argparse.Namespace) -> int:
    try:
        config = load_agent(args.config)
        current = load_consortium(config.consortium)
        change = load_consortium(args.change)
        if change.id != current.id or change.version != current.version + 1 or change.previous != digest(current):
            raise MpcError(
                f"{args.change} (version {change.version}) does not follow version {current.version} of "
                f"{config.consortium}, which this site runs: nothing signed"
            )
        key = load_private_key(config.signing_key)
        if public_key_pem(key).strip() != current.site(config.site).signing_key.strip():
            raise MpcError("the signing key does not match the public key in the consortium file: nothing signed")
        signed = approve(change, config.site, key)
        write_consortium(signed)
    except MpcError as exc:
        print(f"approve: {exc}")
        return 1
    have = approvers(current, digest(signed), signed.signatures.items())
    print(
        f"approved version {signed.version} as {config.site}: {describe_change(current, signed)} "
        f"({len(have)} of {current.required_approvals} approvals: {', '.join(sorted(have))})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpc-site-agent", description="Run and check an mpc-jupyter site agent.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the agent in the foreground")
    serve.add_argument("--config", required=True, help="the site's agent.toml")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate config, policy, keys, data and peers")
    check.add_argument("--config", required=True)
    check.add_argument("--offline", action="store_true", help="do not fail when peers are unreachable")
    check.set_defaults(func=cmd_check)
    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    av = audit_sub.add_parser("verify", help="check the hash chain and signatures")
    av.add_argument("--config", required=True)
    av.set_defaults(func=cmd_audit_verify)
    report = sub.add_parser("report", help="the transparency report from the verified audit log")
    report.add_argument("--config", required=True)
    report.add_argument("--since", required=True, type=_when(False), help="first day (or ISO time), UTC")
    report.add_argument("--until", type=_when(True), help="last day, included (or an ISO time, excluded)")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--html", metavar="FILE", help="write one HTML page with a chart instead of text")
    form.add_argument("--json", action="store_true", help="print the report as one JSON object")
    report.set_defaults(func=cmd_report)
    review.add_parser(sub)
    approve_ = sub.add_parser("approve", help="sign a proposed membership change as this site")
    approve_.add_argument("change", help="the change file (mpc-consortium propose, revoke or rotate)")
    approve_.add_argument("--config", required=True)
    approve_.set_defaults(func=cmd_approve)
    linkage.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
