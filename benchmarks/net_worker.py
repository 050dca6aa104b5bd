"""One committee member of ``net_engine.py``: ``site_agent.net.loopback`` with a comparison job.

``python benchmarks/net_worker.py CONFIG.json`` runs exactly as ``python -m site_agent.net.loopback
CONFIG.json`` (same config, same JSON lines), and also knows the job ``lt``: n elementwise
comparisons x < y (``boolean.lt``) of shared fixed-point values drawn as in ``mul_fixed``, the
result opened when the job says ``open_result`` (and saved to ``OUT.m<index>.npy`` with ``out``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from site_agent.mpc.arithmetic import open_all
from site_agent.mpc.boolean import lt
from site_agent.mpc.party import Party, Protocol
from site_agent.mpc.ring import U64
from site_agent.net import loopback

LOOPBACK_PROGRAM = loopback._program


def program(job: dict[str, Any], index: int) -> Callable[[Party], Protocol[U64]]:
    """The job's protocol: ``lt`` here, every other job as ``loopback`` defines it."""
    if job["op"] != "lt":
        return LOOPBACK_PROGRAM(job, index)
    n, seed = int(job["n"]), int(job["seed"])
    x, y = loopback.plain_inputs(seed, n)
    xs = loopback.shares_of(loopback.FP.encode(x), seed, index)
    ys = loopback.shares_of(loopback.FP.encode(y), seed + 1, index)
    do_open = bool(job.get("open_result", True))

    def less(p: Party) -> Protocol[U64]:
        z = yield from lt(p, xs, ys)
        if do_open:
            return (yield from open_all(p, z))
        first: U64 = z.v[0]
        return first

    return less


if __name__ == "__main__":
    loopback._program = program  # loopback's job runner looks its programs up here
    loopback.main(sys.argv[1:])
