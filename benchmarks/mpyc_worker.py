"""One MPyC party of the comparison benchmark (started three times by ``benchmarks/engine.py``).

Run as ``python benchmarks/mpyc_worker.py -M3 -I<i> -P host:port ... --workload '<json>'``
(``{"seed": s, "sizes": {"fixed_mul": n, ...}}``):
MPyC parses its own options (``-M``, ``-I``, ``-P``) from the command line and ignores
the rest. Every party computes the same workloads on ``mpc.SecFxp(64, 16)`` values
(MPyC's Shamir sharing over a prime field, three parties, threshold 1); party 0 prints
one JSON line with the timings and the opened products used for the accuracy figure. The
inputs are drawn from the seed exactly as ``benchmarks/engine.py`` draws them.

Each timed section starts after ``mpc.barrier()`` and ends when a result that depends on
all the work has been opened (one element, or all of it for the secure sum), so MPyC's
asynchronous evaluation is finished when the clock stops.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from mpyc.runtime import mpc

SECFXP = mpc.SecFxp(64, 16)


def _inputs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The two operand vectors every party derives from the common seed (values in [-100, 100))."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-100, 100, n), rng.uniform(-100, 100, n)


async def _timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Seconds for ``work`` between a barrier and its awaited result."""
    await mpc.barrier()
    start = time.perf_counter()
    out = await work()
    return time.perf_counter() - start, out


def _shared(values: np.ndarray) -> Any:
    """Party 0 inputs ``values`` as a secret-shared array (every party derives them; party 0's count)."""
    return mpc.input(SECFXP.array(values), senders=0)


async def fixed_mul(seed: int, n: int) -> dict[str, Any]:
    """n fixed-point products with truncation (``mpc.np_multiply``)."""
    xs, ys = _inputs(seed, n)
    a, b = _shared(xs), _shared(ys)
    seconds, _ = await _timed(lambda: mpc.output(mpc.np_sum(mpc.np_multiply(a, b))))
    products = await mpc.output(mpc.np_multiply(a, b), raw=True)
    return {"n": n, "seconds": seconds, "products": [int(v) for v in np.asarray(products).reshape(-1)]}


async def less_than(seed: int, n: int) -> dict[str, Any]:
    """n comparisons x < y (``mpc.np_less``)."""
    xs, ys = _inputs(seed, n)
    a, b = _shared(xs), _shared(ys)
    seconds, _ = await _timed(lambda: mpc.output(mpc.np_sum(mpc.np_less(a, b))))
    return {"n": n, "seconds": seconds}


async def median(seed: int, n: int) -> dict[str, Any]:
    """Median of n secret values: ``mpc.np_sort`` (a sorting network), then the middle element(s).

    ``mpc.statistics.median`` (quickselect on a list of secure numbers) is slower in MPyC 0.11.
    """
    xs, _ = _inputs(seed, n)
    a = _shared(xs)

    def work() -> Awaitable[Any]:
        s = mpc.np_sort(a)
        middle = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        return mpc.output(middle)

    seconds, value = await _timed(work)
    return {"n": n, "seconds": seconds, "value": float(value)}


async def secure_sum(seed: int, n: int) -> dict[str, Any]:
    """Each party inputs n values; the elementwise sum of the three vectors is opened."""
    rng = np.random.default_rng(seed + mpc.pid)
    mine = SECFXP.array(rng.uniform(-100, 100, n))

    async def work() -> Any:
        a, b, c = mpc.input(mine)
        return await mpc.output(a + b + c)

    seconds, _ = await _timed(work)
    return {"n": n, "seconds": seconds}


WORKLOADS = {"fixed_mul": fixed_mul, "less_than": less_than, "median": median, "secure_sum": secure_sum}


async def main(seed: int, sizes: dict[str, int]) -> None:
    """Run each workload with a positive size; party 0 prints the results as JSON."""
    await mpc.start()
    results = {name: await WORKLOADS[name](seed, n) for name, n in sizes.items() if n > 0}
    await mpc.shutdown()
    if mpc.pid == 0:
        gmpy2 = importlib.util.find_spec("gmpy2") is not None
        print(json.dumps({"mpyc_version": mpc.version, "gmpy2": gmpy2, "results": results}), flush=True)


def _config(argv: list[str]) -> tuple[int, dict[str, int]]:
    """The seed and the workload sizes from ``--workload`` (MPyC's own options are left alone)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workload", required=True, help='JSON: {"seed": s, "sizes": {name: n}}')
    config = json.loads(parser.parse_known_args(argv)[0].workload)
    sizes: dict[str, int] = config["sizes"]
    unknown = set(sizes) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}")
    return int(config["seed"]), sizes


if __name__ == "__main__":
    mpc.run(main(*_config(sys.argv[1:])))
