"""Run a protocol on all three parties in one process and open its outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from site_agent.mpc.fixed import FixedPoint
from site_agent.mpc.party import Party, Protocol, run_in_memory
from site_agent.mpc.ring import U64
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import deal, reconstruct


def shared(values: Any, fp: FixedPoint | None = None, seed: int = 0) -> list[AShare]:
    """Deal reals (with ``fp``) or integers as three parties' shares."""
    enc = fp.encode(values) if fp is not None else np.asarray(values, dtype=np.int64).view(np.uint64)
    return deal(enc, np.random.default_rng(seed))


def run_open(program: Callable[[Party], Protocol[AShare]], seed: int = 0) -> U64:
    """Run ``program`` in-process and reconstruct its (arithmetic) output."""
    results, _ = run_in_memory(program, seed=seed)
    return reconstruct(results)


def exact_fixed_product(a: U64, b: U64, frac_bits: int) -> np.ndarray:
    """floor(a * b / 2^f) for signed encodings, in exact Python integers."""
    return np.array(
        [(int(x) * int(y)) >> frac_bits for x, y in zip(a.view(np.int64), b.view(np.int64), strict=True)],
        dtype=object,
    )
