"""Membership changes approved by t of the n sites.

A change is a complete new version of ``consortium.toml``: ``version`` one above the current
one, ``previous`` the current version's digest, and a ``[signatures]`` table where each
approving site puts its Ed25519 signature of the new version's digest. An agent replaces its
current version with a candidate only if

1. the candidate is for the same consortium and names the current version as its predecessor
   (so a change cannot be replayed onto another version, nor an old version re-installed), and
2. at least ``t`` distinct sites *of the current version* signed it with the signing keys the
   current version registers (so nobody added by the change approves it, and the CA key holder
   alone can no longer mint an identity).

``t`` is the current version's ``approvals`` (default: a majority of its sites). The digest
covers every field that says who may take part -- sites, analysts, committee, revocations,
threshold, the CA certificate's own fingerprint -- and not the signatures, which are added one
by one (``mpc-site-agent approve``). This is the threshold-signature-by-quorum of
certificate-transparency-style logs done with plain Ed25519 multi-signatures: each site's
approval is a separate signature that anyone can check against the consortium file, no
interactive threshold protocol needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from site_agent.config import AnalystEntry, ConsortiumConfig, SiteEntry
from site_agent.crypto.certs import fingerprint
from site_agent.crypto.signing import Ed25519PrivateKey, load_public_key, sign, verify
from site_agent.errors import AuthError, BadSignature, ConfigError

DOMAIN = b"mpc-jupyter membership change v1\n"
"""Prefix of every signed digest, so an approval can never be mistaken for another signature."""


class ChangeRejected(AuthError):
    """A new consortium version is not an approved change of the current one."""


def _content(cfg: ConsortiumConfig) -> dict[str, Any]:
    try:
        ca = fingerprint(cfg.ca_cert.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{cfg.ca_cert}: cannot read the CA certificate: {exc}") from exc
    return {
        "id": cfg.id,
        "name": cfg.name,
        "ca": ca,
        "committee": list(cfg.committee),
        "version": cfg.version,
        "previous": cfg.previous,
        "approvals": cfg.approvals,
        "sites": {
            s.name: [str(s.address), s.compute, s.data, s.tls_fingerprint, s.signing_key.strip(), s.relay]
            for s in sorted(cfg.sites.values(), key=lambda s: s.name)
        },
        "analysts": {
            a.name: [a.tls_fingerprint, a.signing_key.strip()]
            for a in sorted(cfg.analysts.values(), key=lambda a: a.name)
        },
        "revoked": {fp: [r.name, r.reason] for fp, r in sorted(cfg.revoked.items())},
    }


def digest(cfg: ConsortiumConfig) -> str:
    """SHA-256 (hex) of a version's membership content, in canonical JSON; signatures excluded."""
    canonical = json.dumps(_content(cfg), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def successor(cfg: ConsortiumConfig, **changes: Any) -> ConsortiumConfig:
    """The next version of ``cfg`` with ``changes`` applied: numbered, chained, unsigned."""
    return replace(
        cfg,
        **changes,
        version=cfg.version + 1,
        previous=digest(cfg),
        signatures=MappingProxyType({}),
    )


def approve(change: ConsortiumConfig, site: str, key: Ed25519PrivateKey) -> ConsortiumConfig:
    """``change`` with ``site``'s signature of its digest added (replacing an earlier one)."""
    signature = sign(key, DOMAIN + digest(change).encode()).hex()
    return replace(change, signatures=MappingProxyType({**change.signatures, site: signature}))


def approvers(current: ConsortiumConfig, change_digest: str, signatures: Iterable[tuple[str, str]]) -> set[str]:
    """The distinct sites of ``current`` whose signature of ``change_digest`` verifies.

    Signatures by names that are not sites of ``current``, or that do not verify, are skipped;
    a site that signed twice counts once.
    """
    message = DOMAIN + change_digest.encode()
    valid: set[str] = set()
    for site, signature in signatures:
        entry = current.sites.get(site)
        if entry is None:
            continue
        try:
            verify(load_public_key(entry.signing_key), message, bytes.fromhex(signature))
        except (BadSignature, ValueError):
            continue
        valid.add(site)
    return valid


def check_change(
    current: ConsortiumConfig, candidate: ConsortiumConfig, signatures: Iterable[tuple[str, str]] | None = None
) -> set[str]:
    """The approving sites if ``candidate`` may replace ``current``; ``ChangeRejected`` saying why not.

    ``signatures`` defaults to the candidate's own ``[signatures]`` table.
    """
    if candidate.id != current.id:
        raise ChangeRejected(f"the change is for consortium {candidate.id!r}, not {current.id!r}")
    if candidate.version != current.version + 1 or candidate.previous != digest(current):
        raise ChangeRejected(
            f"the change (version {candidate.version}) does not follow the current version {current.version}"
        )
    found = approvers(current, digest(candidate), candidate.signatures.items() if signatures is None else signatures)
    need = current.required_approvals
    if len(found) < need:
        named = ", ".join(sorted(found)) or "none"
        raise ChangeRejected(
            f"version {candidate.version} has {len(found)} valid site signatures ({named}); {need} are required"
        )
    return found


def describe_change(current: ConsortiumConfig, candidate: ConsortiumConfig) -> str:
    """One line saying what a change does (for approvers, logs and audit entries); names only."""
    parts = _diff("site", _fingerprints(current.sites), _fingerprints(candidate.sites))
    parts += _diff("analyst", _fingerprints(current.analysts), _fingerprints(candidate.analysts))
    parts += [
        f"revokes {r.name}'s certificate ({r.reason})"
        for fp, r in candidate.revoked.items()
        if fp not in current.revoked
    ]
    if candidate.committee != current.committee:
        parts.append(f"committee {', '.join(candidate.committee)}")
    if candidate.approvals != current.approvals:
        parts.append(f"approvals {candidate.approvals or 'majority'}")
    return "; ".join(parts) or "no membership change"


def _fingerprints(entries: Mapping[str, SiteEntry] | Mapping[str, AnalystEntry]) -> dict[str, str]:
    return {name: e.tls_fingerprint for name, e in entries.items()}


def _diff(kind: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Names added, removed and re-certified between two name -> fingerprint maps."""
    return (
        [f"adds {kind} {n}" for n in new if n not in old]
        + [f"removes {kind} {n}" for n in old if n not in new]
        + [f"new certificate for {kind} {n}" for n in new if n in old and new[n] != old[n]]
    )
