"""Solves and inverses of secret SPD matrices against numpy.linalg."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from site_agent.mpc import linalg
from site_agent.mpc.fixed import FixedPoint

from .helpers import run_open, shared

FP = FixedPoint()


def spd(k: int, cond: float, scale: float, seed: int) -> np.ndarray:
    """A random SPD matrix with eigenvalues spread geometrically over [scale / cond, scale]."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))
    return (q * np.geomspace(scale, scale / cond, k)) @ q.T


def rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def check_solve(a: np.ndarray, b: np.ndarray, fp: FixedPoint, tol: float, seed: int = 0) -> None:
    a_enc, b_enc = fp.decode(fp.encode(a)), fp.decode(fp.encode(b))  # numpy sees the encoded inputs
    a_s, b_s = shared(a, fp, seed), shared(b, fp, seed + 1)
    got = fp.decode(run_open(lambda p: linalg.solve(p, a_s[p.index], b_s[p.index], fp), seed=seed))
    assert rel(got, np.linalg.solve(a_enc, b_enc)) < tol


@given(st.integers(1, 12), st.floats(1, 1e3), st.sampled_from([0.05, 1.0, 30.0, 2000.0]), st.integers(0, 10**6))
def test_solve_random_spd(k: int, cond: float, scale: float, seed: int) -> None:
    a = spd(k, cond, scale, seed)
    x = np.random.default_rng(seed).normal(scale=4.0, size=k)
    check_solve(a, a @ x, FP, 1e-4, seed)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_solve_k50_condition_1e3(scale: float) -> None:
    a = spd(50, 1e3, scale, 7)
    check_solve(a, a @ np.random.default_rng(7).normal(scale=3.0, size=50), FP, 1e-4)


def test_solve_regression_normal_equations() -> None:
    # A least-squares fit: intercept, age (years), systolic pressure (mmHg), a 0/1 indicator.
    rng = np.random.default_rng(3)
    n = 400
    age = rng.uniform(20, 90, n)
    design = np.column_stack([np.ones(n), age, 100 + 0.5 * age + rng.normal(0, 12, n), rng.integers(0, 2, n)])
    y = design @ np.array([2.0, 0.03, 0.01, -1.5]) + rng.normal(0, 1, n)
    design = design / np.array([1.0, 100.0, 200.0, 1.0])  # public bounds on each column
    xtx, xty = design.T @ design / n, design.T @ y / n
    check_solve(xtx, xty, FP, 1e-4)
    beta = FP.decode(run_open(lambda p: linalg.solve(p, *[shared(v, FP, 5)[p.index] for v in (xtx, xty)], FP)))
    # Encoding X'X with 16 fractional bits perturbs it (condition ~800), so beta is ~1e-3 off the float fit.
    assert rel(beta, np.linalg.lstsq(design, y, rcond=None)[0]) < 5e-3


def test_solve_matrix_right_hand_side_and_higher_precision() -> None:
    a = spd(6, 300.0, 5.0, 11)
    b = np.random.default_rng(11).normal(size=(6, 3))
    check_solve(a, b, FP, 1e-4)
    check_solve(a, b, FixedPoint(24), 1e-4)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_inverse(k: int) -> None:
    a = spd(k, 100.0, 3.0, k)
    a_s = shared(a, FP, k)
    got = FP.decode(run_open(lambda p: linalg.inverse(p, a_s[p.index], FP)))
    want = np.linalg.inv(FP.decode(FP.encode(a)))
    assert rel(got, want) < 1e-4 + k * FP.scale**-1 / np.linalg.norm(want)  # plus the output's resolution


@given(st.integers(1, 2**61 - 1))
def test_pow2_scales_are_exact(t: int) -> None:
    ts = shared(np.array(t, dtype=np.int64))
    e = t.bit_length()
    got = run_open(lambda p: linalg.pow2_scales(p, ts[p.index], (61, 40)))
    assert got.tolist() == [2 ** (61 - e), 2 ** (40 - e) if e <= 40 else 0]


def test_plan_and_shapes() -> None:
    assert linalg.plan(10, 1e3) == (23, 19) and linalg.plan(50, 1e3) == (22, 21)
    with pytest.raises(ValueError, match=r"^condition bound 1e\+12 is too large for k = 50 in a 64-bit ring$"):
        linalg.plan(50, 1e12)
    a_s, b_s = shared(np.eye(3), FP), shared(np.ones(4), FP)
    with pytest.raises(
        ValueError, match=r"^need a square matrix and a matching right-hand side, got \(3, 3\) and \(4,\)$"
    ):
        run_open(lambda p: linalg.solve(p, a_s[p.index], b_s[p.index], FP))
