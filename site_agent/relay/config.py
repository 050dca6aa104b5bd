"""``relay.toml``: one relay's settings (written by ``mpc-consortium add-relay``).

::

    [relay]
    name = "relay"                  # the common name of the relay's certificate
    listen = "0.0.0.0:8443"
    consortium = "../../consortium.toml"

    [tls]
    cert = "tls/cert.pem"
    key = "tls/key.pem"
    ca = "tls/ca.pem"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from site_agent.config import Address
from site_agent.tomlfile import read_toml, toml_str


@dataclass(frozen=True)
class RelayConfig:
    """The contents of ``relay.toml`` (paths absolute)."""

    path: Path
    name: str
    listen: Address
    consortium: Path
    tls_cert: Path
    tls_key: Path
    ca_cert: Path


def load_relay(path: Path | str) -> RelayConfig:
    """Load and validate ``relay.toml``; ``ConfigError`` naming file and key."""
    root = read_toml(path)
    root.only("relay", "tls")
    relay = root.section("relay")
    relay.only("name", "listen", "consortium")
    tls = root.section("tls")
    tls.only("cert", "key", "ca")
    try:
        listen = Address.parse(relay.get_str("listen"))
    except ValueError as exc:
        raise relay.error("listen", str(exc)) from exc
    return RelayConfig(
        path=root.file,
        name=relay.get_str("name"),
        listen=listen,
        consortium=relay.get_path("consortium", must_exist=True),
        tls_cert=tls.get_path("cert", must_exist=True),
        tls_key=tls.get_path("key", must_exist=True),
        ca_cert=tls.get_path("ca", must_exist=True),
    )


def render_relay(name: str, listen: Address, consortium: str) -> str:
    """A commented ``relay.toml``."""
    return f"""\
# Relay settings. Agents and analysts dial out to this relay; it forwards the bytes of their
# end-to-end TLS sessions and sees no data. Relative paths are relative to this file's folder.

[relay]
name = {toml_str(name)}
# Where the relay listens (the only inbound port anybody needs).
listen = {toml_str(str(listen))}
# The consortium file: who may use the relay (approved changes are taken up while running).
consortium = {toml_str(consortium)}

# Mutual TLS to the relay: its certificate is issued by the consortium CA, and so must be
# every client's.
[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
ca = "tls/ca.pem"
"""
