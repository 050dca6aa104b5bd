"""QueryProgress: hidden for quick queries, per-site phases, shown after the threshold."""

import pytest
import traitlets

from mpc_jupyter.widgets import QueryProgress
from site_agent.agent.messages import PHASES

from .conftest import ManualClock

SITES = ["north", "central", "south"]


def test_a_quick_query_never_shows(clock: ManualClock) -> None:
    progress = QueryProgress(SITES, threshold=1.0, clock=clock)
    progress.start()
    for site in SITES:
        for i, phase in enumerate(PHASES):
            progress(site, phase, 0.05 * i)
    progress.finish()
    clock.advance(5)
    assert not progress.shown and progress.layout.display == "none"
    assert all(bar.value == len(PHASES) and bar.bar_style == "success" for bar in progress.bars.values())


def test_a_slow_query_shows_after_the_threshold(clock: ManualClock) -> None:
    progress = QueryProgress(SITES, threshold=1.0, clock=clock)
    seen: list[bool] = []
    progress.observe(lambda c: seen.append(c["new"]), "shown")
    progress.start()
    progress("north", "verified", 0.01)
    progress("north", "local", 0.4)
    progress("south", "compiled", 0.5)
    clock.advance(0.9)
    assert not progress.shown
    clock.advance(0.2)
    assert progress.shown and seen == [True] and progress.layout.display == ""
    assert progress.phases == {"north": "local", "south": "compiled"}
    assert progress.bars["north"].value == PHASES.index("local") + 1
    assert progress.labels["north"].value == "local step (0.4 s)"
    assert progress.bars["central"].value == 0
    progress("north", "compiled", 0.6)  # a late, earlier phase does not move a bar back
    assert progress.bars["north"].value == PHASES.index("local") + 1


def test_a_report_past_the_threshold_shows_it(clock: ManualClock) -> None:
    progress = QueryProgress(SITES, threshold=1.0, clock=clock)
    progress.start()
    progress("central", "computed", 1.2)
    assert progress.shown


def test_a_failure_is_kept_on_screen(clock: ManualClock) -> None:
    progress = QueryProgress(SITES, threshold=0.0, clock=clock)

    def failing(progress: QueryProgress) -> None:
        progress("north", "verified", 0.0)
        raise RuntimeError("site south refused: min_cell_size")

    with pytest.raises(RuntimeError, match=r"^site south refused: min_cell_size$"):  # passed on unchanged
        progress.track(failing)
    assert "failed: site south refused" in progress.headline.value
    assert progress.bars["north"].bar_style == "danger" and not progress.running


def test_track_returns_the_result_and_unknown_reports_are_ignored(clock: ManualClock) -> None:
    progress = QueryProgress(SITES, clock=clock)

    def run(text: str, progress: QueryProgress) -> str:
        progress("elsewhere", "verified", 0.0)
        progress("north", "teleported", 0.0)
        return text.upper()

    assert progress.track(run, "select") == "SELECT"
    assert progress.phases == {} and "done in" in progress.headline.value


def test_validation(clock: ManualClock) -> None:
    progress = QueryProgress(SITES, clock=clock)
    with pytest.raises(traitlets.TraitError):
        progress.threshold = -1
    with pytest.raises(traitlets.TraitError):
        progress.phases = {"north": "teleported"}
