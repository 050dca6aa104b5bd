"""The agent's side of membership changes: notice a new consortium file and apply it live.

The agent polls the consortium file's status (modification time, size, inode) every
:data:`POLL_SECONDS`; polling costs one ``stat`` and works the same on every platform and file
system, where inotify-style watches do not (network shares, bind mounts, editors that
replace files). When the file changed, the new version is loaded and checked against the
version the agent runs (:func:`~site_agent.membership.changes.check_change`): an approved change
goes to the daemon's ``apply`` callback; anything else -- unsigned edits, too few signatures, a
version that does not follow the current one, a file that does not parse -- is ignored with one
warning log line, and the agent keeps running its current version.

The version an agent accepted last is kept in its data folder (:data:`ACCEPTED_FILE`), so a
restart does not undo the rule: at start (:func:`startup_version`) the consortium file is
taken only if it is that version or an approved change of it; otherwise the agent runs the
version it had accepted and logs why.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from site_agent.audit import AuditLog
from site_agent.config import AgentConfig, ConsortiumConfig, load_consortium, write_consortium
from site_agent.errors import MpcError

from .changes import check_change, describe_change, digest

POLL_SECONDS = 0.5
"""How often the consortium file's status is checked."""
ACCEPTED_FILE = "consortium.accepted.toml"
"""The last version this agent accepted, in its data folder."""

log = logging.getLogger("site_agent.membership")

Apply = Callable[[ConsortiumConfig, ConsortiumConfig, set[str]], Awaitable[None]]
"""Called with (old version, new version, approving sites) for every approved change."""


def remember(config: AgentConfig, cfg: ConsortiumConfig) -> None:
    """Keep ``cfg`` as the version this agent accepted (CA path written absolute)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    write_consortium(replace(cfg, path=config.data_dir / ACCEPTED_FILE))


def accept(
    config: AgentConfig,
    audit: AuditLog,
    policy_digest: str,
    old: ConsortiumConfig,
    new: ConsortiumConfig,
    signers: set[str],
) -> None:
    """A running agent takes up an approved version: kept as the one it accepted, and recorded
    in its audit log (the change described, and who approved it)."""
    remember(config, new)
    audit.append(
        analyst="(consortium)",
        query="",
        plan_digest=None,
        policy_digest=policy_digest,
        decision="accepted",
        reason=f"membership version {new.version} approved by {', '.join(sorted(signers))}: "
        + describe_change(old, new),
    )


def startup_version(config: AgentConfig) -> ConsortiumConfig:
    """The consortium version to start with: the file if it is the version accepted last, or an
    approved change of it (or there is none yet: the set-up file); else the version accepted last."""
    on_disk = load_consortium(config.consortium)
    kept = config.data_dir / ACCEPTED_FILE
    if not kept.exists():
        remember(config, on_disk)
        return on_disk
    accepted = replace(load_consortium(kept), path=on_disk.path)
    if digest(accepted) != digest(on_disk):
        try:
            check_change(accepted, on_disk)
        except MpcError as exc:
            log.warning(
                "membership change ignored: %s; running version %d accepted before",
                exc,
                accepted.version,
                extra={"event": "membership_ignored"},
            )
            return accepted
        remember(config, on_disk)
    return on_disk


def _status(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ConsortiumWatcher:
    """Watches ``path`` and applies approved changes to the version ``current()`` returns."""

    def __init__(self, path: Path, current: Callable[[], ConsortiumConfig], apply: Apply) -> None:
        self.path = path
        self.current = current
        self.apply = apply
        self._seen = _status(path)

    async def run(self, interval: float = POLL_SECONDS) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(interval)
            status = _status(self.path)
            if status is not None and status != self._seen:
                self._seen = status
                await self.check()

    async def check(self) -> None:
        """Load the file once and apply it if it is an approved change; log why not otherwise."""
        current = self.current()
        try:
            candidate = load_consortium(self.path)
            if digest(candidate) == digest(current):
                return  # rewritten with the same membership (e.g. one more signature)
            signers = check_change(current, candidate)
        except MpcError as exc:
            log.warning(
                "membership change ignored: %s",
                exc,
                extra={"event": "membership_ignored"},
            )
            return
        log.info(
            "membership change to version %d approved by %s: %s",
            candidate.version,
            ", ".join(sorted(signers)),
            describe_change(current, candidate),
            extra={"event": "membership_changed"},
        )
        await self.apply(current, candidate, signers)
