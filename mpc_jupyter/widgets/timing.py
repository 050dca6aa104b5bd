"""Delayed calls behind a small interface, so widgets can debounce and tests can drive time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Handle(Protocol):
    """A scheduled call that can still be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Schedules ``callback`` to run once after ``delay`` seconds."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle: ...


class ThreadClock:
    """The real clock: a daemon ``threading.Timer`` per call (the kernel's main thread stays free)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        timer = threading.Timer(delay, callback)
        timer.daemon = True
        timer.start()
        return timer


class Debouncer:
    """Runs ``callback`` once, ``delay`` seconds after the last of a burst of ``trigger()`` calls."""

    def __init__(self, delay: float, callback: Callable[[], None], clock: Clock) -> None:
        self.delay, self.callback, self.clock = delay, callback, clock
        self._pending: Handle | None = None
        self._generation = 0  # a call scheduled before the latest trigger() or cancel() does nothing
        self._lock = threading.Lock()

    def trigger(self) -> None:
        """(Re)start the wait; an earlier pending call is cancelled."""
        with self._lock:
            self._drop()
            generation = self._generation
            self._pending = self.clock.call_later(self.delay, lambda: self._fire(generation))

    def cancel(self) -> None:
        """Drop the pending call, if any."""
        with self._lock:
            self._drop()

    @property
    def pending(self) -> bool:
        """Whether a call is scheduled and has not run yet."""
        return self._pending is not None

    def _drop(self) -> None:
        self._generation += 1
        if self._pending is not None:
            self._pending.cancel()
        self._pending = None

    def _fire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            self._pending = None
        self.callback()
