"""The consortium's linkage declaration, ``[linkage]`` in ``schema.toml``; the site's files.

::

    [linkage]
    table = "patients"                 # whose persons are linked (it has a person column)
    identifier = ["national_id"]       # or ["family_name", "given_name", "birth_date", "sex"]

The identifier's parts are columns of the site's table as its engine presents it (a local name
maps to the part's name under ``[tables.patients.columns]`` in ``agent.toml``); they need not be
in the schema's columns, and are then never queryable. Their normalisation is
:mod:`site_agent.linkage.identifiers`.

A committee member's share of the OPRF key lives beside its signing key (``linkage.key``,
written once by ``mpc-site-agent linkage keygen``, readable by the agent's user only); a site's
linkage keys live in ``linkage.duckdb`` beside its ``agent.toml``, table ``_linkage(person,
key)``, and never leave the site in the clear.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from ..config import AgentConfig
from ..errors import ConfigError
from ..mpc.ring import U64
from ..query.catalog import Schema
from ..tomlfile import read_toml
from .identifiers import check_parts
from .oprf import check_key_share, new_key_share

KEY_FILE = "linkage.key"
KEYS_DB = "linkage.duckdb"
KEYS_TABLE = "_linkage"


@dataclass(frozen=True)
class Linkage:
    """What the consortium links on: the table, its person column and the identifier's parts."""

    table: str
    person: str
    parts: tuple[str, ...]


def load_linkage(schema_path: Path, schema: Schema) -> Linkage:
    """The ``[linkage]`` section of ``schema.toml``; ``ConfigError`` naming file and key."""
    root = read_toml(schema_path)
    if "linkage" not in root.data:
        raise ConfigError(f"{schema_path}: no [linkage] section: the consortium links no table")
    section = root.section("linkage")
    section.only("table", "identifier")
    table = section.get_str("table").lower()
    if table not in schema.tables:
        raise section.error("table", f"names no table of the schema ({', '.join(schema.tables)})")
    person = schema.tables[table].person
    if person is None:
        raise section.error("table", f"table {table!r} has no person column: linkage keys belong to persons")
    try:
        parts = check_parts(section.get_str_list("identifier"))
    except ConfigError as exc:
        raise section.error("identifier", str(exc)) from None
    return Linkage(table, person, parts)


def linkage_of(schema_path: Path, schema: Schema) -> Linkage | None:
    """The declaration, or None when ``schema.toml`` has no ``[linkage]`` section."""
    return load_linkage(schema_path, schema) if "linkage" in read_toml(schema_path).data else None


def key_path(config: AgentConfig) -> Path:
    return Path(config.signing_key).with_name(KEY_FILE)


def keys_db(config: AgentConfig) -> Path:
    return Path(config.path).with_name(KEYS_DB)


def write_key_share(path: Path) -> None:
    """A fresh key share in a new file readable by its owner only; never overwrites one (a new
    share at one member changes every key: all sites would have to prepare again)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(new_key_share())


def load_key_share(path: Path) -> bytes:
    if not path.exists():
        raise ConfigError(f"{path}: no linkage key share here: run `mpc-site-agent linkage keygen`")
    try:
        return check_key_share(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read_person_keys(path: Path) -> tuple[np.ndarray, U64]:
    """A site's stored ``_linkage``: its persons and, aligned, their keys as ring elements."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(f"SELECT person, key FROM {KEYS_TABLE}").fetchnumpy()
    finally:
        con.close()
    return np.ma.getdata(rows["person"]), np.asarray(rows["key"], dtype=np.int64).view(np.uint64)
