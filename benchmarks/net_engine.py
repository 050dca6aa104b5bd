"""The MPC engine over the network: three member processes, mutual TLS 1.3 websockets on loopback.

Measures, with the full stack (frames, dispatcher, TLS, websockets, session key set-up):

* fixed-point multiplications per second (``mul_fixed`` on n = 1e6 shared values, 3 hops);
* comparisons per second (``boolean.lt`` on n = 1e6 pairs of shared values; the warm-up's
  result is opened and checked against numpy);
* the secure sum of three members' vectors of n = 1e6 values each, opened to all:
  ``input_from`` three times (3 rounds), and the three inputs batched in one round;
* the median of 10,000 shared values (``order.median``) and the sort of ``--sort-n``
  (default 1e6) shared values (``order.sort``), both with the shuffle sort; the warm-ups'
  results are opened and checked against numpy.

Each timed session is preceded by a one-word opening that lines the three processes up; a
figure is the slowest member's wall time for the session, including key set-up. The members
are ``site_agent.net.loopback`` processes.

    python benchmarks/net_engine.py [--n 1000000] [--reps 5] [--sort-n 1000000] [--sort-reps 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from site_agent.crypto.certs import issue_cert, make_ca
from site_agent.net.loopback import FP, NAMES, member_configs, plain_inputs

ROOT = Path(__file__).resolve().parents[1]


MEDIAN_N = 10_000


def run(n: int, reps: int, sort_n: int = 1_000_000, sort_reps: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        lt_out = str(d / "lt")
        jobs: list[dict[str, Any]] = []
        labels: list[str] = []

        def add(op: str, label: str, **kw: Any) -> None:
            jobs.append({"op": "sync", "session": f"{len(jobs):032x}"})
            labels.append("sync")
            jobs.append({"op": op, "n": n, "seed": len(jobs), "session": f"{len(jobs):032x}", **kw})
            labels.append(label)

        add("mul_fixed", "warmup", open_result=False)
        for _ in range(reps):
            add("mul_fixed", "mul_fixed", open_result=False)
        add("lt", "warmup", out=lt_out)
        for _ in range(reps):
            add("lt", "lt", open_result=False)
        for _ in range(reps):
            add("sum3", "sum3")
        for _ in range(reps):
            add("sum3_one_round", "sum3_one_round")
        median_out = str(d / "median")
        add("median", "warmup", n=MEDIAN_N, out=median_out)
        for _ in range(reps):
            add("median", "median", n=MEDIAN_N, open_result=False)
        sort_out = str(d / "sort")
        if sort_reps:
            add("sort", "warmup", n=sort_n, out=sort_out)
        for _ in range(sort_reps - 1):
            add("sort", "sort", n=sort_n, open_result=False)
        ca_key, ca_cert = make_ca("bench CA")
        (d / "ca.crt").write_bytes(ca_cert)
        tls = []
        for i in range(3):
            key, cert = issue_cert(ca_key, ca_cert, NAMES[i], ["127.0.0.1"], client=True, server=True)
            (d / f"{i}.key").write_bytes(key)
            (d / f"{i}.crt").write_bytes(cert)
            tls.append({"cert": str(d / f"{i}.crt"), "key": str(d / f"{i}.key"), "ca": str(d / "ca.crt")})
        procs = []
        for i, cfg in enumerate(member_configs(jobs, tls, timeout=60)):
            (d / f"{i}.json").write_text(json.dumps(cfg))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "site_agent.net.loopback", str(d / f"{i}.json")],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
            )
        outs = [p.communicate(timeout=1800)[0] for p in procs]
        per_member = [[json.loads(s) for s in out.splitlines() if s.strip()] for out in outs]
        seconds: dict[str, list[float]] = {}
        for k, label in enumerate(labels):
            lines = [next(x for x in m if x.get("job") == k) for m in per_member]
            if not all(x["ok"] for x in lines):
                raise SystemExit(f"job {k} ({label}) failed: {lines}")
            if label not in ("sync", "warmup"):
                seconds.setdefault(label, []).append(max(x["seconds"] for x in lines))
            elif jobs[k].get("out") == sort_out:  # the first sort is also timed (it is checked)
                seconds.setdefault("sort", []).append(max(x["seconds"] for x in lines))
        lt_seed = next(job["seed"] for job in jobs if job.get("out") == lt_out)
        x, y = plain_inputs(lt_seed, n)
        for i in range(3):
            if not np.array_equal(np.load(f"{lt_out}.m{i}.npy"), (x < y).astype(np.uint64)):
                raise SystemExit(f"the comparisons member {i} opened differ from numpy's x < y")
        median_seed = next(job["seed"] for job in jobs if job.get("out") == median_out)
        expected = np.median(FP.decode(FP.encode(plain_inputs(median_seed, MEDIAN_N)[0])))
        for i in range(3):
            if abs(FP.decode(np.load(f"{median_out}.m{i}.npy"))[0] - expected) > 2.0**-FP.frac_bits:
                raise SystemExit(f"the median member {i} opened differs from numpy's")
        if sort_reps:
            sort_seed = next(job["seed"] for job in jobs if job.get("out") == sort_out)
            want = FP.encode(plain_inputs(sort_seed, sort_n)[0]).view(np.int64)
            for i in range(3):
                if not np.array_equal(np.load(f"{sort_out}.m{i}.npy").view(np.int64), np.sort(want)):
                    raise SystemExit(f"the sort member {i} opened differs from numpy's")
    mul = seconds["mul_fixed"]
    return {
        "n": n,
        "reps": reps,
        "cpus": os.cpu_count(),
        "mul_fixed_seconds": mul,
        "mul_fixed_per_second_best": n / min(mul),
        "mul_fixed_per_second_median": n / statistics.median(mul),
        "lt_seconds": seconds["lt"],
        "lt_per_second_best": n / min(seconds["lt"]),
        "lt_per_second_median": n / statistics.median(seconds["lt"]),
        "secure_sum_3_rounds_seconds": seconds["sum3"],
        "secure_sum_3_rounds_median": statistics.median(seconds["sum3"]),
        "secure_sum_one_round_seconds": seconds["sum3_one_round"],
        "secure_sum_one_round_median": statistics.median(seconds["sum3_one_round"]),
        "median_n": MEDIAN_N,
        "median_seconds": seconds["median"],
        "median_seconds_median": statistics.median(seconds["median"]),
        "sort_n": sort_n,
        "sort_seconds": seconds.get("sort", []),
        "sort_seconds_median": statistics.median(seconds["sort"]) if sort_reps else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sort-n", type=int, default=1_000_000, help="values in the sort workload")
    ap.add_argument("--sort-reps", type=int, default=1, help="sorts to time (0: none; the first is checked)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    r = run(args.n, args.reps, args.sort_n, args.sort_reps)
    if args.json:
        print(json.dumps(r))
        return
    print(f"three processes, mutual TLS 1.3 websockets on loopback, {r['cpus']} CPUs, n = {r['n']:,}")
    print(
        f"fixed-point mult: {r['mul_fixed_per_second_median']:.3g}/s median, "
        f"{r['mul_fixed_per_second_best']:.3g}/s best"
        f"  (session seconds: {', '.join(f'{s:.3f}' for s in r['mul_fixed_seconds'])})"
    )
    print(
        f"comparisons (lt): {r['lt_per_second_median']:.3g}/s median, {r['lt_per_second_best']:.3g}/s best"
        f"  (session seconds: {', '.join(f'{s:.3f}' for s in r['lt_seconds'])})"
    )
    print(f"secure sum, input_from x3 + open: {r['secure_sum_3_rounds_median']:.3f} s median")
    print(f"secure sum, one-round inputs + open: {r['secure_sum_one_round_median']:.3f} s median")
    print(f"median of {r['median_n']:,} secret values: {r['median_seconds_median']:.3f} s median")
    if r["sort_seconds"]:
        print(f"sort of {r['sort_n']:,} secret values: {r['sort_seconds_median']:.2f} s median")


if __name__ == "__main__":
    main()
