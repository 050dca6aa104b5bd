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
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from site_agent.cli import schema_draft
from site_agent.config import (
    Address,
    AnalystEntry,
    ConsortiumConfig,
    SiteEntry,
    load_consortium,
    render_agent_template,
    render_consortium,
)
from site_agent.crypto.certs import fingerprint, issue_cert, make_ca
from site_agent.crypto.signing import generate_signing_key, private_key_pem, public_key_pem, write_secret_file
from site_agent.errors import MpcError
from site_agent.policy import render_policy_template
from site_agent.tomlfile import NAME_RE

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
    """Replace ``consortium.toml`` atomically, so a crash never leaves half a file."""
    tmp = cfg.path.with_name(cfg.path.name + ".tmp")
    tmp.write_text(render_consortium(cfg))
    os.replace(tmp, cfg.path)


def _load(directory: Path) -> ConsortiumConfig:
    path = directory / CONSORTIUM_FILE
    if not path.exists():
        raise CliError(f"{path} not found: run '{PROG} init {directory} --name NAME' first")
    return load_consortium(path)


def _make_identity(cfg: ConsortiumConfig, folder: Path, name: str, hosts: list[str], server: bool) -> tuple[str, str]:
    """TLS key and certificate plus Ed25519 signing key under ``folder``; returns
    (certificate fingerprint, signing public key PEM)."""
    ca_dir = cfg.ca_cert.parent
    ca_key, ca_cert = (ca_dir / "ca.key").read_bytes(), cfg.ca_cert.read_bytes()
    key_pem, cert_pem = issue_cert(ca_key, ca_cert, name, hosts, client=True, server=server)
    signing = generate_signing_key()
    (folder / "tls").mkdir(parents=True)
    (folder / "signing").mkdir()
    write_secret_file(folder / "tls" / "key.pem", key_pem)
    (folder / "tls" / "cert.pem").write_bytes(cert_pem)
    (folder / "tls" / "ca.pem").write_bytes(ca_cert)
    write_secret_file(folder / "signing" / "key.pem", private_key_pem(signing))
    public = public_key_pem(signing)
    (folder / "signing" / "public.pem").write_text(public)
    return fingerprint(cert_pem), public


def cmd_init(directory: Path, name: str, consortium_id: str | None) -> str:
    """Create the consortium CA and an empty ``consortium.toml``."""
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
    )
    _write_consortium(cfg)
    return f"created consortium {cid!r} in {directory} (CA key: {ca_dir / 'ca.key'}, keep it private)"


def cmd_add_site(directory: Path, site: str, address: str, compute: bool, data: bool = True) -> str:
    """Keys, certificate and commented config templates for a new site; register it.

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
    _write_consortium(cfg.with_site(SiteEntry(site, addr, compute, fp, public, data)))
    if not data:
        role = "neutral compute member, no data"
    else:
        role = "compute member and input party" if compute else "input party"
    return f"added site {site!r} ({role}) at {addr}: edit {folder / 'agent.toml'} and {folder / 'policy.toml'}"


def cmd_add_analyst(directory: Path, name: str) -> str:
    """Signing key and client certificate for a new analyst; register them."""
    _check_name(name, "analyst")
    cfg = _load(directory)
    folder = directory / "analysts" / name
    if folder.exists():
        raise CliError(f"{folder} already exists")
    cfg.with_analyst(AnalystEntry(name, "0" * 64, ""))
    fp, public = _make_identity(cfg, folder, name, [], server=False)
    _write_consortium(cfg.with_analyst(AnalystEntry(name, fp, public)))
    return f"added analyst {name!r}: keys in {folder}; allow them in each site's policy.toml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Create a consortium, its sites and analysts, with keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create a consortium CA and DIR/consortium.toml")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", required=True, help="human-readable consortium name")
    p.add_argument("--id", dest="consortium_id", help="consortium id (default: from the name plus random digits)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; print one line on success or one error line (exit status 1)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            message = cmd_init(args.dir, args.name, args.consortium_id)
        elif args.command == "add-site":
            message = cmd_add_site(args.dir, args.site, args.address, args.compute, args.data)
        elif args.command == "schema":
            message = schema_draft.run(args)
        else:
            message = cmd_add_analyst(args.dir, args.name)
    except (CliError, MpcError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
