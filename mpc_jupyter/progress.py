"""A one-line progress display for queries that take longer than a threshold.

The client calls :class:`ProgressLine` from its background thread with (site, phase,
seconds); the line appears only once a query has run ``threshold`` seconds, so quick
queries print nothing, and it is updated in place (one display id) as sites move through
the phases of ``site_agent.agent.messages.PHASES``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from IPython.display import display


class ProgressLine:
    """Shows ``phase`` per site, in place, after ``threshold`` seconds."""

    def __init__(self, threshold: float, sites: Sequence[str]) -> None:
        self.threshold = threshold
        self.phases: dict[str, str] = dict.fromkeys(sites, "")
        """Each site's last phase ("" before its first report)."""
        self._handle: Any = None
        self._lock = threading.Lock()

    def __call__(self, site: str, phase: str, seconds: float) -> None:
        with self._lock:
            self.phases[site] = phase
            if seconds < self.threshold:
                return
            text = f"mpc {seconds:5.1f} s  " + "  ".join(f"{s}: {p or '-'}" for s, p in self.phases.items())
            if self._handle is None:
                self._handle = display({"text/plain": text}, raw=True, display_id=True)  # type: ignore[no-untyped-call]
            else:
                self._handle.update({"text/plain": text}, raw=True)

    def done(self, seconds: float) -> None:
        """Replace the line by the total time, if it was shown."""
        with self._lock:
            if self._handle is not None:
                self._handle.update({"text/plain": f"mpc answered in {seconds:.1f} s"}, raw=True)
