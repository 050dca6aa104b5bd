"""Demo data benchmark: how long the synthetic hospitals take to generate.

    python benchmarks/demo_data.py [--patients 100000] [--seed N]

Generates every table of the three default sites (``mpc_jupyter.demo.data.generate_site``)
at ``--patients`` patients each and prints the rows made and the seconds taken. The demo
(``scripts/demo.sh``) generates its data this way; the data's properties are tested in
tests/demo/test_data.py, its speed only here.
"""

from __future__ import annotations

import argparse
import time

from mpc_jupyter.demo.data import DEFAULT_SEED, DEFAULT_SITES, generate_site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000, help="patients per site")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = sum(len(frame) for name in DEFAULT_SITES for frame in generate_site(name, args.patients, args.seed).values())
    seconds = time.perf_counter() - started
    print(f"{len(DEFAULT_SITES)} sites x {args.patients:,} patients: {rows:,} rows in {seconds:.2f} s")


if __name__ == "__main__":
    main()
