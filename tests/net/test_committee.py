"""Three real member processes on loopback with mutual TLS: answers, isolation, failures."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from site_agent.net.loopback import FP, plain_inputs

N = 100_000


def _sid(k: int) -> str:
    return f"{k:02x}" * 16


def test_mul_fixed_and_open_match_numpy(committee: Any, tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    jobs = [
        {"op": "mul_fixed", "n": N, "seed": 11, "session": _sid(1), "out": out + "mul"},
        {"op": "open", "n": N, "seed": 12, "session": _sid(2), "out": out + "open"},
        {"op": "sum3_one_round", "n": N, "seed": 13, "session": _sid(3), "out": out + "sum"},
    ]
    lines = committee(jobs).wait()
    assert all(line["ok"] for member in lines for line in member if "job" in line), lines
    x, y = plain_inputs(11, N)
    x2, _ = plain_inputs(12, N)
    exact = FP.decode(FP.encode(x)) * FP.decode(FP.encode(y))  # product of the encoded inputs
    for i in range(3):
        z = FP.decode(np.load(f"{out}mul.m{i}.npy"))
        assert np.max(np.abs(z - exact)) <= 2.0**-16  # one truncation: under one unit
        np.testing.assert_array_equal(np.load(f"{out}open.m{i}.npy"), FP.encode(x2))
    from site_agent.net.loopback import member_vector

    total = sum(member_vector(13, m, N) for m in range(3))
    np.testing.assert_array_equal(np.load(f"{out}sum.m0.npy").view(np.int64), total)


def test_concurrent_sessions_are_isolated(committee: Any, tmp_path: Path) -> None:
    out = str(tmp_path / "c")
    jobs = [{"op": "concurrent", "count": 3, "n": 20_000, "seed": 40, "session": _sid(7), "out": out}]
    lines = committee(jobs).wait()
    assert all(line["ok"] for member in lines for line in member if "job" in line), lines
    for s in range(3):
        x, y = plain_inputs(40 + 10 * s, 20_000)
        for i in range(3):
            z = FP.decode(np.load(f"{out}.s{s}.m{i}.npy"))
            assert np.max(np.abs(z - FP.decode(FP.encode(x)) * FP.decode(FP.encode(y)))) <= 2.0**-16


def _fail_one(committee: Any, sig: signal.Signals, timeout: float) -> tuple[list[dict[str, Any]], float]:
    """Start a long many-round session, stop member 2 with ``sig`` mid-protocol."""
    c = committee([{"op": "slow", "n": 10, "rounds": 200_000, "session": _sid(9)}], timeout=timeout)
    for i in range(3):
        assert c.read_line(i)["ready"]
    time.sleep(0.5)  # well inside the protocol
    assert c.procs[2].poll() is None
    t0 = time.monotonic()
    os.kill(c.procs[2].pid, sig)
    results = [c.read_line(i) for i in (0, 1)]
    elapsed = time.monotonic() - t0
    if sig == signal.SIGSTOP:
        os.kill(c.procs[2].pid, signal.SIGKILL)
    return results, elapsed


def test_killed_member_fails_the_others_naming_it(committee: Any) -> None:
    """A killed member's connections close: the others fail with PeerDisconnected, not by
    waiting out their 60 s receive timeout (the bound below is liveness, not speed)."""
    results, elapsed = _fail_one(committee, signal.SIGKILL, timeout=60.0)
    for r in results:
        assert not r["ok"] and r["error"] == "PeerDisconnected", r
        assert "party 2 (neutral-c)" in r["message"], r
    assert elapsed < 30.0, f"{elapsed:.1f} s"


def test_silent_member_times_out_naming_it(committee: Any) -> None:
    """A stopped member keeps its connections open: only the 2 s receive timeout can end the
    others' wait, and it fires (within ten times its length, a liveness bound for a loaded
    machine)."""
    results, elapsed = _fail_one(committee, signal.SIGSTOP, timeout=2.0)
    for r in results:
        assert not r["ok"] and "party 2 (neutral-c)" in r["message"], r
    # The first to time out tells the other, which may stop on that notice before its own
    # timeout: either way each names party 2, and at least one timed out waiting for it.
    timed_out = [r for r in results if r["error"] == "PeerTimeout"]
    assert timed_out and all(r["peer"] == 2 for r in timed_out), results
    told = [r for r in results if r["error"] != "PeerTimeout"]
    assert all(r["error"] == "PeerDisconnected" and "aborted the session" in r["message"] for r in told), results
    assert elapsed < 10 * 2.0, f"{elapsed:.1f} s"
