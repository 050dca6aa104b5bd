"""Our engine beside SecretFlow SPU 0.9.5 (ABY3), both as three processes over TLS on loopback.

    python benchmarks/vs_spu.py [--n 1000000] [--sort-n 1000000] [--reps 3] [--json]

SPU pins its own numpy and jax, so it lives in its own virtual environment, ``.venv-spu`` at
the repository root, which this script creates on first use (``pip install spu==0.9.5``).
Three ``benchmarks/spu_worker.py`` processes run there, linked by brpc with TLS (certificates
from a throwaway CA made with ``site_agent.crypto.certs``); ours are the three
``site_agent.net.loopback`` members of ``benchmarks/net_engine.py``. Same workloads, same
sizes, the two systems one after the other in one run: fixed-point products, comparisons,
the sum of three secret vectors, the median of 10,000 and a sort. Both sides check their
first answer against numpy.

What is timed differs in one way, to SPU's advantage: SPU's clock runs around
``Runtime.run`` only (inputs already set, the result left as shares), ours around the whole
session (key set-up, and for the secure sum the three inputs and the opening). A ratio is
SPU's median time over ours: above 1, ours is faster.
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

import net_engine

from site_agent.crypto.certs import issue_cert, make_ca
from site_agent.net.loopback import free_ports

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-spu"
SPU_VERSION = "0.9.5"
MEDIAN_N = net_engine.MEDIAN_N


def spu_python() -> Path:
    """The SPU environment's interpreter, creating the environment when it is missing."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"spu=={SPU_VERSION}"], check=True)
    return python


def run_spu(jobs: list[dict[str, Any]], folder: Path) -> list[list[float]]:
    """Run the jobs on three SPU parties over TLS; seconds per run of each job (party maximum)."""
    ca_key, ca_cert = make_ca("spu bench CA")
    (folder / "ca.pem").write_bytes(ca_cert)
    ports = free_ports(3)
    procs = []
    for rank in range(3):
        key, cert = issue_cert(ca_key, ca_cert, f"spu-{rank}", ["127.0.0.1"], client=True, server=True)
        (folder / f"spu{rank}.key").write_bytes(key)
        (folder / f"spu{rank}.pem").write_bytes(cert)
        tls = {
            "cert": str(folder / f"spu{rank}.pem"),
            "key": str(folder / f"spu{rank}.key"),
            "ca": str(folder / "ca.pem"),
        }
        config = folder / f"spu{rank}.json"
        config.write_text(json.dumps({"rank": rank, "ports": ports, "tls": tls, "jobs": jobs}))
        procs.append(
            subprocess.Popen(
                [str(spu_python()), str(ROOT / "benchmarks" / "spu_worker.py"), str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    outs = [p.communicate(timeout=3600)[0] for p in procs]
    lines = [[json.loads(s) for s in out.splitlines() if s.startswith("{")] for out in outs]
    seconds = []
    for k in range(len(jobs)):
        mine = [next((x for x in member if x.get("job") == k), {"ok": False}) for member in lines]
        if not all(x["ok"] for x in mine):
            raise SystemExit(f"SPU job {jobs[k]['name']} failed: {mine}")
        seconds.append([max(runs) for runs in zip(*(x["seconds"] for x in mine), strict=True)])
    return seconds


def measure(n: int, sort_n: int, reps: int) -> dict[str, Any]:
    sizes = {"fixed_mul": n, "less_than": n, "secure_sum": n, "median": MEDIAN_N, "sort": sort_n}
    jobs = [{"name": name, "n": size, "seed": k, "reps": reps} for k, (name, size) in enumerate(sizes.items())]
    with tempfile.TemporaryDirectory() as tmp:
        spu = dict(zip(sizes, run_spu(jobs, Path(tmp)), strict=True))
    ours_raw = net_engine.run(n, reps, sort_n=sort_n, sort_reps=1)
    ours = {
        "fixed_mul": ours_raw["mul_fixed_seconds"],
        "less_than": ours_raw["lt_seconds"],
        "secure_sum": ours_raw["secure_sum_one_round_seconds"],
        "median": ours_raw["median_seconds"],
        "sort": ours_raw["sort_seconds"],
    }
    out: dict[str, Any] = {"n": n, "sort_n": sort_n, "median_n": MEDIAN_N, "reps": reps, "spu_version": SPU_VERSION}
    for name, size in sizes.items():
        s, o = statistics.median(spu[name]), statistics.median(ours[name])
        out[name] = {"n": size, "spu_seconds": s, "ours_seconds": o, "ours_faster_by": s / o}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="values in products, comparisons and sums")
    ap.add_argument("--sort-n", type=int, default=1_000_000, help="values in the sort")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per workload (one sort of ours)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    r = measure(args.n, args.sort_n, args.reps)
    if args.json:
        print(json.dumps(r))
        return
    print(f"three processes each, TLS on loopback, {os.cpu_count()} CPUs; SPU {SPU_VERSION} (ABY3, FM64, f = 16)")
    print(f"{'workload':<12}{'n':>11}{'SPU':>11}{'ours':>11}{'SPU / ours':>12}")
    for name in ("fixed_mul", "less_than", "secure_sum", "median", "sort"):
        w = r[name]
        print(
            f"{name:<12}{w['n']:>11,}{w['spu_seconds']:>10.3f}s{w['ours_seconds']:>10.3f}s{w['ours_faster_by']:>11.2f}x"
        )


if __name__ == "__main__":
    main()
