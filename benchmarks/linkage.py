"""Record linkage benchmark: linkage keys over real agents, and the distinct count on shares.

    python benchmarks/linkage.py [--per-site 100000] [--json] [--skip-prepare] [--cohort-only]

Data: three sites of ``--per-site`` persons each, half of every site's persons seen at two or
more sites, a tenth of them at all three (``site_agent.linkage.dedup.synthetic_sites``); the
ground truth is pandas on the pooled identifiers.

* **prepare** (over agents): a local consortium (``mpc_jupyter.demo.consortium``) whose three
  sites serve a Parquet table with a 20-digit ``national_id`` per person; each member runs
  ``mpc-site-agent linkage keygen``, the three agents start, and the three sites run
  ``mpc-site-agent linkage prepare`` at the same time (as they would, each at its hospital).
  Reported per site: its wall time and its steps (read, blind, the members' answers, unblind),
  and the bytes it sends and receives (32 per person and member each way, plus framing). The
  keys written are then checked: the distinct count on them must equal pandas. Then the
  analyst's ``SELECT COUNT(DISTINCT PERSON) FROM patients`` over the three agents, timed from
  the call until the DataFrame is back (each member reads its keys, announces its size, inputs
  its keys; the shares of the counts go to the analyst), twice.
* **OPRF steps** alone: microseconds per identifier to blind, to evaluate (one member) and to
  unblind, on 5,000 identifiers in this process.
* **distinct count**: the three sites' keys as shares, sorted and compared on shares, the
  release rule applied, the counts opened (``site_agent.linkage.dedup``). In one process
  (``run_in_memory``, inputs dealt beforehand) and over mutual TLS between three
  ``site_agent.net.loopback`` processes (each member inputs its own keys; the figure is the
  slowest member's session time, key set-up included). Words sent per member are counted by
  the engine.
* **linked cohort** (``--cohort-only`` runs this alone): the same persons, a third of each
  site's persons in its cohort table and 1 to 3 outcome rows per person at every site holding
  it (``site_agent.linkage.cohort.synthetic_rows``); linked persons, rows and the sum of the
  value on shares, the release rule and the opening (``site_agent.linkage.cohort``), in one
  process, checked against pandas on the pooled rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from mpc_jupyter.client import Consortium
from mpc_jupyter.demo.consortium import AgentProcesses, SiteSpec, TableSpec, build_consortium
from site_agent.crypto.certs import issue_cert, make_ca
from site_agent.linkage import cohort, dedup, oprf
from site_agent.mpc.party import run_in_memory
from site_agent.net.loopback import NAMES, WITHHELD, member_configs

ROOT = Path(__file__).resolve().parents[1]
SITES = ("north", "central", "south")
SCHEMA_TOML = """
[tables.patients]
pid = { type = "text", person = true }
age = "integer"

[linkage]
table = "patients"
identifier = ["national_id"]
"""
SEED = 21
QUERY_RUNS = 2


def truth(site_keys: list[np.ndarray]) -> list[int]:
    """Distinct persons and persons at exactly 1, 2 and 3 sites: pandas on the pooled keys."""
    pooled = pd.DataFrame({"key": np.concatenate(site_keys), "site": np.repeat([0, 1, 2], [k.size for k in site_keys])})
    per = pooled.groupby("key")["site"].nunique()
    return [int(per.size), int((per == 1).sum()), int((per == 2).sum()), int((per >= 3).sum())]


def oprf_rates(n: int = 5000) -> dict[str, float]:
    """Microseconds per identifier of each OPRF step, in this process alone (no network)."""
    ids = [f"{j:020d}".encode() for j in range(n)]
    shares = [oprf.new_key_share() for _ in range(3)]
    t0 = time.perf_counter()
    blinded = oprf.blind(ids)
    t1 = time.perf_counter()
    answers = [oprf.evaluate(k, blinded.message) for k in shares]
    t2 = time.perf_counter()
    oprf.finalize(blinded, answers)
    t3 = time.perf_counter()
    return {
        "points": n,
        "blind_us": (t1 - t0) / n * 1e6,
        "evaluate_us_per_member": (t2 - t1) / n / 3 * 1e6,
        "finalize_us": (t3 - t2) / n * 1e6,
    }


def in_process(site_keys: list[np.ndarray], expected: list[int]) -> dict[str, Any]:
    shares = dedup.deal_sites(site_keys)
    t0 = time.perf_counter()
    results, stats = run_in_memory(lambda p: dedup.linked_counts(p, *shares[p.index], 3, 5))
    seconds = time.perf_counter() - t0
    if results[0].values != expected:
        raise SystemExit(f"in-process counts {results[0].values} differ from pandas {expected}")
    return {
        "seconds": seconds,
        "rounds": stats[0].rounds,
        "bytes_sent_per_member": [s.bytes_sent for s in stats],
    }


def linked_cohort(per_site: int) -> dict[str, Any]:
    """COUNT(DISTINCT PERSON), COUNT(*) and SUM(a.x) of a linked cohort, in one process."""
    sites = cohort.synthetic_rows(per_site, SEED)
    in_cohort = set(np.concatenate([s[0] for s in sites]).tolist())
    pooled = pd.DataFrame({"key": np.concatenate([s[1] for s in sites]), "x": np.concatenate([s[2] for s in sites])})
    linked = pooled[pooled["key"].isin(in_cohort)]
    expected = [int(linked["key"].nunique()), len(linked), int(linked["x"].sum())]
    records = [cohort.site_records(c, o, [np.ones(o.size, dtype=np.int64), x]) for c, o, x in sites]
    shares = cohort.deal_sites(records)
    t0 = time.perf_counter()
    results, stats = run_in_memory(lambda p: cohort.linked_aggregates(p, shares[p.index], 3, 5))
    seconds = time.perf_counter() - t0
    if results[0] != expected:
        raise SystemExit(f"linked cohort {results[0]} differs from pandas {expected}")
    return {
        "seconds": seconds,
        "records": sum(sum(r.sizes) for r in records),
        "outcome_rows": len(pooled),
        "truth": dict(zip(["linked persons", "linked rows", "sum"], expected, strict=True)),
        "rounds": stats[0].rounds,
        "bytes_sent_per_member": [s.bytes_sent for s in stats],
    }


def over_tls(per_site: int, expected: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        out = str(d / "counts")
        jobs = [
            {"op": "sync", "session": f"{0:032x}"},
            {"op": "linked_counts", "n": per_site, "seed": SEED, "session": f"{1:032x}", "out": out},
        ]
        ca_key, ca_cert = make_ca("bench CA")
        (d / "ca.crt").write_bytes(ca_cert)
        tls = []
        for i in range(3):
            key, cert = issue_cert(ca_key, ca_cert, NAMES[i], ["127.0.0.1"], client=True, server=True)
            (d / f"{i}.key").write_bytes(key)
            (d / f"{i}.crt").write_bytes(cert)
            tls.append({"cert": str(d / f"{i}.crt"), "key": str(d / f"{i}.key"), "ca": str(d / "ca.crt")})
        procs = []
        for i, cfg in enumerate(member_configs(jobs, tls, timeout=600)):
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
        lines = [[json.loads(s) for s in o.splitlines() if s.strip()] for o in outs]
        job = [next(x for x in m if x.get("job") == 1) for m in lines]
        if not all(x["ok"] for x in job):
            raise SystemExit(f"the distinct count over TLS failed: {job}")
        for i in range(3):
            got = [None if v == WITHHELD else int(v) for v in np.load(f"{out}.m{i}.npy")]
            if got != expected:
                raise SystemExit(f"member {i} opened {got}, pandas says {expected}")
        return {"seconds": max(x["seconds"] for x in job)}


def prepare(site_keys: list[np.ndarray], expected: list[int]) -> dict[str, Any]:
    """Linkage keys over agents at three sites at once; the distinct count on the written keys."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        d = Path(tmp)
        specs = []
        for s, site in enumerate(SITES):
            path = d / f"{site}.parquet"
            ids = site_keys[s]
            frame = pd.DataFrame(
                {
                    "pid": [f"{site[0]}{j:07d}" for j in range(ids.size)],
                    "national_id": [f"{int(v):020d}" for v in ids],
                    "age": (ids % np.uint64(90)).astype(np.int64),
                }
            )
            con = duckdb.connect()
            con.register("frame", frame)
            con.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
            con.close()
            specs.append(SiteSpec(site, {"patients": TableSpec(path, identifiers=["national_id"])}))
        with contextlib.redirect_stdout(sys.stderr):
            consortium_file = build_consortium(d / "consortium", specs, SCHEMA_TOML)
        root = consortium_file.parent
        tool = [sys.executable, "-m", "site_agent.cli.agent"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for site in SITES:
            toml = str(root / "sites" / site / "agent.toml")
            subprocess.run([*tool, "linkage", "keygen", "--config", toml], check=True, env=env, capture_output=True)
        stack.enter_context(AgentProcesses(root, SITES))
        t0 = time.perf_counter()
        procs = {
            site: subprocess.Popen(
                [*tool, "linkage", "prepare", "--config", str(root / "sites" / site / "agent.toml")],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for site in SITES
        }
        printed = {site: p.communicate(timeout=3600)[0] for site, p in procs.items()}
        wall = time.perf_counter() - t0
        sites: dict[str, Any] = {}
        written = []
        for s, site in enumerate(SITES):
            if procs[site].returncode != 0:
                raise SystemExit(f"prepare at {site} failed: {printed[site]}")
            steps = {k: float(v) for k, v in re.findall(r"(\w+) ([0-9.]+) s", printed[site])}
            n = site_keys[s].size
            sites[site] = {
                "persons": n,
                "steps_seconds": steps,
                "bytes_sent": 3 * 32 * n,
                "bytes_received": 3 * 32 * n,
            }
            con = duckdb.connect(str(root / "sites" / site / "linkage.duckdb"), read_only=True)
            written.append(con.execute("SELECT key FROM _linkage").fetchnumpy()["key"].view(np.uint64))
            con.close()
        if truth(written) != expected:
            raise SystemExit(f"the keys written count {truth(written)}, the identifiers {expected}")
        client = stack.enter_context(Consortium.connect(consortium_file, timeout=1800))
        seconds = []
        for _ in range(QUERY_RUNS):
            t0 = time.perf_counter()
            frame = client.query("SELECT COUNT(DISTINCT PERSON) FROM patients")
            seconds.append(time.perf_counter() - t0)
            if frame.iloc[0].tolist() != expected:
                raise SystemExit(f"COUNT(DISTINCT PERSON) over agents: {frame.iloc[0].tolist()}, not {expected}")
        return {
            "wall_seconds_three_sites_at_once": wall,
            "sites": sites,
            "count_distinct_person_over_agents_seconds": seconds,
        }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-site", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-prepare", action="store_true")
    ap.add_argument("--cohort-only", action="store_true", help="the linked cohort figure alone")
    args = ap.parse_args(argv)
    if args.cohort_only:
        figure = {"per_site": args.per_site, "load_average": os.getloadavg(), "cpus": os.cpu_count()}
        figure["linked_cohort_in_process"] = linked_cohort(args.per_site)
        figure["load_average_after"] = os.getloadavg()
        print(json.dumps(figure, indent=None if args.json else 2))
        return
    site_keys = dedup.synthetic_sites(args.per_site, SEED)
    expected = truth(site_keys)
    report: dict[str, Any] = {
        "per_site": args.per_site,
        "truth": dict(zip(dedup.labels(3), expected, strict=True)),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    report["oprf_per_identifier"] = oprf_rates()
    report["distinct_in_process"] = in_process(site_keys, expected)
    report["distinct_over_tls"] = over_tls(args.per_site, expected)
    report["linked_cohort_in_process"] = linked_cohort(args.per_site)
    if not args.skip_prepare:
        report["prepare_over_agents"] = prepare(site_keys, expected)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
