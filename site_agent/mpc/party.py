"""The sans-I/O party: protocols as generators, a state machine that feeds them messages.

A protocol is a generator that yields :class:`Round` requests (what to send to whom,
how many words to expect from whom) and receives the expected messages back. It never
touches sockets, threads or clocks. :class:`PartyMachine` wraps one party's protocol the
way the websockets library wraps a connection: :meth:`PartyMachine.receive` takes an
incoming message, :meth:`PartyMachine.outgoing` hands out what to send. Any I/O style is a
thin adapter on top: :func:`run_in_memory` runs all three parties in one process (tests),
``site_agent.net`` runs one party over TLS websockets.

Every message is one 1-D ``uint64`` array. The machine checks each against what the
protocol expects (dtype, shape, sender) and raises :class:`ProtocolViolation` otherwise.

A protocol may also yield a :class:`LocalStep`: a computation on this member's own data in
the middle of a session (an iterative model's gradient at public coefficients). The machine
stops there until its driver runs it and hands back the result
(:meth:`PartyMachine.complete_local`): :func:`run_in_memory` calls it directly, the network
adapter in a worker thread, so the event loop never waits on the site's database.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ..errors import Deadlock, ProtocolViolation
from .randomness import Randomness
from .ring import U64

T = TypeVar("T")

PARTIES = (0, 1, 2)


@dataclass(frozen=True)
class Round:
    """One communication round from one party's point of view.

    ``send`` maps a peer to the 1-D uint64 array sent to it; ``expect`` maps a peer to the
    number of words to receive from it. Either may be empty.
    """

    send: Mapping[int, U64] = field(default_factory=dict)
    expect: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalStep:
    """A request to compute on this member's own data, in the clear, mid-session.

    ``run`` takes no argument (its public inputs are bound) and returns a 1-D uint64 vector;
    the protocol receives it as the message from itself (``got[p.index]``, see :func:`local`).
    """

    run: Callable[[], U64]


Protocol = Generator[Round | LocalStep, dict[int, U64], T]


@dataclass
class Stats:
    """What a party has done: rounds, messages and words sent."""

    rounds: int = 0
    messages: int = 0
    words_sent: int = 0

    @property
    def bytes_sent(self) -> int:
        return 8 * self.words_sent


class Party:
    """The context a protocol runs in: which party this is and its randomness."""

    def __init__(self, index: int, rand: Randomness) -> None:
        if index not in PARTIES:
            raise ValueError("party index must be 0, 1 or 2")
        self.index = index
        self.rand = rand

    @property
    def next(self) -> int:
        return (self.index + 1) % 3

    @property
    def prev(self) -> int:
        return (self.index + 2) % 3


def exchange(
    send: Mapping[int, U64] | None = None, expect: Mapping[int, int] | None = None
) -> Protocol[dict[int, U64]]:
    """Yield one round and return the received messages: ``got = yield from exchange(...)``."""
    return (yield Round(send or {}, expect or {}))


def local(p: Party, run: Callable[[], U64]) -> Protocol[U64]:
    """Yield a :class:`LocalStep` and return its result: ``v = yield from local(p, fn)``."""
    got = yield LocalStep(run)
    return got[p.index]


class PartyMachine(Generic[T]):
    """One party's protocol as a state machine fed with messages (no I/O)."""

    def __init__(self, index: int, protocol: Protocol[T]) -> None:
        self.index = index
        self._protocol = protocol
        self._inbox: dict[int, deque[U64]] = {p: deque() for p in PARTIES if p != index}
        self._outbox: list[tuple[int, U64]] = []
        self._expect: Mapping[int, int] = {}
        self._local: LocalStep | None = None
        self._done = False
        self._result: Any = None
        self.stats = Stats()
        self._advance(None)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def result(self) -> T:
        if not self._done:
            raise RuntimeError("protocol has not finished")
        return self._result  # type: ignore[no-any-return]

    def receive(self, sender: int, message: U64) -> None:
        """Feed one incoming message from ``sender``; runs the protocol as far as it can."""
        if sender not in self._inbox:
            raise ProtocolViolation(f"party {self.index}: message from unknown party {sender!r}")
        if not isinstance(message, np.ndarray) or message.dtype != np.uint64 or message.ndim != 1:
            raise ProtocolViolation(f"party {self.index}: message from party {sender} is not a 1-D uint64 array")
        if self._done:
            raise ProtocolViolation(f"party {self.index}: message from party {sender} after the protocol ended")
        self._inbox[sender].append(message)
        self._try_resume()

    @property
    def local_step(self) -> LocalStep | None:
        """The local computation the protocol waits for, if any (see :class:`LocalStep`)."""
        return self._local

    def complete_local(self, result: U64) -> None:
        """Hand the result of :attr:`local_step` to the protocol and run it on."""
        if self._local is None:
            raise ProtocolViolation(f"party {self.index}: no local step is pending")
        if not isinstance(result, np.ndarray) or result.dtype != np.uint64 or result.ndim != 1:
            raise ProtocolViolation(f"party {self.index}: a local step returned no 1-D uint64 array")
        self._local = None
        self._advance({self.index: result})
        self._try_resume()

    def outgoing(self) -> list[tuple[int, U64]]:
        """Messages to send now, as (peer, array); the caller sends them in order."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def waiting_for(self) -> Mapping[int, int]:
        """Peers whose message for the current round has not arrived yet, with word counts
        (empty when done). A peer that already delivered is not waited for: a driver must not
        read its next frame (say, an abort notice) ahead of another peer's message this round,
        nor blame it when the round stalls."""
        if self._done or self._local is not None:
            return {}
        return {p: n for p, n in self._expect.items() if not self._inbox[p]}

    def _try_resume(self) -> None:
        while not self._done and self._local is None and all(self._inbox[p] for p in self._expect):
            got: dict[int, U64] = {}
            for peer, n in self._expect.items():
                msg = self._inbox[peer].popleft()
                if msg.shape != (n,):
                    raise ProtocolViolation(
                        f"party {self.index}: expected {n} words from party {peer}, got {msg.shape[0]}"
                    )
                got[peer] = msg
            self._advance(got)

    def _advance(self, got: dict[int, U64] | None) -> None:
        try:
            rnd = self._protocol.send(got)  # type: ignore[arg-type]
        except StopIteration as stop:
            self._done = True
            self._result = stop.value
            self._expect = {}
            return
        if isinstance(rnd, LocalStep):
            self._local, self._expect = rnd, {}
            return
        for peer, arr in rnd.send.items():
            if peer == self.index or peer not in PARTIES:
                raise ProtocolViolation(f"party {self.index}: protocol sends to invalid peer {peer}")
            arr = np.ascontiguousarray(arr, dtype=np.uint64).reshape(-1)
            self._outbox.append((peer, arr))
            self.stats.messages += 1
            self.stats.words_sent += arr.size
        self.stats.rounds += 1
        self._expect = rnd.expect
        if not self._expect:
            self._advance({})


Tap = Callable[[int, int, U64], None]


def run_in_memory(
    program: Callable[[Party], Protocol[T]],
    seed: int | bytes = 0,
    session: bytes = b"",
    tap: Tap | None = None,
    randomness: type[Randomness] = Randomness,
) -> tuple[list[T], list[Stats]]:
    """Run ``program`` for all three parties in this process and return their results.

    Messages are delivered in order between the three :class:`PartyMachine` objects;
    arrays are passed by reference (protocols never mutate what they receive). ``tap``,
    if given, sees every delivered message as (sender, receiver, words): this is how the
    tests and the teaching view show what one member actually receives. ``randomness`` is
    the class whose ``from_seed`` makes each party's keys: the view tests pass a subclass
    that also records every word a member draws (its random tape).
    """
    machines = [PartyMachine(i, program(Party(i, randomness.from_seed(i, seed, session)))) for i in PARTIES]
    return _pump(machines, tap), [m.stats for m in machines]


def _pump(machines: Sequence[PartyMachine[T]], tap: Tap | None) -> list[T]:
    while True:
        moved = False
        for m in machines:
            step = m.local_step
            if step is not None:
                m.complete_local(step.run())
                moved = True
            for peer, msg in m.outgoing():
                if tap is not None:
                    tap(m.index, peer, msg)
                machines[peer].receive(m.index, msg)
                moved = True
        if all(m.done for m in machines):
            return [m.result for m in machines]
        if not moved:
            waits = {m.index: dict(m.waiting_for) for m in machines if not m.done}
            raise Deadlock(f"no party can progress; waiting: {waits}")
