"""``mpc-consortium``: create a consortium, its sites and its analysts, with their keys.

Layout of a consortium folder::

    DIR/consortium.toml            who takes part (public: share with every site and analyst)
    DIR/ca/ca.key, ca.pem          the consortium CA (keep ca.key offline once setup is done)
    DIR/sites/SITE/                one folder per site, to hand to that hospital's IT
                                   (or to whoever runs a neutral member, ``--no-data``):
        agent.toml, policy.toml    settings and disclosure policy, with comments
        tls/key.pem, cert.pem, ca.pem
        signing/key.pem, public.pem
    DIR/analysts/NAME/             one folder per analyst:
        tls/key.pem, cert.pem, ca.pem
        signing/key.pem, public.pem

Private keys are created with mode 0600. Every command checks everything before writing
anything, and rewrites ``consortium.toml`` atomically at the end.

Once agents run, the membership changes only by versions the sites approve (see
:mod:`site_agent.membership.changes`): ``revoke``, ``rotate`` and ``propose`` write
``DIR/change-vN-WHAT.toml``, the next version of the consortium file; t sites sign it with
``mpc-site-agent approve``; ``apply`` installs it as ``consortium.toml`` once t signatures
verify, and running agents take it up within a second. ``add-site`` and ``add-analyst`` edit
the file directly only while setting up (version 0); agents ignore unsigned edits.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from site_agent.cli import schema_draft
from site_agent.config import (
    Address,
    AnalystEntry,
    ConsortiumConfig,
    RevokedEntry,
    SiteEntry,
    load_consortium,
    render_agent_template,
    write_consortium,
)
from site_agent.crypto.certs import fingerprint, issue_cert, make_ca
from site_agent.crypto.signing import generate_signing_key, private_key_pem, public_key_pem, write_secret_file
from site_agent.errors import MpcError
from site_agent.membership.changes import check_change, describe_change, successor
from site_agent.policy import render_policy_template
from site_agent.relay.config import render_relay
from site_agent.tomlfile import NAME_RE, toml_str

PROG = "mpc-consortium"
CONSORTIUM_FILE = "consortium.toml"


class CliError(Exception):
    """A one-line message for the operator; the command exits with status 1."""


def _check_name(name: str, what: str) -> None:
    if not NAME_RE.match(name):
        raise CliError(
            f"{what} name {name!r} must be letters, digits, '-' or '_' (at most 63, not starting with - or _)"
        )


def _consortium_id(name: str) -> str:
    """A readable, unique id: the name as a slug plus 8 random hex digits."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "consortium"
    return f"{slug}-{secrets.token_hex(4)}"


def _write_consortium(cfg: ConsortiumConfig) -> None:
    """Replace ``consortium.toml`` while setting up (version 0); later versions are changes."""
    if cfg.version > 0:
        raise CliError(
            f"{cfg.path} is at version {cfg.version}: the sites approve every change now; "
            f"use '{PROG} propose' (or revoke, rotate), then 'mpc-site-agent approve' and '{PROG} apply'"
        )
    write_consortium(cfg)


def _write_change(current: ConsortiumConfig, change: ConsortiumConfig, what: str) -> str:
    """Write ``change`` (a successor of ``current``) next to the consortium file; a message saying
    what happens next."""
    path = current.path.with_name(f"change-v{change.version}-{what}.toml")
    write_consortium(replace(change, path=path))
    return (
        f"wrote {path} (version {change.version}: {describe_change(current, change)}); it takes effect once "
        f"{current.required_approvals} of the {len(current.sites)} sites approved it "
        f"('mpc-site-agent approve {path.name} --config agent.toml' at each) and '{PROG} apply' installed it"
    )


def _load(directory: Path) -> ConsortiumConfig:
    path = directory / CONSORTIUM_FILE
    if not path.exists():
        raise CliError(f"{path} not found: run '{PROG} init {directory} --name NAME' first")
    return load_consortium(path)


def _retire(path: Path) -> None:
    """Keep a file being replaced as NAME.old.pem (one generation), so a new one can be written."""
    if path.exists():
        os.replace(path, path.with_name(f"{path.stem}.old{path.suffix}"))


def _write_tls(
    cfg: ConsortiumConfig, folder: Path, name: str, hosts: list[str], server: bool, client: bool = True
) -> str:
    """A new TLS key and certificate from the consortium CA under ``folder/tls``; its fingerprint."""
    ca_dir = cfg.ca_cert.parent
    ca_key, ca_cert = (ca_dir / "ca.key").read_bytes(), cfg.ca_cert.read_bytes()
    key_pem, cert_pem = issue_cert(ca_key, ca_cert, name, hosts, client=client, server=server)
    tls = folder / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    _retire(tls / "key.pem")
    _retire(tls / "cert.pem")
    write_secret_file(tls / "key.pem", key_pem)
    (tls / "cert.pem").write_bytes(cert_pem)
    (tls / "ca.pem").write_bytes(ca_cert)
    return fingerprint(cert_pem)


def _write_signing(folder: Path) -> str:
    """A new Ed25519 signing key under ``folder/signing``; its public key PEM."""
    signing = generate_signing_key()
    (folder / "signing").mkdir(exist_ok=True)
    _retire(folder / "signing" / "key.pem")
    write_secret_file(folder / "signing" / "key.pem", private_key_pem(signing))
    public = public_key_pem(signing)
    (folder / "signing" / "public.pem").write_text(public)
    return public


def _make_identity(cfg: ConsortiumConfig, folder: Path, name: str, hosts: list[str], server: bool) -> tuple[str, str]:
    """TLS key and certificate plus Ed25519 signing key under a new ``folder``; returns
    (certificate fingerprint, signing public key PEM)."""
    folder.mkdir(parents=True)
    return _write_tls(cfg, folder, name, hosts, server), _write_signing(folder)


def cmd_init(directory: Path, name: str, consortium_id: str | None, approvals: int | None = None) -> str:
    """Create the consortium CA and an empty ``consortium.toml``; ``approvals`` is t, the sites
    that must sign a membership change (None: a majority of the sites at the time)."""
    if approvals is not None and approvals < 1:
        raise CliError("--approvals must be at least 1")
    if directory.exists() and any(directory.iterdir()):
        raise CliError(f"{directory} already exists and is not empty")
    if not name.strip():
        raise CliError("--name must not be empty")
    cid = consortium_id or _consortium_id(name)
    if not NAME_RE.match(cid):
        raise CliError(f"consortium id {cid!r} must be letters, digits, '-' or '_'")
    ca_dir = directory / "ca"
    ca_dir.mkdir(parents=True)
    key_pem, cert_pem = make_ca(f"{name} CA")
    write_secret_file(ca_dir / "ca.key", key_pem)
    (ca_dir / "ca.pem").write_bytes(cert_pem)
    cfg = ConsortiumConfig(
        path=(directory / CONSORTIUM_FILE).resolve(),
        id=cid,
        name=name,
        ca_cert=(ca_dir / "ca.pem").resolve(),
        sites=MappingProxyType({}),
        analysts=MappingProxyType({}),
        committee=(),
        approvals=approvals,
    )
    _write_consortium(cfg)
    return f"created consortium {cid!r} in {directory} (CA key: {ca_dir / 'ca.key'}, keep it private)"


def cmd_add_site(
    directory: Path, site: str, address: str, compute: bool, data: bool = True, propose: bool = False
) -> str:
    """Keys, certificate and commented config templates for a new site; register it (or, with
    ``propose``, write the change that registers it once the sites approved it).

    ``data=False``: a neutral compute member that holds no data (needs ``compute``)."""
    _check_name(site, "site")
    if not data and not compute:
        raise CliError("--no-data needs --compute: a site without data is only useful as a compute member")
    try:
        addr = Address.parse(address)
    except ValueError as exc:
        raise CliError(f"--address: {exc}") from exc
    cfg = _load(directory)
    folder = directory / "sites" / site
    if folder.exists():
        raise CliError(f"{folder} already exists")
    placeholder = SiteEntry(site, addr, compute, "0" * 64, "", data)
    cfg.with_site(placeholder)  # refuses a taken name or a fourth compute member before any file is written
    fp, public = _make_identity(cfg, folder, site, [addr.host], server=True)
    (folder / "agent.toml").write_text(render_agent_template(site, addr, f"../../{CONSORTIUM_FILE}", data))
    (folder / "policy.toml").write_text(render_policy_template(site, data))
    (folder / "data").mkdir()
    added = cfg.with_site(SiteEntry(site, addr, compute, fp, public, data))
    if propose:
        return _write_change(cfg, successor(cfg, sites=added.sites, committee=added.committee), f"add-{site}")
    _write_consortium(added)
    if not data:
        role = "neutral compute member, no data"
    else:
        role = "compute member and input party" if compute else "input party"
    return f"added site {site!r} ({role}) at {addr}: edit {folder / 'agent.toml'} and {folder / 'policy.toml'}"


def cmd_add_analyst(directory: Path, name: str, propose: bool = False) -> str:
    """Signing key and client certificate for a new analyst; register them (or, with
    ``propose``, write the change that registers them)."""
    _check_name(name, "analyst")
    cfg = _load(directory)
    folder = directory / "analysts" / name
    if folder.exists():
        raise CliError(f"{folder} already exists")
    cfg.with_analyst(AnalystEntry(name, "0" * 64, ""))
    fp, public = _make_identity(cfg, folder, name, [], server=False)
    added = cfg.with_analyst(AnalystEntry(name, fp, public))
    if propose:
        return _write_change(cfg, successor(cfg, analysts=added.analysts), f"add-{name}")
    _write_consortium(added)
    return f"added analyst {name!r}: keys in {folder}; allow them in each site's policy.toml"


def cmd_add_relay(directory: Path, name: str, address: str, sites: Sequence[str] = ()) -> str:
    """A relay's server certificate and ``relay.toml`` in DIR/relays/NAME; with ``sites``
    (while setting up), those sites are reached through it only: their entries get ``relay``
    and their ``agent.toml`` registers there instead of listening."""
    _check_name(name, "relay")
    try:
        addr = Address.parse(address)
    except ValueError as exc:
        raise CliError(f"--address: {exc}") from exc
    cfg = _load(directory)
    folder = directory / "relays" / name
    if folder.exists():
        raise CliError(f"{folder} already exists")
    if name in cfg.sites or name in cfg.analysts:
        raise CliError(f"{name!r} is a member's name; a relay needs a name of its own")
    unknown = [s for s in sites if s not in cfg.sites]
    if unknown:
        raise CliError(f"no site {', '.join(unknown)} in the consortium")
    if sites and cfg.version > 0:
        _write_consortium(cfg)  # refuses, saying how to change a live consortium
    uri = f"wss://{addr}"
    folder.mkdir(parents=True)
    _write_tls(cfg, folder, name, [addr.host], server=True, client=False)
    (folder / "relay.toml").write_text(render_relay(name, addr, f"../../{CONSORTIUM_FILE}"))
    for site in sites:
        agent_toml = directory / "sites" / site / "agent.toml"
        text = agent_toml.read_text()
        relayed = re.sub(
            r"^# Address to listen on.*\nlisten = .*$",
            f"# No inbound port: the agent registers at this relay and is reached through it.\nrelay = {toml_str(uri)}",
            text,
            count=1,
            flags=re.M,
        )
        if relayed == text:
            raise CliError(f"{agent_toml}: no listen line to replace; set [site] relay = {uri!r} by hand")
        agent_toml.write_text(relayed)
    if sites:
        relayed_sites = {n: replace(e, relay=uri) if n in sites else e for n, e in cfg.sites.items()}
        _write_consortium(replace(cfg, sites=MappingProxyType(relayed_sites)))
    return f"added relay {name!r} at {uri}: run 'mpc-relay serve --config {folder / 'relay.toml'}'" + (
        f"; {', '.join(sites)} are reached through it" if sites else ""
    )


def _without(cfg: ConsortiumConfig, name: str, reason: str) -> dict[str, object]:
    """The fields of a successor in which ``name`` (a site or an analyst) is gone and its
    certificate revoked for ``reason``."""
    if name in cfg.analysts:
        entry_fp = cfg.analysts[name].tls_fingerprint
        rest: dict[str, object] = {"analysts": MappingProxyType({k: v for k, v in cfg.analysts.items() if k != name})}
    elif name in cfg.sites:
        entry_fp = cfg.sites[name].tls_fingerprint
        rest = {
            "sites": MappingProxyType({k: v for k, v in cfg.sites.items() if k != name}),
            "committee": tuple(m for m in cfg.committee if m != name),
        }
    else:
        raise CliError(f"{name!r} is neither a site nor an analyst of consortium {cfg.id!r}")
    return {**rest, "revoked": MappingProxyType({**cfg.revoked, entry_fp: RevokedEntry(entry_fp, name, reason)})}


def cmd_revoke(directory: Path, name: str) -> str:
    """Write the change that removes a site or an analyst and revokes their certificate.

    A revoked committee member leaves the committee too: queries stop until a change names a
    new third member (``propose committee``)."""
    cfg = _load(directory)
    return _write_change(cfg, successor(cfg, **_without(cfg, name, "revoked")), f"revoke-{name}")


def cmd_rotate(directory: Path, name: str) -> str:
    """New TLS key and certificate for a site (in DIR/sites/NAME), or new TLS and signing keys for
    an analyst (DIR/analysts/NAME); the old files stay as *.old.pem. Writes the change that
    registers the new certificate and revokes the old one.

    A site keeps its Ed25519 signing key: it verifies every entry the site's audit log holds."""
    cfg = _load(directory)
    if name in cfg.sites:
        site = cfg.sites[name]
        fp = _write_tls(cfg, directory / "sites" / name, name, [site.address.host], server=True)
        renewed: dict[str, object] = {"sites": MappingProxyType({**cfg.sites, name: replace(site, tls_fingerprint=fp)})}
    elif name in cfg.analysts:
        folder = directory / "analysts" / name
        fp = _write_tls(cfg, folder, name, [], server=False)
        analyst = AnalystEntry(name, fp, _write_signing(folder))
        renewed = {"analysts": MappingProxyType({**cfg.analysts, name: analyst})}
    else:
        raise CliError(f"{name!r} is neither a site nor an analyst of consortium {cfg.id!r}")
    old = (cfg.sites.get(name) or cfg.analysts[name]).tls_fingerprint
    revoked = MappingProxyType({**cfg.revoked, old: RevokedEntry(old, name, "rotated")})
    return _write_change(cfg, successor(cfg, **renewed, revoked=revoked), f"rotate-{name}")


def cmd_propose_committee(directory: Path, members: list[str]) -> str:
    """Write the change that makes ``members`` (sites, in order) the compute committee."""
    cfg = _load(directory)
    unknown = [m for m in members if m not in cfg.sites]
    if unknown or len(members) != 3 or len(set(members)) != 3:
        raise CliError(f"a committee is three distinct sites of the consortium (unknown: {', '.join(unknown) or '-'})")
    sites = {n: replace(s, compute=n in members) for n, s in cfg.sites.items()}
    for n in sites:
        if not sites[n].data and n not in members:
            raise CliError(f"site {n!r} holds no data, so it must stay a compute member")
    change = successor(cfg, sites=MappingProxyType(sites), committee=tuple(members))
    return _write_change(cfg, change, "committee")


def cmd_propose_approvals(directory: Path, approvals: int) -> str:
    """Write the change that sets t, the sites that must sign later changes."""
    cfg = _load(directory)
    if not 1 <= approvals <= len(cfg.sites):
        raise CliError(f"approvals must be between 1 and the number of sites ({len(cfg.sites)})")
    return _write_change(cfg, successor(cfg, approvals=approvals), "approvals")


def cmd_propose_relay(directory: Path, site: str, uri: str | None) -> str:
    """Write the change that has ``site`` reached through the relay at ``uri`` (None: directly)."""
    cfg = _load(directory)
    if site not in cfg.sites:
        raise CliError(f"no site {site!r} in the consortium")
    if uri is not None:
        try:
            Address.parse(uri.removeprefix("wss://"))
        except ValueError as exc:
            raise CliError(f"the relay must be wss://HOST:PORT: {exc}") from exc
        if not uri.startswith("wss://"):
            raise CliError("the relay must be wss://HOST:PORT")
    sites = MappingProxyType({**cfg.sites, site: replace(cfg.sites[site], relay=uri)})
    return _write_change(cfg, successor(cfg, sites=sites), f"relay-{site}")


def cmd_apply(directory: Path, change_path: Path) -> str:
    """Install an approved change as ``consortium.toml`` (refused unless t site signatures verify)."""
    cfg = _load(directory)
    change = load_consortium(change_path)
    signers = check_change(cfg, change)
    write_consortium(replace(change, path=cfg.path))
    return (
        f"installed version {change.version} ({describe_change(cfg, change)}), "
        f"approved by {', '.join(sorted(signers))}: "
        f"copy {cfg.path} to every site; running agents take it up by themselves"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Create a consortium, its sites and analysts, with keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create a consortium CA and DIR/consortium.toml")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", required=True, help="human-readable consortium name")
    p.add_argument("--id", dest="consortium_id", help="consortium id (default: from the name plus random digits)")
    p.add_argument(
        "--approvals",
        type=int,
        help="sites that must sign each membership change once agents run (default: a majority of the sites)",
    )
    p = sub.add_parser(
        "add-site",
        help="create a site's keys, certificate and config templates",
        description="Create a site's keys, certificate and config templates and register it. With only "
        "two hospitals, add a neutral third compute member with --compute --no-data: it holds no data, "
        "only ever sees shares, and contributes nothing to results.",
    )
    p.add_argument("dir", type=Path)
    p.add_argument("site")
    p.add_argument("--address", required=True, help="HOST:PORT where the site's agent is reached")
    p.add_argument("--compute", action="store_true", help="the site is one of the three compute members")
    p.add_argument(
        "--no-data",
        dest="data",
        action="store_false",
        help="a neutral compute member that holds no data (needs --compute; writes data = false)",
    )
    p = sub.add_parser("add-analyst", help="create an analyst's signing key and client certificate")
    p.add_argument("dir", type=Path)
    p.add_argument("name")
    schema_draft.add_parser(sub)
    p = sub.add_parser("add-relay", help="create a relay's certificate and relay.toml")
    p.add_argument("dir", type=Path)
    p.add_argument("name")
    p.add_argument("--address", required=True, help="HOST:PORT where the relay listens")
    p.add_argument("--sites", nargs="*", default=[], help="sites reached through the relay only (while setting up)")
    p = sub.add_parser("revoke", help="write the change that removes a site or analyst and revokes its certificate")
    p.add_argument("dir", type=Path)
    p.add_argument("name")
    p = sub.add_parser("rotate", help="new keys and certificate for a site or analyst, and the change registering them")
    p.add_argument("dir", type=Path)
    p.add_argument("name")
    p = sub.add_parser(
        "propose",
        help="write a membership change for the sites to approve",
        description="Write DIR/change-vN-WHAT.toml, the next version of the consortium file. It takes effect "
        "once t sites signed it (mpc-site-agent approve) and it was installed (apply).",
    )
    p.add_argument("dir", type=Path)
    what = p.add_subparsers(dest="change", required=True)
    q = what.add_parser("add-site", help="a new site (keys and templates are written now)")
    q.add_argument("site")
    q.add_argument("--address", required=True, help="HOST:PORT where the site's agent is reached")
    q.add_argument("--compute", action="store_true")
    q.add_argument("--no-data", dest="data", action="store_false")
    q = what.add_parser("add-analyst", help="a new analyst (keys are written now)")
    q.add_argument("name")
    q = what.add_parser("committee", help="a new compute committee (three sites, in order)")
    q.add_argument("members", nargs=3)
    q = what.add_parser("relay", help="reach a site through a relay (or, without URI, directly again)")
    q.add_argument("site")
    q.add_argument("uri", nargs="?", help="wss://HOST:PORT of the relay")
    q = what.add_parser("approvals", help="a new t: the sites that must sign later changes")
    q.add_argument("approvals", type=int)
    p = sub.add_parser("apply", help="install an approved change as consortium.toml")
    p.add_argument("dir", type=Path)
    p.add_argument("change", type=Path)
    return parser


def _run(args: argparse.Namespace) -> str:
    if args.command == "init":
        return cmd_init(args.dir, args.name, args.consortium_id, args.approvals)
    if args.command == "add-site":
        return cmd_add_site(args.dir, args.site, args.address, args.compute, args.data)
    if args.command == "add-analyst":
        return cmd_add_analyst(args.dir, args.name)
    if args.command == "add-relay":
        return cmd_add_relay(args.dir, args.name, args.address, args.sites)
    if args.command == "revoke":
        return cmd_revoke(args.dir, args.name)
    if args.command == "rotate":
        return cmd_rotate(args.dir, args.name)
    if args.command == "apply":
        return cmd_apply(args.dir, args.change)
    if args.command == "schema":
        return schema_draft.run(args)
    if args.change == "add-site":
        return cmd_add_site(args.dir, args.site, args.address, args.compute, args.data, propose=True)
    if args.change == "add-analyst":
        return cmd_add_analyst(args.dir, args.name, propose=True)
    if args.change == "relay":
        return cmd_propose_relay(args.dir, args.site, args.uri)
    if args.change == "committee":
        return cmd_propose_committee(args.dir, args.members)
    return cmd_propose_approvals(args.dir, args.approvals)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; print one line on success or one error line (exit status 1)."""
    args = build_parser().parse_args(argv)
    try:
        message = _run(args)
    except (CliError, MpcError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
