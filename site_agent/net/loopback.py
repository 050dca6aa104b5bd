"""Run one committee member as a process: the entry point of the net tests and benchmarks.

``python -m site_agent.net.loopback CONFIG.json`` starts a :class:`Mesh` with the
member's certificates, runs the listed jobs in order and prints one JSON line per job
(``{"job": k, "ok": true, "seconds": ...}`` or ``{"ok": false, "error": ..., "peer": ...}``),
then ``{"done": true}``. Inputs are generated from seeds so every member (and the test that
checks the answers against numpy) derives the same plaintext; opened results are written
to ``OUT.m<index>.npy`` (``OUT.s<k>.m<index>.npy`` for concurrent sessions) when the job
names ``out``. Not a production entry point: the daemon owns that.

Jobs (``op``): ``mul_fixed`` (n values, x*y opened), ``lt`` (n comparisons x < y, opened),
``open`` (shares of x opened), ``median`` (the median of x, opened), ``sort`` (x sorted,
opened unless ``open_result`` is false),
``sum3`` (each member inputs n values with ``input_from``, the sum is opened),
``sum3_one_round`` (the three inputs in one round), ``linked_counts`` (each member inputs
the linkage keys of n persons, :func:`site_agent.linkage.dedup.synthetic_sites`; the distinct
counts are opened), ``slow`` (many small rounds; for
failure tests), ``sync`` (a one-word opening, used as a barrier), ``concurrent`` (several
``mul_fixed`` sessions at once).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..crypto.certs import client_context, server_context
from ..errors import MpcError, PeerFailure
from ..linkage.dedup import committee_counts, synthetic_sites
from ..mpc.arithmetic import input_all, input_from, mul, mul_fixed, open_all
from ..mpc.boolean import lt
from ..mpc.fixed import FixedPoint
from ..mpc.order import median, sort
from ..mpc.party import Party, Protocol
from ..mpc.ring import U64
from ..mpc.shares import AShare
from ..mpc.sharing import deal
from ..tuning import tune_allocator
from .mesh import Mesh, members_from

FP = FixedPoint(16)
WITHHELD = np.uint64(2**64 - 1)
"""A count the release rule withheld, in an opened ``linked_counts`` output."""


NAMES = ("hospital-a", "hospital-b", "neutral-c")
"""Certificate names of the three members in the tests and benchmarks."""


def free_ports(k: int) -> list[int]:
    """``k`` distinct TCP ports on loopback that nothing listens on right now."""
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def member_configs(
    jobs: list[dict[str, Any]], tls: list[dict[str, str]], timeout: float, ports: list[int] | None = None
) -> list[dict[str, Any]]:
    """The three members' JSON configs: ``tls[i]`` holds member i's cert, key and ca paths."""
    listed = members(ports or free_ports(3))
    return [{"index": i, "members": listed, "jobs": jobs, "timeout": timeout, **tls[i]} for i in range(3)]


def members(ports: list[int]) -> list[dict[str, Any]]:
    """The three members as plain dicts (``members_from`` turns them into ``Member``s)."""
    return [{"index": i, "name": NAMES[i], "host": "127.0.0.1", "port": ports[i]} for i in range(3)]


def plain_inputs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The test inputs x, y (reals in [-100, 100]) for a seed."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-100, 100, n), rng.uniform(-100, 100, n)


def member_vector(seed: int, member: int, n: int) -> np.ndarray:
    """The integers member ``member`` inputs in the sum jobs."""
    return np.random.default_rng([seed, member]).integers(-(2**40), 2**40, n)


def shares_of(values: U64, seed: int, index: int) -> AShare:
    """This member's share of a dealing every member reproduces from the seed."""
    return deal(values, np.random.default_rng([seed, 99]))[index]


def _program(job: dict[str, Any], index: int) -> Callable[[Party], Protocol[U64]]:
    op, n, seed = job["op"], int(job.get("n", 1)), int(job.get("seed", 0))
    if op in ("mul_fixed", "lt", "open", "concurrent"):
        x, y = plain_inputs(seed, n)
        xs, ys = shares_of(FP.encode(x), seed, index), shares_of(FP.encode(y), seed + 1, index)
        if op == "open":

            def opened(p: Party) -> Protocol[U64]:
                return (yield from open_all(p, xs))

            return opened
        do_open = bool(job.get("open_result", True))

        def product(p: Party) -> Protocol[U64]:
            z = yield from (lt(p, xs, ys) if op == "lt" else mul_fixed(p, xs, ys, FP.frac_bits))
            if do_open:
                return (yield from open_all(p, z))
            first: U64 = z.v[0]
            return first

        return product
    if op == "median":
        xs = shares_of(FP.encode(plain_inputs(seed, n)[0]), seed, index).reshape(1, n)

        def middle(p: Party) -> Protocol[U64]:
            return (yield from open_all(p, (yield from median(p, xs, FP))))

        return middle
    if op == "sort":
        xs = shares_of(FP.encode(plain_inputs(seed, n)[0]), seed, index)
        open_sorted = bool(job.get("open_result", True))

        def ordered(p: Party) -> Protocol[U64]:
            s = yield from sort(p, xs)
            if open_sorted:
                return (yield from open_all(p, s))
            first: U64 = s.v[0]
            return first

        return ordered
    if op in ("sum3", "sum3_one_round"):
        mine = member_vector(seed, index, n).astype(np.int64).view(np.uint64)

        def sum3(p: Party) -> Protocol[U64]:
            if op == "sum3":
                total = None
                for owner in (0, 1, 2):
                    s = yield from input_from(p, owner, mine if owner == p.index else None, (n,))
                    total = s if total is None else total + s
                assert total is not None
            else:
                parts = yield from input_all(p, mine, (n, n, n))
                total = parts[0] + parts[1] + parts[2]
            return (yield from open_all(p, total))

        return sum3
    if op == "linked_counts":  # n persons per member (synthetic_sites), distinct counts opened
        mine = synthetic_sites(n, seed)[index]

        def linked(p: Party) -> Protocol[U64]:
            result = yield from committee_counts(p, mine, 3, int(job.get("k", 5)))
            return np.array([WITHHELD if v is None else v for v in result.values], dtype=np.uint64)

        return linked
    if op == "slow":
        rounds = int(job.get("rounds", 1000))
        xs = shares_of(np.ones(n, dtype=np.uint64), seed, index)

        def slow(p: Party) -> Protocol[U64]:
            z = xs
            for _ in range(rounds):
                z = yield from mul(p, z, xs)
            return (yield from open_all(p, z))

        return slow
    if op == "sync":
        one = shares_of(np.ones(1, dtype=np.uint64), 0, index)

        def sync(p: Party) -> Protocol[U64]:
            return (yield from open_all(p, one))

        return sync
    raise ValueError(f"unknown job {op!r}")


async def _main(config: dict[str, Any]) -> None:
    index = int(config["index"])
    mesh = Mesh(
        index,
        members_from(config["members"]),
        server_context(config["cert"], config["key"], config["ca"]),
        client_context(config["cert"], config["key"], config["ca"]),
        max_frame=int(config.get("max_frame", 64 * 2**20)),
    )
    timeout = float(config.get("timeout", 10.0))
    await mesh.start()
    _emit({"ready": True, "index": index})
    try:
        for k, job in enumerate(config["jobs"]):
            await _run_job(mesh, k, job, index, timeout)
    finally:
        await mesh.close()
    _emit({"done": True})


async def _run_job(mesh: Mesh, k: int, job: dict[str, Any], index: int, timeout: float) -> None:
    session = bytes.fromhex(job["session"])
    try:
        if job["op"] == "concurrent":
            count = int(job.get("count", 2))
            sessions = [bytes([s]) + session[1:] for s in range(count)]
            jobs = [dict(job, seed=int(job["seed"]) + 10 * s) for s in range(count)]
            t0 = time.perf_counter()
            outs = await asyncio.gather(
                *(mesh.run(sid, _program(j, index), timeout) for sid, j in zip(sessions, jobs, strict=True))
            )
            seconds = time.perf_counter() - t0
            for s, out in enumerate(outs):
                if job.get("out"):
                    np.save(f"{job['out']}.s{s}.m{index}.npy", out)
        else:
            program = _program(job, index)
            t0 = time.perf_counter()
            out = await mesh.run(session, program, timeout)
            seconds = time.perf_counter() - t0
            if job.get("out"):
                np.save(f"{job['out']}.m{index}.npy", out)
        _emit({"job": k, "ok": True, "seconds": seconds})
    except MpcError as exc:
        peer = exc.peer if isinstance(exc, PeerFailure) else None
        _emit({"job": k, "ok": False, "error": type(exc).__name__, "message": str(exc), "peer": peer})


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = json.loads(Path(args[0]).read_text())
    tune_allocator()
    asyncio.run(_main(config))


if __name__ == "__main__":
    main()
