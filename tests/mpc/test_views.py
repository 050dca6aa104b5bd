"""What one member sees does not depend on the secrets: the semi-honest definition, as statistics.

A protocol is private against one member when that member's *view* (its inputs, its random
tape and every message it receives; Goldreich, Foundations of Cryptography vol. 2, 7.2.2)
has the same distribution whatever the secrets, and can be generated from what the member
is meant to know alone (a simulator). For each protocol we run it ``runs`` times with fresh
PRF keys and fresh sharings per run and record, per member, a view as one row of words:

* its two components of every input (from :func:`deal`),
* every word it draws from its two PRF keys (its random tape, through :class:`TapeRecorder`),
* every word it receives, in order (the ``tap`` of :func:`run_in_memory`).

Three checks then compare two samples of views (two different secret inputs; or the real
view and the simulated one):

1. **Per word position**: a two-sample chi-square test on the low and on the high nibble of
   every word position, Bonferroni-corrected over all positions.
2. **Joint, linear**: bit 0 and bit 63 of every word, and the parity of a fixed random subset
   of its bits, as a runs x columns matrix over GF(2) with a column of ones: it must have
   full column rank. Any relation sum_j c_j w_j = constant (mod 2^64) between the words of a
   view gives a relation between their bits 0 (divide out the largest power of 2 shared by
   the c_j), so a member that can rebuild a secret linearly from what it sees (a leaked
   share: x_0 + x_1 + x_2 = x; a reused mask: w_a - w_b = x_a - x_b; a bit of the secret)
   always fails, whatever the input; for honest views (uniform words) the rank is full
   except with probability below 2^(columns - runs) < 2^-64.
3. **Simulator**: the view rebuilt from the member's own input components and random tape,
   with every received message replaced by fresh uniform words (what every protocol here
   is meant to send: words masked by a key the receiver lacks), compared with the real one
   by checks 1 and 2. Opening protocols, whose output is meant to be seen, get the exact
   simulator instead: the message received is the output minus the member's components.

The planted leaks at the end (test-only protocols: a member sends a share it should not,
a secret under a mask reused across elements, the low bit of a secret) show that these
checks fail when a protocol leaks. Check 1 alone cannot see the first two by construction (a
single share, or a single masked word, is uniform): that is what check 2 is for.

Sampling is seeded (fixed seeds, fresh keys per run), so the honest protocols pass
deterministically and a leak fails with a statistic far beyond the threshold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from site_agent.mpc import arithmetic as ar
from site_agent.mpc import boolean as bl
from site_agent.mpc.fixed import FixedPoint
from site_agent.mpc.normalize import WORD_ROW, inject
from site_agent.mpc.party import Party, exchange, run_in_memory
from site_agent.mpc.randomness import Randomness
from site_agent.mpc.ring import U64
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import deal

FP = FixedPoint()
ALPHA = 1e-6  # family-wise false-alarm rate of check 1 (per protocol and member)
MIN_RUNS = 400  # enough for the nibble chi-squares (25 expected per bin)
RANK_MARGIN = 64  # runs beyond the number of GF(2) columns: a false alarm below 2^-64

# Two secret inputs that differ everywhere it matters: signs, magnitudes, low bits, the
# outcome of lt and of eq. Values stay inside the truncation's range |x| < 2^62.
INPUT_A = (np.zeros(2, dtype=np.uint64), np.zeros(2, dtype=np.uint64))
INPUT_B = (
    FP.encode(np.array([-30000.5, 2.75])) | np.uint64(1),
    FP.encode(np.array([3.0, 2.75])) | np.uint64(1),
)

Program = Callable[[Party, AShare, AShare, U64], Generator[object, object, object]]


class TapeRecorder(Randomness):
    """A member's PRF keys that keep a copy of every word drawn: its random tape."""

    def __init__(self, index: int, keys: dict[int, bytes]) -> None:
        super().__init__(index, keys)
        self.tape: list[U64] = []

    def stream(self, j: int, n: int) -> U64:
        words = super().stream(j, n)
        self.tape.append(words.copy())
        return words


@dataclass(frozen=True)
class Views:
    """One member's views over many runs: one row per run, columns split in three parts."""

    inputs: U64  # its components of the inputs
    tape: U64  # words drawn from its PRF keys
    received: U64  # words received, in order

    @property
    def words(self) -> U64:
        return np.concatenate([self.inputs, self.tape, self.received], axis=1)

    def simulated(self, rng: np.random.Generator) -> Views:
        """The simulator: own inputs and tape, fresh uniform words for every message."""
        fresh = rng.integers(0, 2**64, size=self.received.shape, dtype=np.uint64)
        return Views(self.inputs, self.tape, fresh)


def collect(program: Program, secret: tuple[U64, U64], runs: int, base_seed: int) -> list[Views]:
    """The views of members 0, 1 and 2 over ``runs`` runs with fresh keys and sharings."""
    x, y = secret
    rows: list[list[tuple[U64, U64, U64]]] = [[], [], []]
    for run in range(runs):
        rng = np.random.default_rng([base_seed, run])
        xs, ys = deal(x, rng), deal(y, rng)
        parties: dict[int, Party] = {}
        got: list[list[U64]] = [[], [], []]

        def start(p: Party, xs: list[AShare] = xs, ys: list[AShare] = ys, parties: dict[int, Party] = parties):
            parties[p.index] = p
            return program(p, xs[p.index], ys[p.index], x)

        run_in_memory(
            start,
            seed=(base_seed << 32) + run,
            tap=lambda sender, receiver, msg, got=got: got[receiver].append(msg),
            randomness=TapeRecorder,
        )
        for m in range(3):
            tape = parties[m].rand.tape  # type: ignore[attr-defined]
            rows[m].append(
                (
                    np.concatenate([xs[m].v.ravel(), ys[m].v.ravel()]),
                    np.concatenate([np.zeros(0, dtype=np.uint64), *tape]),
                    np.concatenate([np.zeros(0, dtype=np.uint64), *got[m]]),
                )
            )
    return [Views(*(np.stack([r[k] for r in rows[m]]) for k in range(3))) for m in range(3)]


# ----------------------------------------------------------------------------- the checks


def _nibbles(words: U64) -> list[np.ndarray]:
    return [(words & np.uint64(15)).astype(np.int64), (words >> np.uint64(60)).astype(np.int64)]


def position_p_value(a: U64, b: U64) -> float:
    """Check 1: the smallest Bonferroni-adjusted p-value of the per-position chi-squares."""
    assert a.shape[1] == b.shape[1], "views of one protocol have one width"
    if a.shape[1] == 0:
        return 1.0
    pvalues = []
    for na, nb in zip(_nibbles(a), _nibbles(b), strict=True):
        offsets = 16 * np.arange(a.shape[1])
        ca = np.bincount((na + offsets).ravel(), minlength=16 * a.shape[1]).reshape(-1, 16)
        cb = np.bincount((nb + offsets).ravel(), minlength=16 * b.shape[1]).reshape(-1, 16)
        col = ca + cb
        used = col > 0
        ea = col * (a.shape[0] / (a.shape[0] + b.shape[0]))
        eb = col - ea
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(used, (ca - ea) ** 2 / ea + (cb - eb) ** 2 / eb, 0.0)
        df = np.maximum(used.sum(axis=1) - 1, 1)
        pvalues.append(stats.chi2.sf(terms.sum(axis=1), df))
    return float(min(1.0, np.min(np.concatenate(pvalues)) * 2 * a.shape[1]))


def _gf2_columns(words: U64) -> np.ndarray:
    """Bit 0, bit 63 and a fixed random parity of every word, plus a column of ones."""
    masks = np.random.default_rng(99).integers(0, 2**64, size=words.shape[1], dtype=np.uint64)
    low = words & np.uint64(1)
    high = words >> np.uint64(63)
    folded = words & masks
    for s in (32, 16, 8, 4, 2, 1):
        folded ^= folded >> np.uint64(s)
    parity = folded & np.uint64(1)
    ones = np.ones((words.shape[0], 1), dtype=np.uint64)
    return np.concatenate([low, high, parity, ones], axis=1).astype(bool)


def gf2_rank(bits: np.ndarray) -> int:
    """Rank over GF(2) of a boolean matrix (Gaussian elimination on bit-packed rows)."""
    m = np.packbits(bits, axis=1)
    rank = 0
    for c in range(bits.shape[1]):
        byte, shift = c >> 3, np.uint8(7 - (c & 7))
        hits = np.flatnonzero((m[rank:, byte] >> shift) & 1)
        if hits.size == 0:
            continue
        pivot = rank + hits[0]
        m[[rank, pivot]] = m[[pivot, rank]]
        below = rank + 1 + np.flatnonzero((m[rank + 1 :, byte] >> shift) & 1)
        m[below] ^= m[rank]
        rank += 1
        if rank == m.shape[0]:
            break
    return rank


def affine_relations(words: U64) -> int:
    """Check 2: how many independent affine GF(2) relations the view's bit columns obey."""
    cols = _gf2_columns(words)
    assert cols.shape[0] >= cols.shape[1] + RANK_MARGIN, "too few runs for the rank test"
    return cols.shape[1] - gf2_rank(cols)


def runs_for(width: int) -> int:
    return max(MIN_RUNS, 3 * width + 1 + RANK_MARGIN)


# ----------------------------------------------------------------------------- protocols


def _sharing(p: Party, x: AShare, y: AShare, plain: U64):
    """Input sites deal; the member only holds its components (no round)."""
    return x
    yield


def _input(p: Party, x: AShare, y: AShare, plain: U64):
    return (yield from ar.input_from(p, 0, plain if p.index == 0 else None, plain.shape))


def _open_to_2(p: Party, x: AShare, y: AShare, plain: U64):
    return (yield from ar.open_to(p, x, 2))


def _b2a(p: Party, x: AShare, y: AShare, plain: U64):
    return (yield from bl.b2a(p, (yield from bl.a2b(p, x))))


def _inject(p: Party, x: AShare, y: AShare, plain: U64):
    bits = yield from bl.a2b(p, x)
    return (yield from inject(p, [(bits, [WORD_ROW, [3**j for j in range(64)]])]))


PROTOCOLS: dict[str, tuple[Program, tuple[int, ...]]] = {
    # name: (program, members whose view is tested)
    "sharing": (_sharing, (0, 1, 2)),
    "input": (_input, (1, 2)),  # member 0 is the owner: its input is its own
    "open_to_other": (_open_to_2, (0, 1)),  # member 2 is the receiver (exact simulator below)
    "mul": (lambda p, x, y, plain: ar.mul(p, x, y), (0, 1, 2)),
    "mul_fixed": (lambda p, x, y, plain: ar.mul_fixed(p, x, y, 16), (0, 1, 2)),
    "trunc": (lambda p, x, y, plain: ar.trunc(p, x, 16), (0, 1, 2)),
    "lt": (lambda p, x, y, plain: bl.lt(p, x, y), (0, 1, 2)),
    "eq": (lambda p, x, y, plain: bl.eq(p, x, y), (0, 1, 2)),
    "b2a": (_b2a, (0, 1, 2)),
    "inject": (_inject, (0, 1, 2)),
}


CASES = [(name, m) for name, (_, members) in PROTOCOLS.items() for m in members]


@functools.cache
def views_of(name: str, which: str) -> list[Views]:
    """All members' views of protocol ``name`` for secret input A or B (seeds differ)."""
    program = {**PROTOCOLS, **LEAKS}[name][0]
    secret, base = (INPUT_A, 1) if which == "A" else (INPUT_B, 2)
    widths = [v.words.shape[1] for v in collect(program, secret, 1, 1000 + base)]
    return collect(program, secret, runs_for(max(widths)), base)


@pytest.mark.parametrize("name, member", CASES)
def test_view_does_not_depend_on_the_secret(name: str, member: int) -> None:
    a, b = views_of(name, "A")[member].words, views_of(name, "B")[member].words
    p_value, relations = position_p_value(a, b), (affine_relations(a), affine_relations(b))
    assert p_value > ALPHA, f"{name}: a word position differs between inputs (p = {p_value:.3g})"
    assert relations == (0, 0), f"{name}: the view obeys {relations} linear relations"


@pytest.mark.parametrize("name, member", CASES)
def test_view_matches_its_simulation(name: str, member: int) -> None:
    real = views_of(name, "B")[member]
    fake = real.simulated(np.random.default_rng(7))
    p_value = position_p_value(real.words, fake.words)
    relations = (affine_relations(real.words), affine_relations(fake.words))
    assert p_value > ALPHA, f"{name}: a word position differs from the simulation (p = {p_value:.3g})"
    assert relations == (0, 0), f"{name}: real and simulated views obey {relations} linear relations"


@pytest.mark.parametrize("receiver", [0, 1, 2, None])
def test_opening_view_is_exactly_simulated(receiver: int | None) -> None:
    """Opening: what a receiver gets is its output minus its own two components, nothing else."""

    def program(p: Party, x: AShare, y: AShare, plain: U64):
        if receiver is None:
            return (yield from ar.open_all(p, x))
        return (yield from ar.open_to(p, x, receiver))

    views = collect(program, INPUT_B, 50, 3)
    for m in [receiver] if receiver is not None else [0, 1, 2]:
        v = views[m]
        x_i, x_next = v.inputs[:, :2], v.inputs[:, 2:4]
        assert v.tape.shape[1] == 0
        np.testing.assert_array_equal(v.received, INPUT_B[0] - x_i - x_next)


# ----------------------------------------------------------------------------- planted leaks


def _leak_share(p: Party, x: AShare, y: AShare, plain: U64):
    """Member 0 sends member 1 the component x_0 it lacks, then a product runs."""
    yield from exchange(send={1: x.v[0]} if p.index == 0 else {}, expect={0: 2} if p.index == 1 else {})
    return (yield from ar.mul(p, x, y))


def _leak_reused_mask(p: Party, x: AShare, y: AShare, plain: U64):
    """Member 0 sends member 1 x_0 + m with one mask word m (from K_0, which member 1
    lacks) reused for every element: each word is uniform, their differences are not."""
    mask = p.rand.stream(0, 1) if p.index in (0, 2) else None
    send = {1: x.v[0] + mask[0]} if p.index == 0 and mask is not None else {}
    yield from exchange(send=send, expect={0: 2} if p.index == 1 else {})
    return (yield from ar.mul(p, x, y))


def _leak_low_bit(p: Party, x: AShare, y: AShare, plain: U64):
    """Member 0 sends member 1 a fresh uniform word whose bit 0 is the secret's bit 0."""
    mask = p.rand.stream(0, 2) if p.index in (0, 2) else None
    send = {1: (mask & ~np.uint64(1)) | (plain & np.uint64(1))} if p.index == 0 and mask is not None else {}
    yield from exchange(send=send, expect={0: 2} if p.index == 1 else {})
    return (yield from ar.mul(p, x, y))


LEAKS: dict[str, tuple[Program, tuple[int, ...]]] = {
    "leak_share": (_leak_share, (1,)),
    "leak_reused_mask": (_leak_reused_mask, (1,)),
    "leak_low_bit": (_leak_low_bit, (1,)),
}


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_planted_leak_fails_the_joint_check(name: str) -> None:
    for which in ("A", "B"):
        assert affine_relations(views_of(name, which)[1].words) >= 1


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_planted_leak_fails_the_simulator(name: str) -> None:
    real = views_of(name, "B")[1]
    fake = real.simulated(np.random.default_rng(7))
    assert affine_relations(real.words) != affine_relations(fake.words)


def test_planted_low_bit_fails_the_position_check() -> None:
    a, b = views_of("leak_low_bit", "A")[1], views_of("leak_low_bit", "B")[1]
    assert position_p_value(a.words, b.words) < 1e-30
    assert position_p_value(b.words, b.simulated(np.random.default_rng(7)).words) < 1e-30


def test_planted_leaks_are_invisible_to_other_members() -> None:
    """The leaks are sent to member 1 alone: members 0 and 2 still pass, so the checks
    point at the member that actually learns the secret."""
    for name in LEAKS:
        for member in (0, 2):
            assert affine_relations(views_of(name, "B")[member].words) == 0, (name, member)
