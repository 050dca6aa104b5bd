"""Debouncer: one run after a burst of changes, none after cancel, driven by a manual clock."""

import pytest

from mpc_jupyter.widgets.timing import Debouncer

from .conftest import ManualClock


def test_a_burst_runs_once_after_the_last_change(clock: ManualClock) -> None:
    calls: list[float] = []
    debouncer = Debouncer(0.3, lambda: calls.append(clock.now), clock)
    for _ in range(5):
        debouncer.trigger()
        clock.advance(0.1)
    assert calls == [] and debouncer.pending  # t = 0.5; the last trigger was at 0.4
    clock.advance(0.15)
    assert calls == []
    clock.advance(0.1)
    assert calls == [pytest.approx(0.75)]
    assert not debouncer.pending
    clock.advance(10)
    assert len(calls) == 1


def test_cancel_drops_the_pending_call(clock: ManualClock) -> None:
    calls: list[int] = []
    debouncer = Debouncer(0.3, lambda: calls.append(1), clock)
    debouncer.trigger()
    debouncer.cancel()
    clock.advance(1)
    assert calls == [] and not debouncer.pending


def test_a_stale_timer_that_fires_anyway_does_nothing(clock: ManualClock) -> None:
    calls: list[int] = []
    debouncer = Debouncer(0.3, lambda: calls.append(1), clock)
    debouncer.trigger()
    stale = clock.calls[0]
    debouncer.trigger()
    stale.callback()  # a threading.Timer may already be running when it is cancelled
    assert calls == [] and debouncer.pending
    clock.advance(0.3)
    assert calls == [1]
