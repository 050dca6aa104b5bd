"""Live progress of a running query, per site and phase, shown only when the query takes a while.

The widget is the client's progress callback: ``consortium.query(text, progress=widget)``. Each
site reports the phases of ``site_agent.agent.messages.PHASES`` as it reaches them; one
``IntProgress`` bar per site counts them. The widget stays hidden until the query has run for
``threshold`` seconds (a quick query never flickers a progress bar), checked by a timer and by
each report.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from site_agent.agent.messages import PHASES

from .timing import Clock, Handle, ThreadClock

PHASE_LABELS: dict[str, str] = {
    "verified": "policy check",
    "compiled": "plan compiled",
    "agreed": "plans agreed",
    "local": "local step",
    "shared": "sharing",
    "computed": "MPC rounds",
    "revealed": "reveal",
}
"""What each phase means to an analyst (the display's words)."""


class QueryProgress(widgets.VBox):  # type: ignore[misc]
    """One progress bar per site; call it as ``(site, phase, seconds)`` while the query runs."""

    sites = traitlets.List(trait=traitlets.Unicode(), help="committee members, in display order")
    phases = traitlets.Dict(help="site -> the furthest phase it reported")
    threshold = traitlets.Float(1.0, help="seconds a query runs before the display appears")
    shown = traitlets.Bool(False, help="whether the display is visible")
    running = traitlets.Bool(False)
    elapsed = traitlets.Float(0.0, help="seconds since start(), updated by reports and finish()")

    def __init__(self, sites: Sequence[str], threshold: float = 1.0, clock: Clock | None = None) -> None:
        self.clock = clock or ThreadClock()
        self._started = 0.0
        self._timer: Handle | None = None
        self.bars: dict[str, widgets.IntProgress] = {}
        self.labels: dict[str, widgets.HTML] = {}
        self.headline = widgets.HTML()
        super().__init__(layout=widgets.Layout(display="none"))
        self.threshold = threshold
        self.sites = list(sites)

    @traitlets.validate("threshold")
    def _non_negative(self, proposal: dict[str, Any]) -> float:
        if proposal["value"] < 0:
            raise traitlets.TraitError("threshold must be >= 0 seconds")
        return float(proposal["value"])

    @traitlets.validate("phases")
    def _known_phases(self, proposal: dict[str, Any]) -> dict[str, str]:
        for site, phase in proposal["value"].items():
            if site not in self.sites or phase not in PHASES:
                raise traitlets.TraitError(f"unknown site or phase: {site!r}, {phase!r}")
        return dict(proposal["value"])

    @traitlets.observe("sites")
    def _build(self, change: dict[str, Any]) -> None:
        self.bars = {s: widgets.IntProgress(value=0, min=0, max=len(PHASES), description=s) for s in self.sites}
        self.labels = {s: widgets.HTML("waiting") for s in self.sites}
        rows = [widgets.HBox([self.bars[s], self.labels[s]]) for s in self.sites]
        self.children = [self.headline, *rows]

    @traitlets.observe("shown")
    def _visibility(self, change: dict[str, Any]) -> None:
        self.layout.display = "" if change["new"] else "none"

    # --- the query's life ----------------------------------------------------------------------

    def start(self) -> None:
        """A query starts now: reset the bars and arm the threshold timer."""
        self._started = time.monotonic()
        self.phases, self.shown, self.running, self.elapsed = {}, False, True, 0.0
        for site in self.sites:
            self.bars[site].value, self.bars[site].bar_style = 0, ""
            self.labels[site].value = "waiting"
        self.headline.value = "running…"
        self._timer = self.clock.call_later(self.threshold, self._threshold_reached)

    def __call__(self, site: str, phase: str, seconds: float) -> None:
        """The progress callback: ``site`` reached ``phase`` ``seconds`` after the query started."""
        if site not in self.sites or phase not in PHASES:
            return
        current = self.phases.get(site)
        if current is None or PHASES.index(phase) >= PHASES.index(current):
            self.phases = {**self.phases, site: phase}
            self.bars[site].value = PHASES.index(phase) + 1
            self.labels[site].value = html.escape(f"{PHASE_LABELS[phase]} ({seconds:.1f} s)")
        self.elapsed = max(self.elapsed, seconds)
        if self.running and self.elapsed >= self.threshold:
            self.shown = True

    def finish(self, error: str = "") -> None:
        """The query ended (``error`` says how it failed); a shown display keeps the summary."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.running = False
        self.elapsed = time.monotonic() - self._started
        for site in self.sites:
            if not error:
                self.bars[site].value = len(PHASES)
            self.bars[site].bar_style = "danger" if error else "success"
        self.headline.value = html.escape(f"failed: {error}" if error else f"done in {self.elapsed:.1f} s")

    def _threshold_reached(self) -> None:
        if self.running:
            self.shown = True

    def track(self, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``run(*args, progress=self, **kwargs)`` between start() and finish(); its result."""
        self.start()
        try:
            result = run(*args, progress=self, **kwargs)
        except Exception as exc:
            self.finish(error=str(exc))
            raise
        self.finish()
        return result
