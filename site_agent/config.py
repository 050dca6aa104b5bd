"""The consortium file (shared by everyone) and a site's agent file (one per hospital).

``consortium.toml`` says who is in the consortium: its id, the CA certificate, each site's
address, TLS certificate fingerprint and Ed25519 public key, each analyst's keys, and the three
compute-committee members in order. ``mpc-consortium`` writes it; every agent and notebook
reads the same file. A site entry with ``data = false`` is a neutral compute member: it holds
no data (it must be in the committee), computes on shares like any member and contributes
nothing to results (absent means ``data = true``).

Once agents run, ``consortium.toml`` changes only by *membership changes* approved by the sites
(see :mod:`site_agent.membership`): each version names the digest of the one it replaces
(``previous``) and carries the Ed25519 signatures of the sites that approved it
(``[signatures]``); identities taken out are listed under ``[revoked]`` by certificate
fingerprint, so an agent can refuse them by name and reason.

``agent.toml`` is one site's own settings: its name, where it listens, its key files, its
tables, its audit log and policy file. Relative paths are resolved against the folder of the
file that names them, so a site folder can be moved as a whole.

Both load into frozen dataclasses; every problem is a ``ConfigError`` naming file and key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from site_agent.crypto.signing import Ed25519PublicKey, is_lower_hex, load_public_key
from site_agent.errors import AuthError, ConfigError
from site_agent.tomlfile import Section, check_name, read_toml, toml_key, toml_multiline, toml_str, toml_str_list

COMMITTEE_SIZE = 3
DEFAULT_QUERY_TIMEOUT = 30
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".duckdb": "duckdb", ".db": "duckdb"}


@dataclass(frozen=True)
class Address:
    """A ``host:port`` network address (IPv6 hosts written in brackets: ``[::1]:7001``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``host:port``; ``ValueError`` with a readable message if malformed."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ValueError(f"{text!r} is not HOST:PORT")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ipaddress.IPv6Address(host)
        elif ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:7001")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"{text!r}: port must be between 1 and 65535")
        return cls(host, port)


def _address(section: Section, key: str) -> Address:
    try:
        return Address.parse(section.get_str(key))
    except ValueError as exc:
        raise section.error(key, str(exc)) from exc


def _fingerprint(section: Section, key: str) -> str:
    value = section.get_str(key)
    if not is_lower_hex(value, 32):
        raise section.error(key, "must be a SHA-256 fingerprint: 64 lowercase hex digits")
    return value


def _relay_uri(section: Section, key: str) -> str | None:
    """An optional ``wss://HOST:PORT`` relay address."""
    if key not in section:
        return None
    value = section.get_str(key).rstrip("/")
    if not value.startswith("wss://"):
        raise section.error(key, f"must be wss://HOST:PORT, got {value!r}")
    try:
        Address.parse(value.removeprefix("wss://"))
    except ValueError as exc:
        raise section.error(key, f"must be wss://HOST:PORT: {exc}") from exc
    return value


def _public_key_pem(section: Section, key: str) -> str:
    value = section.get_str(key)
    try:
        load_public_key(value)
    except ConfigError as exc:
        raise section.error(key, str(exc)) from exc
    return value


@dataclass(frozen=True)
class SiteEntry:
    """A site as the consortium knows it.

    ``data`` is false for a neutral compute member that holds no data (always a compute member).
    """

    name: str
    address: Address
    compute: bool
    tls_fingerprint: str
    signing_key: str  # Ed25519 public key, PEM
    data: bool = True
    relay: str | None = None
    """``wss://host:port`` of the relay the site is reached through (None: at ``address``).
    ``address`` still names the host its certificate is issued for."""

    def public_key(self) -> Ed25519PublicKey:
        """The site's Ed25519 key, which verifies its audit receipts."""
        return load_public_key(self.signing_key)


@dataclass(frozen=True)
class AnalystEntry:
    """An analyst as the consortium knows them."""

    name: str
    tls_fingerprint: str
    signing_key: str  # Ed25519 public key, PEM

    def public_key(self) -> Ed25519PublicKey:
        """The analyst's Ed25519 key, which verifies their query envelopes."""
        return load_public_key(self.signing_key)


@dataclass(frozen=True)
class RevokedEntry:
    """A certificate the consortium no longer accepts: whose it was and why (revoked, rotated)."""

    fingerprint: str
    name: str
    reason: str


@dataclass(frozen=True)
class ConsortiumConfig:
    """The contents of ``consortium.toml``.

    ``committee`` may hold fewer than three names while the consortium is being set up;
    ``require_committee()`` is what an agent calls before running any query.
    """

    path: Path
    id: str
    name: str
    ca_cert: Path
    sites: Mapping[str, SiteEntry]
    analysts: Mapping[str, AnalystEntry]
    committee: tuple[str, ...]
    version: int = 0
    previous: str = ""
    """Digest of the version this one replaces (empty for version 0, the set-up file)."""
    approvals: int | None = None
    """Sites that must sign a membership change (None: a majority of the sites)."""
    revoked: Mapping[str, RevokedEntry] = field(default_factory=lambda: MappingProxyType({}))
    """Certificates no longer accepted, by SHA-256 fingerprint."""
    signatures: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Site name -> hex Ed25519 signature of this version's digest (not part of the digest)."""

    @property
    def required_approvals(self) -> int:
        """t: how many distinct sites must sign a change to this version."""
        return self.approvals if self.approvals is not None else len(self.sites) // 2 + 1

    def site(self, name: str) -> SiteEntry:
        """The named site; ``ConfigError`` if it is not in the consortium."""
        if name not in self.sites:
            raise ConfigError(f"{self.path}: no site {name!r} (sites: {', '.join(self.sites) or 'none'})")
        return self.sites[name]

    def analyst_key(self, name: str) -> Ed25519PublicKey:
        """The registered key of an analyst; ``AuthError`` for an analyst not in the consortium."""
        if name not in self.analysts:
            raise AuthError(f"analyst {name!r} is not registered in consortium {self.id!r}")
        return self.analysts[name].public_key()

    def require_committee(self) -> tuple[str, str, str]:
        """The three committee members in order; ``ConfigError`` until there are three."""
        if len(self.committee) != COMMITTEE_SIZE:
            raise ConfigError(
                f"{self.path}: consortium.committee: needs {COMMITTEE_SIZE} compute members, has {len(self.committee)}"
            )
        a, b, c = self.committee
        return a, b, c

    @property
    def data_sites(self) -> tuple[str, ...]:
        """Every site that holds data: the committee members that do, in committee order, then
        the input-only sites by name. The domain of ``SITE``, and the order of the site axis
        the committee stacks the sites' inputs on."""
        return tuple(name for name in self.committee if self.sites[name].data) + self.input_sites

    @property
    def input_sites(self) -> tuple[str, ...]:
        """The input-only sites, by name: data sites outside the committee, which share their
        pre-aggregates with it and run no protocol (site_agent/agent/input_site.py)."""
        return tuple(sorted(name for name in self.sites if name not in self.committee))

    def with_site(self, entry: SiteEntry) -> ConsortiumConfig:
        """A copy with one more site (and in the committee if it computes); validated."""
        if entry.name in self.sites or entry.name in self.analysts:
            raise ConfigError(f"{self.path}: a site or analyst named {entry.name!r} already exists")
        if not entry.data and not entry.compute:
            raise ConfigError(f"{self.path}: site {entry.name!r} holds no data, so it must be a compute member")
        committee = (*self.committee, entry.name) if entry.compute else self.committee
        if len(committee) > COMMITTEE_SIZE:
            raise ConfigError(
                f"{self.path}: the committee already has {COMMITTEE_SIZE} compute members ({', '.join(self.committee)})"
            )
        sites = MappingProxyType({**self.sites, entry.name: entry})
        return replace(self, sites=sites, committee=committee)

    def with_analyst(self, entry: AnalystEntry) -> ConsortiumConfig:
        """A copy with one more analyst; validated."""
        if entry.name in self.sites or entry.name in self.analysts:
            raise ConfigError(f"{self.path}: a site or analyst named {entry.name!r} already exists")
        return replace(self, analysts=MappingProxyType({**self.analysts, entry.name: entry}))


def _revoked(root: Section) -> dict[str, RevokedEntry]:
    out: dict[str, RevokedEntry] = {}
    for fp, r in root.section("revoked", required=False).subsections():
        if not is_lower_hex(fp, 32):
            raise r.error(None, "revoked certificates are keyed by their SHA-256 fingerprint (64 lowercase hex digits)")
        r.only("name", "reason")
        out[fp] = RevokedEntry(fp, r.get_str("name"), r.get_str("reason"))
    return out


def _signatures(root: Section) -> dict[str, str]:
    section = root.section("signatures", required=False)
    out: dict[str, str] = {}
    for site in section.data:
        value = section.get_str(site)
        if not is_lower_hex(value, 64):
            raise section.error(site, "must be an Ed25519 signature: 128 lowercase hex digits")
        out[site] = value
    return out


def load_consortium(path: Path | str) -> ConsortiumConfig:
    """Load and validate ``consortium.toml`` (or a proposed change to it)."""
    root = read_toml(path)
    root.only("consortium", "sites", "analysts", "revoked", "signatures")
    head = root.section("consortium")
    head.only("id", "name", "ca_cert", "committee", "version", "previous", "approvals")
    sites: dict[str, SiteEntry] = {}
    for name, s in root.section("sites", required=False).subsections():
        check_name(s, None, name, "site")
        s.only("address", "compute", "data", "tls_fingerprint", "signing_key", "relay")
        sites[name] = SiteEntry(
            name=name,
            address=_address(s, "address"),
            compute=s.get_bool("compute", False),
            tls_fingerprint=_fingerprint(s, "tls_fingerprint"),
            signing_key=_public_key_pem(s, "signing_key"),
            data=s.get_bool("data", True),
            relay=_relay_uri(s, "relay"),
        )
        if not sites[name].data and not sites[name].compute:
            raise s.error("data", "a site without data is only useful as a compute member: set compute = true")
    analysts: dict[str, AnalystEntry] = {}
    for name, a in root.section("analysts", required=False).subsections():
        check_name(a, None, name, "analyst")
        if name in sites:
            raise a.error(None, f"{name!r} is also a site name; certificate names must be unique")
        a.only("tls_fingerprint", "signing_key")
        analysts[name] = AnalystEntry(
            name=name, tls_fingerprint=_fingerprint(a, "tls_fingerprint"), signing_key=_public_key_pem(a, "signing_key")
        )
    committee = head.get_str_list("committee", ())
    if len(committee) > COMMITTEE_SIZE:
        raise head.error("committee", f"at most {COMMITTEE_SIZE} members, got {len(committee)}")
    for member in committee:
        if member not in sites:
            raise head.error("committee", f"{member!r} is not a site in [sites]")
        if not sites[member].compute:
            raise head.error("committee", f"{member!r} is listed but its site has compute = false")
    for name, site in sites.items():
        if site.compute and name not in committee:
            raise head.error("committee", f"site {name!r} has compute = true but is not listed")
    revoked = _revoked(root)
    registered: list[SiteEntry | AnalystEntry] = [*sites.values(), *analysts.values()]
    for entry in registered:
        if entry.tls_fingerprint in revoked:
            raise root.error("revoked", f"{entry.name!r} is registered with a revoked certificate")
    version = head.get_int("version", 0, minimum=0)
    previous = head.get_str("previous", "") if version else ""
    if version and not is_lower_hex(previous, 32):
        raise head.error("previous", "must be the SHA-256 digest of the version this one replaces")
    approvals = head.get_int("approvals", None, minimum=1) if "approvals" in head else None
    return ConsortiumConfig(
        path=root.file,
        id=head.get_str("id"),
        name=head.get_str("name"),
        ca_cert=head.get_path("ca_cert", must_exist=True),
        sites=MappingProxyType(sites),
        analysts=MappingProxyType(analysts),
        committee=committee,
        version=version,
        previous=previous,
        approvals=approvals,
        revoked=MappingProxyType(revoked),
        signatures=MappingProxyType(_signatures(root)),
    )


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when below it, else absolute (keeps folders movable)."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def render_consortium(cfg: ConsortiumConfig) -> str:
    """The text of ``consortium.toml`` for ``cfg``, with comments (``mpc-consortium`` rewrites it)."""
    base = cfg.path.parent
    lines = [
        "# Consortium file: who takes part. Written by mpc-consortium; share it with every site and",
        "# analyst (it holds public keys and fingerprints only). Values edited by hand are kept when",
        "# mpc-consortium rewrites the file; comments are not.",
        "",
        "[consortium]",
        f"id = {toml_str(cfg.id)}  # signed into every query envelope",
        f"name = {toml_str(cfg.name)}",
        f"ca_cert = {toml_str(_relative(cfg.ca_cert, base))}  # the CA that issued every certificate below",
        "# The three compute members, in order (sites, or a neutral agent without data).",
        f"committee = {toml_str_list(cfg.committee)}",
        "# Membership changes: each version is approved by the sites (see docs/deploy.md).",
        f"version = {cfg.version}",
        *([f"previous = {toml_str(cfg.previous)}  # digest of the version this one replaces"] if cfg.version else []),
        (
            f"approvals = {cfg.approvals}  # sites that must sign a change"
            if cfg.approvals is not None
            else "# approvals = 2  # sites that must sign a change (absent: a majority of the sites)"
        ),
    ]
    for s in cfg.sites.values():
        lines += [
            "",
            f"[sites.{toml_key(s.name)}]",
            f"address = {toml_str(str(s.address))}",
            f"compute = {'true' if s.compute else 'false'}",
            *([] if s.data else ["data = false  # a neutral compute member: holds no data, computes on shares"]),
            *([f"relay = {toml_str(s.relay)}  # reached through this relay only"] if s.relay else []),
            f"tls_fingerprint = {toml_str(s.tls_fingerprint)}  # SHA-256 of the site's TLS certificate",
            f"signing_key = {toml_multiline(s.signing_key)}",
        ]
    for a in cfg.analysts.values():
        lines += [
            "",
            f"[analysts.{toml_key(a.name)}]",
            f"tls_fingerprint = {toml_str(a.tls_fingerprint)}",
            f"signing_key = {toml_multiline(a.signing_key)}",
        ]
    for r in cfg.revoked.values():
        lines += ["", f"[revoked.{r.fingerprint}]", f"name = {toml_str(r.name)}", f"reason = {toml_str(r.reason)}"]
    if cfg.signatures:
        lines += ["", "# Approvals of this version: site -> Ed25519 signature of its digest."]
        lines += ["[signatures]", *(f"{toml_key(s)} = {toml_str(sig)}" for s, sig in sorted(cfg.signatures.items()))]
    return "\n".join(lines) + "\n"


Scalar = str | int | float | bool
"""A value in a code mapping (``[tables.x.values.column]``)."""


def write_consortium(cfg: ConsortiumConfig) -> None:
    """Write ``cfg`` to ``cfg.path`` atomically (a watching agent never reads half a file)."""
    tmp = cfg.path.with_name(cfg.path.name + ".tmp")
    tmp.write_text(render_consortium(cfg))
    os.replace(tmp, cfg.path)


@dataclass(frozen=True)
class TableSource:
    """A table a site serves, under its consortium name.

    Either a file (``path``: CSV or Parquet, scanned by the site's embedded DuckDB, or a DuckDB
    database file, attached read-only) or a database server (``source``: a URL such as
    ``postgresql://reader@db/clinic``), where the plan's local SQL runs by push-down.
    ``table`` is the table's name inside a database (default: the consortium name; quoted parts
    keep their case and punctuation: ``'public."Lung 2024"'``). ``columns`` maps consortium column
    names to local ones, ``values`` maps, per consortium column, a local code (as text) to the
    consortium's value: the site's engine presents the table under the consortium's names and
    codes, so the plan's SQL never needs to know the local ones.
    """

    name: str
    path: Path | None
    format: str  # "csv", "parquet", "duckdb", or the URL scheme of a server ("postgresql")
    source: str | None = None
    table: str | None = None
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    values: Mapping[str, Mapping[str, Scalar]] = field(default_factory=lambda: MappingProxyType({}))
    where: str = ""
    """``file: tables.NAME``, where it is declared (for errors)."""

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        """One line naming the file, the key, the problem and the fix."""
        where = f"{self.where}.{key}" if self.where else f"table {self.name!r}: {key}"
        return ConfigError(f"{where}: {problem.strip().splitlines()[0] if problem.strip() else problem}; {fix}")

    @property
    def local_table(self) -> str:
        """The table's name in its database (a DuckDB file or a server)."""
        return self.table or self.name

    def describe(self) -> str:
        """Where the table lives, for messages (a server URL without its password)."""
        if self.source is None:
            return str(self.path)
        return f"{redact_url(self.source)} table {self.local_table}"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (URLs may reach logs and messages)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class AgentConfig:
    """The contents of a site's ``agent.toml`` (all paths absolute)."""

    path: Path
    site: str
    listen: Address | None
    """Where the agent accepts connections; None when it is reached through ``relay`` only."""
    consortium: Path
    tls_cert: Path
    tls_key: Path
    ca_cert: Path
    signing_key: Path
    policy: Path
    audit_log: Path
    data_dir: Path
    query_timeout: int
    tables: Mapping[str, TableSource]
    relay: str | None = None
    """``wss://host:port`` of the relay this agent registers at (it then needs no inbound port)."""


SERVER_SCHEMES = ("postgresql", "postgres")
"""URL schemes of ``source``: database servers the local step can be pushed down to."""


def _table(section: Section, name: str) -> TableSource:
    check_name(section, None, name, "table")
    section.only("path", "format", "source", "table", "columns", "values")
    columns = _column_map(section.section("columns", required=False))
    values = _value_maps(section.section("values", required=False))
    table = section.get_str("table", None)
    if ("path" in section) == ("source" in section):
        raise section.error(None, "give exactly one of path (a CSV, Parquet or DuckDB file) or source (a database URL)")
    if "source" in section:
        source = section.get_str("source")
        scheme = source.partition("://")[0].lower()
        if scheme not in SERVER_SCHEMES:
            raise section.error("source", f"must be a postgresql:// URL, got scheme {scheme!r}")
        if "format" in section:
            raise section.error("format", "is for files only; a source URL names its engine")
        return TableSource(name, None, "postgresql", source, table, columns, values, section.where())
    path = section.get_path("path", must_exist=True)
    default_format = TABLE_FORMATS.get(path.suffix.lower())
    fmt = section.get_str("format", default_format)
    if fmt is None:
        raise section.error("path", f"cannot tell the format of {path.name}: use .csv, .parquet, .duckdb or set format")
    if fmt not in TABLE_FORMATS.values():
        raise section.error("format", f"must be 'csv', 'parquet' or 'duckdb', got {fmt!r}")
    if table is not None and fmt != "duckdb":
        raise section.error("table", "names a table inside a database; a CSV or Parquet file is one table")
    return TableSource(name, path, fmt, None, table, columns, values, section.where())


def _column_map(section: Section) -> Mapping[str, str]:
    """``[tables.x.columns]``: consortium column = local column (each local column used once)."""
    out = {key.lower(): section.get_str(key) for key in section.data}
    seen: dict[str, str] = {}
    for key, local in out.items():
        if local in seen:
            raise section.error(key, f"local column {local!r} is already mapped to {seen[local]!r}")
        seen[local] = key
    return MappingProxyType(out)


def _value_maps(section: Section) -> Mapping[str, Mapping[str, Scalar]]:
    """``[tables.x.values.COLUMN]``: local code (written as text) = consortium value."""
    out: dict[str, Mapping[str, Scalar]] = {}
    for column, codes in section.subsections():
        mapping: dict[str, Scalar] = {}
        kinds = set()
        for code, value in codes.data.items():
            if not isinstance(value, str | int | float | bool):
                raise codes.error(code, f"must be a string, number or boolean, got {type(value).__name__}")
            kinds.add(bool if isinstance(value, bool) else str if isinstance(value, str) else float)
            mapping[code] = value
        if len(kinds) > 1:
            raise codes.error(None, "all consortium values of one column must be of one type")
        if not mapping:
            raise codes.error(None, "is empty: list local code = consortium value pairs")
        out[column.lower()] = MappingProxyType(mapping)
    return MappingProxyType(out)


def load_agent(path: Path | str) -> AgentConfig:
    """Load and validate a site's ``agent.toml`` (key and table files must exist)."""
    root = read_toml(path)
    root.only("site", "tls", "signing", "audit", "policy", "tables")
    site = root.section("site")
    site.only("name", "listen", "relay", "consortium", "data_dir", "query_timeout_seconds")
    tls = root.section("tls")
    tls.only("cert", "key", "ca")
    signing = root.section("signing")
    signing.only("key")
    audit = root.section("audit")
    audit.only("path")
    policy = root.section("policy", required=False)
    policy.only("path")
    tables = {name: _table(t, name) for name, t in root.section("tables", required=False).subsections()}
    return AgentConfig(
        path=root.file,
        site=check_name(site, "name", site.get_str("name"), "site"),
        listen=_listen(site),
        consortium=site.get_path("consortium", must_exist=True),
        tls_cert=tls.get_path("cert", must_exist=True),
        tls_key=tls.get_path("key", must_exist=True),
        ca_cert=tls.get_path("ca", must_exist=True),
        signing_key=signing.get_path("key", must_exist=True),
        policy=policy.get_path("path", "policy.toml", must_exist=True),
        audit_log=audit.get_path("path"),
        data_dir=site.get_path("data_dir", "data"),
        query_timeout=site.get_int("query_timeout_seconds", DEFAULT_QUERY_TIMEOUT, minimum=1),
        tables=MappingProxyType(tables),
        relay=_relay_uri(site, "relay"),
    )


def _listen(site: Section) -> Address | None:
    """``[site] listen``; may be absent only when the agent is reached through a relay."""
    if "listen" not in site and "relay" in site:
        return None
    return _address(site, "listen")


AGENT_TEMPLATE = """\
# Site agent settings for {site}. Relative paths are relative to this file's folder.

[site]
# Must match [sites.{site_key}] in the consortium file.
name = {site_q}
# Address to listen on ("0.0.0.0:{port}": every interface); an input-only site dials out instead.
listen = {listen_q}
# The consortium file; keep it identical at every site.
consortium = {consortium_q}
# Working folder of the agent (DuckDB files, temporary data).
data_dir = "data"
# A query still running after this many seconds is aborted.
query_timeout_seconds = {timeout}

# Mutual TLS 1.3. Keep key.pem readable by the agent's user only. Only certificates issued
# by the consortium CA (ca.pem) are accepted.
[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
ca = "tls/ca.pem"

# Ed25519 key that signs this site's audit entries and the receipts analysts receive.
[signing]
key = "signing/key.pem"

# Append-only, hash-chained and signed; one line per request, never any data values.
[audit]
path = "audit/audit.jsonl"

# What this site allows; see the comments in that file.
[policy]
path = "policy.toml"

{tables}"""

TABLES_TEMPLATE = """\
# Tables this site serves, each a CSV, Parquet or DuckDB file (scanned by the embedded DuckDB)
# or a table in PostgreSQL, where the local step runs in place (docs/data-sources.md).
# The table name is what analysts write in queries; expose its columns in policy.toml.
#
# [tables.lung]
# path = "data/lung.csv"
#
# [tables.lung]
# source = "postgresql://mpc_reader@db.hospital.example/clinic"  # a read-only role
# table = "public.lung"
# [tables.lung.columns]     # consortium name = local name, where they differ
# ph_ecog = "ph.ecog"
# [tables.lung.values.sex]  # local code = consortium value
# "1" = "M"
# "2" = "F"
"""

NO_DATA_TEMPLATE = """\
# This site holds no data (data = false in the consortium file): a neutral compute member.
# It declares no tables: the agent refuses to start if a [tables] section is added here. It
# serves the consortium schema's tables empty, so its local step contributes nothing, and it
# only ever sees shares of the other sites' pre-aggregates.
"""


def render_agent_template(site: str, listen: Address, consortium_path: str, data: bool = True) -> str:
    """A commented ``agent.toml`` for a new site (paths as ``mpc-consortium add-site`` lays them out);
    ``data=False``: a neutral compute member, which declares no tables."""
    return AGENT_TEMPLATE.format(
        site=site,
        site_q=toml_str(site),
        site_key=toml_key(site),
        listen_q=toml_str(str(listen)),
        port=listen.port,
        consortium_q=toml_str(consortium_path),
        timeout=DEFAULT_QUERY_TIMEOUT,
        tables=TABLES_TEMPLATE if data else NO_DATA_TEMPLATE,
    )
