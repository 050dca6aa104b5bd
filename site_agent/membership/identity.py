"""Whether a certificate may connect: registered, revoked, or unknown to the consortium.

Every certificate the consortium CA issued verifies in the TLS handshake, including the ones
revoked since; the CA cannot take a signature back. So an agent also pins, per name, the
fingerprint the current consortium version registers, and names the reason when it refuses.
"""

from __future__ import annotations

from site_agent.config import ConsortiumConfig

REVOKED = "certificate revoked"
"""The start of every refusal of a revoked certificate (clients and tests look for it)."""


def admission(cfg: ConsortiumConfig, name: str, fingerprint: str) -> str | None:
    """None if the certificate ``name``/``fingerprint`` may connect under ``cfg``, else why not."""
    revoked = cfg.revoked.get(fingerprint)
    if revoked is not None:
        return f"{REVOKED}: {revoked.name}'s certificate was {revoked.reason} (consortium version {cfg.version})"
    entry = cfg.sites.get(name) or cfg.analysts.get(name)
    if entry is None:
        return f"certificate for {name!r}, who is not a member of consortium {cfg.id!r} (version {cfg.version})"
    if entry.tls_fingerprint != fingerprint:
        return f"certificate for {name!r} is not the one registered in consortium version {cfg.version}"
    return None
