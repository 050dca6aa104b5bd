"""ConsortiumStatus without a browser: refresh through the button, rendering, validation."""

import pytest
import traitlets

from mpc_jupyter.client import SiteStatus
from mpc_jupyter.widgets import ConsortiumStatus

DIGEST = "ab12" * 16


def _answers(calls: list[int]) -> list[SiteStatus]:
    calls.append(1)
    return [
        SiteStatus("north", True, 12.3, DIGEST, {"patients": {"rows": 2000, "columns": ["age"]}}),
        SiteStatus("central", True, 8.0, DIGEST, {"admissions": {"rows": 2500, "columns": ["ward"]}}),
        SiteStatus("south", False, error="site south at 127.0.0.1:1 cannot be reached"),
    ]


def test_button_refreshes_and_renders() -> None:
    calls: list[int] = []
    widget = ConsortiumStatus(lambda: _answers(calls))
    assert len(calls) == 1 and [s.site for s in widget.statuses] == ["north", "central", "south"]
    changes: list[object] = []
    widget.observe(lambda c: changes.append(c["name"]), "refreshed_at")
    widget.button.click()
    assert len(calls) == 2 and changes == ["refreshed_at"]
    assert not widget.all_online
    assert "2 of 3 sites online" in widget.summary.value
    table = widget.table.value
    assert "12 ms" in table and DIGEST[:12] in table and f'title="{DIGEST}"' in table
    assert "patients" in table and "rows" not in table and "cannot be reached" in table  # no site subtotals


def test_a_failing_refresh_is_shown_not_raised() -> None:
    def broken() -> list[SiteStatus]:
        raise OSError("no route")

    widget = ConsortiumStatus(broken)
    assert widget.error == "OSError: no route" and "no route" in widget.summary.value
    assert not widget.button.disabled


def test_statuses_are_validated() -> None:
    widget = ConsortiumStatus(lambda: [], refresh=False)
    with pytest.raises(traitlets.TraitError):
        widget.statuses = [SiteStatus("north", True), SiteStatus("north", False)]
    with pytest.raises(traitlets.TraitError):
        widget.statuses = ["north"]
