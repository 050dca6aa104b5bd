"""Engine benchmark: our three-party engine, MPyC and plaintext numpy on the same workloads.

``python benchmarks/engine.py`` prints a table; ``--json`` prints one JSON object instead;
``--quick`` runs small sizes (a smoke run, figures not meaningful); ``--no-mpyc`` skips MPyC.
See docs/benchmarks.md for what each figure means.

Workloads (inputs are reals in [-100, 100) drawn from one seed, fixed point with f = 16):

* ``fixed_mul``: elementwise fixed-point products with truncation (``arithmetic.mul_fixed``).
* ``less_than``: elementwise comparisons x < y (``boolean.lt``).
* ``median``: the median of n secret values (``order.median``).
* ``secure_sum``: each of the three parties inputs n values (``arithmetic.input_from``), the
  elementwise sum of the three vectors is computed and opened to all.
* accuracy: the largest error of the opened fixed-point products against exact integer
  arithmetic on the encoded inputs, in units of 2^-f; and for reciprocal, sqrt, exp, log and
  sigmoid (``functions``) the largest |z - y| / max(|y|, 1) against numpy's y at the encoded
  inputs, on n values spread over each function's domain (``FUNCTIONS``): the relative
  error where |y| >= 1, the absolute error below (where a relative one means nothing).

Ours runs in-process: the three parties are :class:`PartyMachine` objects in this one
process (``party.run_in_memory``), so their computation is serialised on one core and no
bytes cross a network. Inputs are dealt before the clock starts, except in ``secure_sum``
where inputting is the workload. Our figures are the best of ``--repeat`` runs. MPyC runs as
three processes on loopback (``benchmarks/mpyc_worker.py``), once per workload, at smaller
sizes that keep it within about a minute; rates are per element at the size measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import net_engine
import numpy as np
import numpy.typing as npt

from site_agent.mpc import arithmetic, boolean, functions, order
from site_agent.mpc.fixed import FixedPoint
from site_agent.mpc.party import Party, Protocol, Round, run_in_memory
from site_agent.mpc.ring import U64
from site_agent.mpc.shares import AShare
from site_agent.mpc.sharing import deal, reconstruct
from site_agent.tuning import tune_allocator

T = TypeVar("T")
Program = Callable[[Party], Protocol[T]]

FP = FixedPoint(16)
SEED = 20261124
WORKER = Path(__file__).with_name("mpyc_worker.py")
MPYC_TIMEOUT_S = 600.0
MPYC_KEYS = (
    "mpyc_version",
    "mpyc_gmpy2",
    "mpyc_fixed_mul_n",
    "mpyc_fixed_mul_per_s",
    "mpyc_fixed_mul_max_error_units",
    "mpyc_less_than_n",
    "mpyc_less_than_per_s",
    "mpyc_median_n",
    "mpyc_median_seconds",
    "mpyc_secure_sum_n",
    "mpyc_secure_sum_seconds",
)


@dataclass(frozen=True)
class Sizes:
    """Element counts per workload, for ours (and plaintext) and for MPyC."""

    fixed_mul: int
    less_than: int
    median: int
    secure_sum: int
    mpyc_fixed_mul: int
    mpyc_less_than: int
    mpyc_median: int
    mpyc_secure_sum: int
    functions: int

    def mpyc(self) -> dict[str, int]:
        """The MPyC sizes keyed by workload name."""
        return {k.removeprefix("mpyc_"): v for k, v in asdict(self).items() if k.startswith("mpyc_")}


FULL = Sizes(10**6, 10**6, 10_000, 10**6, 10_000, 5_000, 1_000, 100_000, 10_000)
QUICK = Sizes(10_000, 10_000, 1_000, 10_000, 200, 100, 16, 1_000, 1_000)


@dataclass(frozen=True)
class Function:
    """A function of ``site_agent.mpc.functions``, its exact counterpart and where to sample it."""

    name: str
    exact: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
    low: float
    high: float
    log_uniform: bool = False
    both_signs: bool = False

    def sample(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
        """n inputs: uniform on [low, high], or log-uniform (and of random sign with ``both_signs``)."""
        if not self.log_uniform:
            return rng.uniform(self.low, self.high, n)
        x = 10 ** rng.uniform(np.log10(self.low), np.log10(self.high), n)
        return x * rng.choice([-1.0, 1.0], n) if self.both_signs else x

    @property
    def domain(self) -> str:
        span = f"{'|x|' if self.both_signs else 'x'} in [{self.low:g}, {self.high:g}]"
        return span + (", log-uniform" if self.log_uniform else "")


FUNCTIONS = (
    Function("reciprocal", np.reciprocal, 1e-4, 1e6, log_uniform=True, both_signs=True),
    Function("sqrt", np.sqrt, 1e-4, 1e12, log_uniform=True),
    Function("exp", np.exp, -20.0, 20.0),
    Function("log", np.log, 1e-4, 1e12, log_uniform=True),
    Function("sigmoid", lambda v: 1 / (1 + np.exp(-v)), -50.0, 50.0),
)


@dataclass(frozen=True)
class Target:
    """A goal from issue 2: ``key`` must be >= ``bound`` (or <= with ``at_most``)."""

    name: str
    key: str
    bound: float
    at_most: bool = False

    def check(self, figures: dict[str, Any]) -> bool | None:
        """True/False, or None when the figure was not measured."""
        value = figures.get(self.key)
        if value is None:
            return None
        return bool(value <= self.bound if self.at_most else value >= self.bound)


TARGETS = (
    Target("fixed mult >= 5e6/s", "fixed_mul_per_s", 5e6),
    Target("fixed mult >= 800x MPyC", "fixed_mul_ratio_vs_mpyc", 800),
    Target("comparisons >= 1e6/s", "less_than_per_s", 1e6),
    Target("comparisons >= 500x MPyC", "less_than_ratio_vs_mpyc", 500),
    Target("median of 10,000 <= 1 s", "median_seconds", 1.0, at_most=True),
    Target("secure sum of 1e6 x 3 parties <= 0.25 s", "secure_sum_seconds", 0.25, at_most=True),
    Target("fixed mult error <= 4 units of 2^-f", "fixed_mul_max_error_units", 4.0, at_most=True),
    Target("network: fixed mult >= 5e6/s", "network_fixed_mul_per_s", 5e6),
    Target("network: fixed mult >= 800x MPyC", "network_fixed_mul_ratio_vs_mpyc", 800),
    Target("network: comparisons >= 1e6/s", "network_less_than_per_s", 1e6),
    Target("network: comparisons >= 500x MPyC", "network_less_than_ratio_vs_mpyc", 500),
    Target("network: secure sum of 1e6 x 3 parties <= 0.25 s", "network_secure_sum_seconds", 0.25, at_most=True),
    Target("network: median of 10,000 <= 1 s", "network_median_seconds", 1.0, at_most=True),
)

NETWORK_KEYS = (
    "network_n",
    "network_fixed_mul_per_s",
    "network_fixed_mul_best_per_s",
    "network_less_than_per_s",
    "network_less_than_best_per_s",
    "network_secure_sum_seconds",
    "network_secure_sum_one_round_seconds",
    "network_median_seconds",
)


# --- data ------------------------------------------------------------------------------


def operands(seed: int, n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The two input vectors (reals in [-100, 100)); ``mpyc_worker`` draws the same ones."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-100, 100, n), rng.uniform(-100, 100, n)


def party_vectors(seed: int, n: int) -> list[npt.NDArray[np.float64]]:
    """The vector each of the three parties inputs to the secure sum."""
    return [np.random.default_rng(seed + i).uniform(-100, 100, n) for i in range(3)]


# --- timing ----------------------------------------------------------------------------


def _clocked(program: Program[T], spent: list[float]) -> Program[T]:
    """``program`` with the time each party spends inside its own protocol code added to ``spent``."""

    def wrapped(p: Party) -> Protocol[T]:
        gen = program(p)
        got: dict[int, U64] | None = None
        while True:
            start = time.perf_counter()
            try:
                rnd: Round = gen.send(got)  # type: ignore[arg-type]
            except StopIteration as stop:
                spent[p.index] += time.perf_counter() - start
                return stop.value  # type: ignore[no-any-return]
            spent[p.index] += time.perf_counter() - start
            got = yield rnd

    return wrapped


@dataclass(frozen=True)
class Run:
    """In-process runs: the best wall-clock seconds, the slowest party's own compute in that
    run, the first run's seconds (cold: fresh process memory), and the best run's results."""

    seconds: float
    party_seconds: float
    first_seconds: float
    results: list[Any]


def run_ours(program: Program[T], repeat: int) -> Run:
    """The best (fastest wall-clock) of ``repeat`` in-process runs of ``program``."""
    runs = []
    for r in range(repeat):
        spent = [0.0, 0.0, 0.0]
        start = time.perf_counter()
        results, _ = run_in_memory(_clocked(program, spent), seed=r)
        runs.append((time.perf_counter() - start, max(spent), results))
    seconds, party_seconds, results = min(runs, key=lambda run: run[0])
    return Run(seconds, party_seconds, runs[0][0], results)


def best_seconds(fn: Callable[[], object], repeat: int, min_total: float = 0.2) -> float:
    """Best time per call of a fast plaintext function (calls batched to ``min_total`` seconds)."""
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_total:
        fn()
        calls += 1
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


# --- our workloads ---------------------------------------------------------------------


def bench_fixed_mul(n: int, repeat: int) -> dict[str, Any]:
    """Rate and accuracy of ``mul_fixed`` on n dealt pairs."""
    xs, ys = operands(SEED, n)
    a, b = FP.encode(xs), FP.encode(ys)
    sx, sy = deal(a), deal(b)

    def program(p: Party) -> Protocol[AShare]:
        return (yield from arithmetic.mul_fixed(p, sx[p.index], sy[p.index], FP.frac_bits))

    run = run_ours(program, repeat)
    return {
        "fixed_mul_n": n,
        "fixed_mul_per_s": n / run.seconds,
        "fixed_mul_party_compute_per_s": n / run.party_seconds,
        "fixed_mul_first_run_per_s": n / run.first_seconds,
        "fixed_mul_max_error_units": max_error_units(reconstruct(run.results), a, b),
        "plaintext_fixed_mul_per_s": n / best_seconds(lambda: xs * ys, repeat),
    }


def max_error_units(products: U64, a: U64, b: U64) -> float:
    """max |z - a b / 2^f| over the elements, in units of 2^-f, with exact integer arithmetic."""
    z = products.view(np.int64).astype(object)
    exact = a.view(np.int64).astype(object) * b.view(np.int64).astype(object)
    return float(np.max(np.abs(z * (1 << FP.frac_bits) - exact))) / float(1 << FP.frac_bits)


def function_error(fn: Function, xs: npt.NDArray[np.float64]) -> float:
    """max |z - y| / max(|y|, 1) of ``fn`` on xs, with y exact at the encoded inputs."""
    encoded = FP.encode(xs)
    shares = deal(encoded)
    protocol = getattr(functions, fn.name)

    def program(p: Party) -> Protocol[AShare]:
        return (yield from protocol(p, shares[p.index], FP))

    z = FP.decode(reconstruct(run_ours(program, 1).results))
    y = fn.exact(FP.decode(encoded))
    return float(np.max(np.abs(z - y) / np.maximum(np.abs(y), 1.0)))


def bench_functions(n: int) -> dict[str, Any]:
    """The error of each function in ``FUNCTIONS`` on n sampled inputs, and where they were sampled."""
    rng = np.random.default_rng(SEED)
    out: dict[str, Any] = {"functions_n": n}
    for fn in FUNCTIONS:
        out[f"{fn.name}_max_rel_error"] = function_error(fn, fn.sample(rng, n))
        out[f"{fn.name}_domain"] = fn.domain
    return out


def bench_less_than(n: int, repeat: int) -> dict[str, Any]:
    """Rate of ``boolean.lt`` on n dealt pairs."""
    xs, ys = operands(SEED, n)
    sx, sy = deal(FP.encode(xs)), deal(FP.encode(ys))

    def program(p: Party) -> Protocol[AShare]:
        return (yield from boolean.lt(p, sx[p.index], sy[p.index]))

    run = run_ours(program, repeat)
    if not np.array_equal(reconstruct(run.results), (xs < ys).astype(np.uint64)):
        raise AssertionError("less-than benchmark gave a wrong answer")
    return {
        "less_than_n": n,
        "less_than_per_s": n / run.seconds,
        "less_than_party_compute_per_s": n / run.party_seconds,
        "less_than_first_run_per_s": n / run.first_seconds,
        "plaintext_less_than_per_s": n / best_seconds(lambda: xs < ys, repeat),
    }


def median_seconds(n: int, repeat: int) -> tuple[Run, float]:
    """An in-process median of n dealt values, opened, and its plaintext ``np.median`` time."""
    xs, _ = operands(SEED, n)
    shares = deal(FP.encode(xs))

    def program(p: Party) -> Protocol[U64]:
        m = yield from order.median(p, shares[p.index], FP)
        return (yield from arithmetic.open_all(p, m))

    run = run_ours(program, repeat)
    if abs(float(FP.decode(run.results[0])) - float(np.median(xs))) > 2 / FP.scale:
        raise AssertionError("median benchmark gave a wrong answer")
    return run, best_seconds(lambda: np.median(xs), repeat)


def bench_median(n: int, mpyc_n: int, repeat: int) -> dict[str, Any]:
    """The median at n and (for the ratio against MPyC) at MPyC's size."""
    run, plain = median_seconds(n, repeat)
    at_mpyc_n, _ = median_seconds(mpyc_n, repeat)
    return {
        "median_n": n,
        "median_seconds": run.seconds,
        "median_party_compute_seconds": run.party_seconds,
        "median_first_run_seconds": run.first_seconds,
        "median_at_mpyc_n_seconds": at_mpyc_n.seconds,
        "plaintext_median_seconds": plain,
    }


def bench_secure_sum(n: int, repeat: int) -> dict[str, Any]:
    """Each party inputs n values (``input_from``); the elementwise sum is opened to all."""
    vectors = party_vectors(SEED, n)
    encoded = [FP.encode(v) for v in vectors]

    def program(p: Party) -> Protocol[U64]:
        total: AShare | None = None
        for owner in range(3):
            mine = encoded[owner] if p.index == owner else None
            share = yield from arithmetic.input_from(p, owner, mine, (n,))
            total = share if total is None else total + share
        assert total is not None
        return (yield from arithmetic.open_all(p, total))

    run = run_ours(program, repeat)
    if not np.array_equal(run.results[0], encoded[0] + encoded[1] + encoded[2]):
        raise AssertionError("secure-sum benchmark gave a wrong answer")
    return {
        "secure_sum_n": n,
        "secure_sum_seconds": run.seconds,
        "secure_sum_party_compute_seconds": run.party_seconds,
        "secure_sum_first_run_seconds": run.first_seconds,
        "plaintext_secure_sum_seconds": best_seconds(lambda: vectors[0] + vectors[1] + vectors[2], repeat),
    }


# --- MPyC ------------------------------------------------------------------------------


def _free_ports(k: int) -> list[int]:
    """k distinct free TCP ports on localhost (held open together while chosen)."""
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_mpyc(sizes: dict[str, int]) -> dict[str, Any]:
    """Start three MPyC parties on loopback and return party 0's JSON report."""
    ports = _free_ports(3)
    addresses = [arg for port in ports for arg in ("-P", f"localhost:{port}")]
    config = json.dumps({"seed": SEED, "sizes": sizes})
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "-M3", f"-I{i}", *addresses, "--no-log", "--workload", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [proc.communicate(timeout=MPYC_TIMEOUT_S) for proc in procs]
    for i, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        if proc.returncode != 0:
            raise RuntimeError(f"MPyC party {i} exited with {proc.returncode}: {err.strip()[-500:]}")
    report: dict[str, Any] = json.loads(outputs[0][0].strip().splitlines()[-1])
    return report


def mpyc_figures(sizes: dict[str, int]) -> dict[str, Any]:
    """MPyC's figures as flat ``mpyc_*`` keys (including the accuracy of its products)."""
    report = run_mpyc(sizes)
    res = report["results"]
    out: dict[str, Any] = {"mpyc_version": report["mpyc_version"], "mpyc_gmpy2": report["gmpy2"]}
    for name in ("fixed_mul", "less_than"):
        out[f"mpyc_{name}_n"] = res[name]["n"]
        out[f"mpyc_{name}_per_s"] = res[name]["n"] / res[name]["seconds"]
    for name in ("median", "secure_sum"):
        out[f"mpyc_{name}_n"] = res[name]["n"]
        out[f"mpyc_{name}_seconds"] = res[name]["seconds"]
    xs, ys = operands(SEED, res["fixed_mul"]["n"])
    products = np.array(res["fixed_mul"]["products"], dtype=np.int64).view(np.uint64)
    out["mpyc_fixed_mul_max_error_units"] = max_error_units(products, FP.encode(xs), FP.encode(ys))
    return out


# --- network ---------------------------------------------------------------------------


def network_figures(n: int, repeat: int) -> dict[str, Any]:
    """Fixed mult, comparisons, secure sum, the median of 10,000 and the sort of n values on three
    member processes over mutual TLS (``net_engine``).

    Medians over ``repeat`` sessions (one sort), each the slowest member's wall time including
    the session's key set-up.
    """
    r = net_engine.run(n, repeat, sort_n=n)
    return {
        "network_n": n,
        "network_fixed_mul_per_s": r["mul_fixed_per_second_median"],
        "network_fixed_mul_best_per_s": r["mul_fixed_per_second_best"],
        "network_less_than_per_s": r["lt_per_second_median"],
        "network_less_than_best_per_s": r["lt_per_second_best"],
        "network_secure_sum_seconds": r["secure_sum_3_rounds_median"],
        "network_secure_sum_one_round_seconds": r["secure_sum_one_round_median"],
        "network_median_seconds": r["median_seconds_median"],
        "network_sort_seconds": r["sort_seconds_median"],
    }


# --- report ----------------------------------------------------------------------------


def ratios(f: dict[str, Any]) -> dict[str, float | None]:
    """Speed-ups over MPyC and slow-downs against plaintext (None when a side is missing)."""

    def div(a: str, b: str) -> float | None:
        return f[a] / f[b] if f.get(a) is not None and f.get(b) is not None else None

    sum_rate = f["secure_sum_n"] / f["secure_sum_seconds"]
    mpyc_sum_rate = f["mpyc_secure_sum_n"] / f["mpyc_secure_sum_seconds"] if f["mpyc_secure_sum_n"] else None
    return {
        "fixed_mul_ratio_vs_mpyc": div("fixed_mul_per_s", "mpyc_fixed_mul_per_s"),
        "less_than_ratio_vs_mpyc": div("less_than_per_s", "mpyc_less_than_per_s"),
        "median_ratio_vs_mpyc": div("mpyc_median_seconds", "median_at_mpyc_n_seconds"),
        "secure_sum_ratio_vs_mpyc": sum_rate / mpyc_sum_rate if mpyc_sum_rate else None,
        "network_fixed_mul_ratio_vs_mpyc": div("network_fixed_mul_per_s", "mpyc_fixed_mul_per_s"),
        "network_less_than_ratio_vs_mpyc": div("network_less_than_per_s", "mpyc_less_than_per_s"),
        "network_secure_sum_ratio_vs_mpyc": (
            f["network_n"] / f["network_secure_sum_seconds"] / mpyc_sum_rate
            if mpyc_sum_rate and f["network_n"]
            else None
        ),
        "fixed_mul_slowdown_vs_plaintext": div("plaintext_fixed_mul_per_s", "fixed_mul_per_s"),
        "less_than_slowdown_vs_plaintext": div("plaintext_less_than_per_s", "less_than_per_s"),
        "median_slowdown_vs_plaintext": div("median_seconds", "plaintext_median_seconds"),
        "secure_sum_slowdown_vs_plaintext": div("secure_sum_seconds", "plaintext_secure_sum_seconds"),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.3g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"


def table(f: dict[str, Any]) -> str:
    """The figures as a readable table with PASS/FAIL per target."""
    rows = [
        ("fixed mult /s", "fixed_mul", "_per_s"),
        ("less-than /s", "less_than", "_per_s"),
        ("median s", "median", "_seconds"),
        ("secure sum s", "secure_sum", "_seconds"),
    ]
    mpyc = f"{f['mpyc_version']}, gmpy2 {'yes' if f['mpyc_gmpy2'] else 'no'}" if f["mpyc_version"] else "not run"
    lines = [
        f"ours: {f['mode']}; MPyC ({mpyc}): three processes on loopback; plaintext: numpy",
        f"{'workload':<15}{'n':>10}{'ours':>14}{'MPyC n':>9}{'MPyC':>10}{'plaintext':>14}{'x MPyC':>9}{'x plain':>9}",
    ]
    for label, name, unit in rows:
        lines.append(
            f"{label:<15}{f[name + '_n']:>10,}{_fmt(f[name + unit]):>14}{f['mpyc_' + name + '_n'] or 0:>9,}"
            f"{_fmt(f['mpyc_' + name + unit]):>10}{_fmt(f['plaintext_' + name + unit]):>14}"
            f"{_fmt(f[name + '_ratio_vs_mpyc']):>9}{_fmt(f[name + '_slowdown_vs_plaintext']):>9}"
        )
    lines += [
        f"x MPyC: times faster than MPyC per element (median: at MPyC's n, ours took "
        f"{_fmt(f['median_at_mpyc_n_seconds'])} s); x plain: times slower than plaintext",
        f"ours, first run (cold memory): fixed mult {_fmt(f['fixed_mul_first_run_per_s'])}/s, less-than "
        f"{_fmt(f['less_than_first_run_per_s'])}/s, median {_fmt(f['median_first_run_seconds'])} s, "
        f"secure sum {_fmt(f['secure_sum_first_run_seconds'])} s",
        f"ours, slowest party's own compute: fixed mult {_fmt(f['fixed_mul_party_compute_per_s'])}/s, less-than "
        f"{_fmt(f['less_than_party_compute_per_s'])}/s, median {_fmt(f['median_party_compute_seconds'])} s, "
        f"secure sum {_fmt(f['secure_sum_party_compute_seconds'])} s",
        f"fixed mult max error, units of 2^-{FP.frac_bits}: ours {_fmt(f['fixed_mul_max_error_units'])}, "
        f"MPyC {_fmt(f['mpyc_fixed_mul_max_error_units'])}",
        f"functions, max |z - y| / max(|y|, 1) on {f['functions_n']:,} values each: "
        + ", ".join(f"{fn.name} {_fmt(f[fn.name + '_max_rel_error'])}" for fn in FUNCTIONS),
    ]
    if f["network_n"]:
        lines.append(
            f"network (three processes, mutual TLS websockets on loopback, n = {f['network_n']:,}, medians): "
            f"fixed mult {_fmt(f['network_fixed_mul_per_s'])}/s, less-than {_fmt(f['network_less_than_per_s'])}/s, "
            f"secure sum {_fmt(f['network_secure_sum_seconds'])} s (inputs in one round: "
            f"{_fmt(f['network_secure_sum_one_round_seconds'])} s), median of 10,000 "
            f"{_fmt(f['network_median_seconds'])} s; x MPyC: fixed mult "
            f"{_fmt(f['network_fixed_mul_ratio_vs_mpyc'])}, less-than {_fmt(f['network_less_than_ratio_vs_mpyc'])}, "
            f"secure sum {_fmt(f['network_secure_sum_ratio_vs_mpyc'])}"
        )
    if f["quick"]:
        lines.append("quick run: sizes too small for the targets, no verdicts")
    lines += [f"{'PASS' if ok else 'FAIL' if ok is False else 'n/a '}  {name}" for name, ok in f["targets"].items()]
    return "\n".join(lines)


def measure(quick: bool, repeat: int, with_mpyc: bool, network: bool) -> dict[str, Any]:
    """Every figure, ratio and target verdict as one flat dictionary (no verdicts when ``quick``)."""
    sizes = QUICK if quick else FULL
    figures: dict[str, Any] = {"mode": "in-process (three parties in one process)", "quick": quick}
    figures["machine"] = machine()
    figures |= bench_fixed_mul(sizes.fixed_mul, repeat)
    figures |= bench_less_than(sizes.less_than, repeat)
    figures |= bench_median(sizes.median, sizes.mpyc_median, repeat)
    figures |= bench_secure_sum(sizes.secure_sum, repeat)
    figures |= mpyc_figures(sizes.mpyc()) if with_mpyc else dict.fromkeys(MPYC_KEYS)
    figures |= network_figures(sizes.fixed_mul, repeat) if network else dict.fromkeys(NETWORK_KEYS)
    figures |= bench_functions(sizes.functions)
    figures |= ratios(figures)
    figures["targets"] = {t.name: None if quick else t.check(figures) for t in TARGETS}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-mpyc", action="store_true", help="skip the MPyC comparison")
    parser.add_argument("--network", action="store_true", help="also run three processes over TLS (net_engine)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure of ours (best is kept)")
    args = parser.parse_args(argv)
    tune_allocator()
    with_mpyc = not args.no_mpyc and importlib.util.find_spec("mpyc") is not None
    repeat = args.repeat or (1 if args.quick else 5)
    figures = measure(args.quick, repeat, with_mpyc, args.network)
    print(json.dumps(figures) if args.json else table(figures))


if __name__ == "__main__":
    main()
