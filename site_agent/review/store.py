"""Results held for output review at one committee member: its own shares, on its own disk.

When a site's policy says ``[privacy] review = "dpo"`` (or ``"failing"`` and the release rule
withheld a cell), every member keeps the computed result as its pair of shares instead of
sending it to the analyst (``site_agent.agent.reviews``). No
member can open it alone: it holds two of the three components, like during the computation.

On disk, in the folder ``review/`` beside the audit log:

* ``ID.json``: the public facts (analyst, query, plan digest, result layout and suppression
  flags, outputs' names and shapes, each cell's size as a band, the reviewing sites, the
  deadline and the retention, each site's decision, the receipt of the release once sent);
* ``ID.npy``: this member's shares (``numpy.save`` without pickle), deleted when the analyst
  confirms receipt, or when the result is denied or expires (before approval: the deadline;
  after: the retention, ``keep_hours`` after the last approval);
* ``.lock``: an exclusive ``flock`` around every read-modify-write, because two processes
  change the folder: the agent, and ``mpc-site-agent review approve|deny`` run by the DPO.

The DPO's command edits this folder under the lock rather than talking to the agent: the
decision is durable the moment the command returns, the command needs no network credentials
and works while the agent is restarting, and the agent (which alone may append to the audit
log, which it holds locked) records the decision and tells the other members within a second
(``ReviewDesk.poll``).

``ID`` is the query id (the envelope's digest), the same at every member, so a decision names
the same result everywhere; commands accept any unique prefix of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from site_agent.errors import ReviewError

if TYPE_CHECKING:
    import numpy as np

PENDING, APPROVED, DENIED, EXPIRED, RELEASED = "pending", "approved", "denied", "expired", "released"
STATES = (PENDING, APPROVED, DENIED, EXPIRED, RELEASED)
DECISIONS = (APPROVED, DENIED)
DEFAULT_KEEP_HOURS = 168
"""``[privacy] review_keep_hours``'s default: an approved result waits a week for the analyst."""


@dataclass
class Decision:
    """One reviewing site's decision; ``recorded`` once this member's agent wrote its audit entry
    (and, for its own site's decision, told the other members)."""

    decision: str
    time: float
    by: str
    recorded: bool = False


@dataclass
class Held:
    """A result held for review at this member (public facts only; the shares are in ``ID.npy``)."""

    id: str
    analyst: str
    query: str
    plan_digest: str
    kind: str
    meta: dict[str, Any]
    """The public result metadata the analyst receives with the shares (plan, flags, layout)."""
    reveals: list[dict[str, Any]]
    """What would be released: each output's name and shape."""
    sites: list[str]
    """The sites whose data-protection officer must approve."""
    created: float
    deadline: float
    bands: list[str] = field(default_factory=list)
    """Each base cell's size as a band ("10-19"), opened to the committee for the DPOs."""
    withheld: list[int] | None = None
    """Held because the release rule withheld cells: its own flags (``meta["flags"]`` are then
    those approval leaves), for the DPOs; never sent to the analyst."""
    keep_hours: int = DEFAULT_KEEP_HOURS
    """Hours an approved result stays fetchable after the last approval (the plan's retention)."""
    decisions: dict[str, Decision] = field(default_factory=dict)
    state: str = PENDING
    receipt: dict[str, Any] | None = None
    """The receipt of this member's ``released`` audit entry, once its shares were first sent: a
    fetch repeated until the analyst confirms receipt sends the same shares with the same receipt."""
    closed_recorded: bool = False
    """Whether this member's audit entry for the end (approved, released, denied, expired) is written."""

    @property
    def waiting(self) -> list[str]:
        """Reviewing sites that have not decided yet."""
        return [s for s in self.sites if s not in self.decisions]

    @property
    def denied_by(self) -> list[str]:
        return [s for s, d in self.decisions.items() if d.decision == DENIED]

    @property
    def keep_until(self) -> float | None:
        """When an approved result is discarded if the analyst has not confirmed receipt: the last
        approval plus ``keep_hours``. Decision times travel with the decisions, so every member
        computes the same instant. None before every reviewing site approved."""
        if self.waiting or self.denied_by:
            return None
        return max(d.time for d in self.decisions.values()) + self.keep_hours * 3600.0

    @property
    def closes_at(self) -> float | None:
        """When this result expires if nothing happens first: the deadline while pending, the
        retention once approved; None once closed."""
        return {PENDING: self.deadline, APPROVED: self.keep_until}.get(self.state)

    def decide(self, site: str, decision: str, by: str, now: float, recorded: bool = False) -> bool:
        """Record ``site``'s decision; returns False if it was already recorded alike (a repeated
        message), raises ``ReviewError`` for a decision that cannot be taken."""
        if decision not in DECISIONS:
            raise ReviewError(f"a decision is {' or '.join(DECISIONS)}, not {decision!r}")
        if site not in self.sites:
            raise ReviewError(f"site {site} is not asked to review {self.id[:16]} (reviewers: {', '.join(self.sites)})")
        previous = self.decisions.get(site)
        if previous is not None:
            if previous.decision == decision:
                return False
            raise ReviewError(f"site {site} already {previous.decision} {self.id[:16]}")
        if self.state != PENDING:
            raise ReviewError(f"{self.id[:16]} is {self.state}; it can no longer be decided")
        self.decisions[site] = Decision(decision, now, by, recorded)
        if decision == DENIED:
            self.state = DENIED
        elif not self.waiting:
            self.state = APPROVED
        return True

    def expire(self, now: float) -> bool:
        """Mark a result expired once its deadline (pending) or its retention (approved, receipt
        not confirmed) passed; True if it just did."""
        closes = self.closes_at
        if closes is not None and now >= closes:
            self.state = EXPIRED
            return True
        return False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Held:
        decisions = {site: Decision(**d) for site, d in data.pop("decisions").items()}
        held = cls(**data, decisions=decisions)
        if held.state not in STATES:
            raise ReviewError(f"{held.id[:16]}: unknown state {held.state!r}")
        return held


class ReviewStore:
    """The review folder of one member (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's exclusive lock (agent and DPO command alike)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _json(self, held_id: str) -> Path:
        return self.folder / f"{held_id}.json"

    def _npy(self, held_id: str) -> Path:
        return self.folder / f"{held_id}.npy"

    def _write(self, held: Held) -> None:
        tmp = self.folder / f".{held.id}.json.tmp"
        tmp.write_text(json.dumps(held.to_json(), sort_keys=True))
        os.replace(tmp, self._json(held.id))

    def _read(self, held_id: str) -> Held:
        return Held.from_json(json.loads(self._json(held_id).read_text()))

    def hold(self, held: Held, shares: np.ndarray) -> None:
        """Keep a new result: the shares first, then the facts that point to them."""
        import numpy as np  # here, so that the DPO's commands start without numpy

        with self.locked():
            tmp = self.folder / f".{held.id}.npy.tmp"
            with tmp.open("wb") as f:
                np.save(f, np.ascontiguousarray(shares, dtype=np.uint64), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._npy(held.id))
            self._write(held)

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.exists() else []

    def all(self) -> list[Held]:
        """Every result this member holds or held, oldest first."""
        with self.locked():
            return sorted((self._read(i) for i in self.ids()), key=lambda h: h.created)

    def find(self, prefix: str) -> str:
        """The full id of the result whose id starts with ``prefix`` (unique)."""
        matches = [i for i in self.ids() if i.startswith(prefix.lower())] if prefix else []
        if len(matches) != 1:
            raise ReviewError(
                f"no held result has an id starting with {prefix!r}"
                if not matches
                else f"{prefix!r} matches {len(matches)} results; give more of the id"
            )
        return matches[0]

    def get(self, held_id: str) -> Held | None:
        with self.locked():
            return self._read(held_id) if self._json(held_id).exists() else None

    def update(self, held_id: str, change: Callable[[Held], bool]) -> Held | None:
        """Apply ``change`` under the lock and save if it returns True; drops the shares of a
        result that is no longer pending or approved. None if this member holds no such result."""
        with self.locked():
            if not self._json(held_id).exists():
                return None
            held = self._read(held_id)
            if change(held):
                self._write(held)
            if held.state not in (PENDING, APPROVED):
                self._npy(held_id).unlink(missing_ok=True)
            return held

    def prune(self, before: float) -> list[str]:
        """Forget closed results (released, denied, expired; their audit entries written) whose
        deadline is older than ``before``: the audit log keeps their story. Returns their ids."""
        gone = []
        with self.locked():
            for held_id in self.ids():
                held = self._read(held_id)
                if held.state not in (PENDING, APPROVED) and held.closed_recorded and held.deadline < before:
                    self._npy(held_id).unlink(missing_ok=True)
                    self._json(held_id).unlink()
                    gone.append(held_id)
        return gone

    def shares(self, held_id: str) -> np.ndarray:
        """This member's shares of a held result (``ReviewError`` once they are gone)."""
        import numpy as np

        with self.locked():
            try:
                with self._npy(held_id).open("rb") as f:
                    array: np.ndarray = np.load(f, allow_pickle=False)
            except FileNotFoundError:
                raise ReviewError(f"{held_id[:16]}: the shares are no longer held") from None
        return array
