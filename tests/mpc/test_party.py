"""The sans-I/O party machine: message validation, ordering, deadlock detection."""

import numpy as np
import pytest

from site_agent.errors import Deadlock, ProtocolViolation
from site_agent.mpc.party import LocalStep, Party, PartyMachine, Protocol, exchange, local, run_in_memory
from site_agent.mpc.randomness import Randomness


def echo_protocol(index: int, n: int = 4):
    """Each party sends n words to the next and expects n from the previous."""
    nxt, prv = (index + 1) % 3, (index + 2) % 3
    got = yield from exchange(send={nxt: np.full(n, index, dtype=np.uint64)}, expect={prv: n})
    return got[prv]


def test_machine_runs_and_counts() -> None:
    results, stats = run_in_memory(lambda p: echo_protocol(p.index))
    assert [int(r[0]) for r in results] == [2, 0, 1]
    assert all(s.rounds == 1 and s.messages == 1 and s.bytes_sent == 32 for s in stats)


@pytest.mark.parametrize(
    "message, match",
    [
        (np.zeros(3, dtype=np.uint64), "expected 4 words"),
        (np.zeros(4, dtype=np.int64), "not a 1-D uint64"),
        (np.zeros((2, 2), dtype=np.uint64), "not a 1-D uint64"),
        ([0, 0, 0, 0], "not a 1-D uint64"),
    ],
)
def test_malformed_messages_are_violations(message, match: str) -> None:
    m = PartyMachine(1, echo_protocol(1))
    with pytest.raises(ProtocolViolation, match=match):
        m.receive(0, message)


def test_unknown_sender_and_late_messages() -> None:
    m = PartyMachine(1, echo_protocol(1))
    with pytest.raises(ProtocolViolation, match="unknown party"):
        m.receive(1, np.zeros(4, dtype=np.uint64))
    with pytest.raises(ProtocolViolation, match="unknown party"):
        m.receive(7, np.zeros(4, dtype=np.uint64))
    m.receive(0, np.zeros(4, dtype=np.uint64))
    assert m.done
    with pytest.raises(ProtocolViolation, match="after the protocol ended"):
        m.receive(0, np.zeros(4, dtype=np.uint64))


def test_early_messages_queue_in_order() -> None:
    def two_rounds(index: int):
        a = yield from exchange(expect={0: 1})
        b = yield from exchange(expect={0: 1})
        return int(a[0][0]), int(b[0][0])

    m = PartyMachine(1, two_rounds(1))
    m.receive(0, np.array([5], dtype=np.uint64))
    m.receive(0, np.array([6], dtype=np.uint64))
    assert m.done and m.result == (5, 6)


def test_deadlock_is_reported() -> None:
    def waits_forever(index: int):
        yield from exchange(expect={(index + 1) % 3: 1})

    with pytest.raises(Deadlock, match=r"^no party can progress; waiting: \{0: \{1: 1\}, 1: \{2: 1\}, 2: \{0: 1\}\}$"):
        run_in_memory(lambda p: waits_forever(p.index))


def test_protocol_cannot_send_to_itself() -> None:
    def bad(index: int):
        yield from exchange(send={index: np.zeros(1, dtype=np.uint64)})

    with pytest.raises(ProtocolViolation, match="invalid peer"):
        PartyMachine(0, bad(0))


def test_the_tap_sees_every_delivered_message_with_sender_and_receiver() -> None:
    seen: list[tuple[int, int, list[int]]] = []
    run_in_memory(lambda p: echo_protocol(p.index, 2), tap=lambda s, r, m: seen.append((s, r, m.tolist())))
    assert sorted(seen) == [(0, 1, [0, 0]), (1, 2, [1, 1]), (2, 0, [2, 2])]


def test_messages_travel_as_flat_uint64_and_are_counted_per_round() -> None:
    """A protocol may send any integer array-like (here a nested list): the machine sends it
    as one flat uint64 array; a send-only round gives the protocol an empty dict back."""

    def two_rounds(index: int):
        nxt, prv = (index + 1) % 3, (index + 2) % 3
        first = yield from exchange(send={nxt: [[index, 1], [2, 3]]})
        second = yield from exchange(send={nxt: [index]}, expect={prv: 4})
        third = yield from exchange(expect={prv: 1})
        return first, second[prv], third[prv]

    results, stats = run_in_memory(lambda p: two_rounds(p.index))
    assert [(r[0], r[1].tolist(), r[2].tolist()) for r in results] == [
        ({}, [2, 1, 2, 3], [2]),
        ({}, [0, 1, 2, 3], [0]),
        ({}, [1, 1, 2, 3], [1]),
    ]
    assert all((s.rounds, s.messages, s.words_sent) == (3, 2, 5) for s in stats)


def test_party_index_and_seeds() -> None:
    with pytest.raises(ValueError, match=r"^party index must be 0, 1 or 2$"):
        Party(3, Randomness.from_seed(0, 0))
    by_bytes = Randomness.from_seed(0, bytes(16)).stream(0, 4)
    np.testing.assert_array_equal(by_bytes, Randomness.from_seed(0, 0).stream(0, 4))  # 0 is 16 zero bytes


def test_local_step_runs_mid_protocol_and_feeds_its_result() -> None:
    """A protocol may stop for a computation on its member's own data (LocalStep); the machine
    waits for it, keeps messages that arrive meanwhile, and resumes with the result."""

    calls: list[int] = []

    def program(p: Party) -> Protocol[list[int]]:
        first = yield from exchange({p.next: np.array([p.index], dtype=np.uint64)}, {p.prev: 1})

        def compute(i: int = p.index) -> np.ndarray:
            calls.append(i)
            return np.array([10 * i], dtype=np.uint64)

        mine = yield from local(p, compute)
        second = yield from exchange({p.next: mine}, {p.prev: 1})
        return [int(first[p.prev][0]), int(second[p.prev][0])]

    results, stats = run_in_memory(program)
    assert results == [[2, 20], [0, 0], [1, 10]]
    assert sorted(calls) == [0, 1, 2]
    assert [s.rounds for s in stats] == [2, 2, 2]  # a local step is not a round


def test_local_step_result_is_validated() -> None:

    def program(p: Party) -> Protocol[None]:
        yield LocalStep(lambda: np.zeros(1, dtype=np.uint64))

    machine = PartyMachine(0, program(Party(0, Randomness.from_seed(0, 0))))
    assert machine.local_step is not None and machine.waiting_for == {}
    with pytest.raises(ProtocolViolation):
        machine.complete_local(np.zeros((1, 1), dtype=np.uint64))
    machine.complete_local(np.zeros(1, dtype=np.uint64))
    assert machine.done
