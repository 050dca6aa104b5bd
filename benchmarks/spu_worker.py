"""One SecretFlow SPU party for ``benchmarks/vs_spu.py`` (runs in ``.venv-spu``, not ours).

    .venv-spu/bin/python benchmarks/spu_worker.py CONFIG.json

CONFIG: ``rank``, ``ports`` (three loopback ports), optional ``tls`` (``cert``, ``key``, ``ca``
file paths: brpc then speaks TLS between the parties) and ``jobs`` (``name``, ``n``, ``seed``,
``reps``). SPU 0.9.5 runs ABY3 over Z_2^64 with 16 fractional bits, as our engine. For each
job every party derives the same plaintext from the seed (for compiling and checking),
party 0 splits it into shares (``Io.make_shares``) and sends each party its own over the
link; the clock runs around ``Runtime.run`` only, after a barrier, so SPU's figures exclude
input sharing and output. The first run's result is gathered at party 0 and checked
against numpy. One JSON line per job: ``{"job": k, "seconds": [...], "ok": true}``.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import spu
from spu import libspu
from spu.utils import frontend

FUNCTIONS: dict[str, tuple[int, Callable[..., Any], Callable[..., Any]]] = {
    # name: (inputs, the SPU function, numpy's answer)
    "fixed_mul": (2, lambda x, y: x * y, lambda x, y: x * y),
    "less_than": (2, lambda x, y: x < y, lambda x, y: x < y),
    "secure_sum": (3, lambda a, b, c: a + b + c, lambda a, b, c: a + b + c),
    "median": (1, lambda x: _middle(jnp.sort(x)), np.median),
    "sort": (1, jnp.sort, np.sort),
}


def _middle(s: Any) -> Any:
    """The median of sorted values (jnp.median mixes dtypes, which SPU 0.9.5 refuses)."""
    n = s.shape[0]
    return (s[(n - 1) // 2] + s[n // 2]) * 0.5


def _pack(share: Any) -> bytes:
    parts = [share.meta, *share.share_chunks]
    return struct.pack("<Q", len(parts)) + b"".join(struct.pack("<Q", len(p)) + p for p in parts)


def _unpack(data: bytes) -> Any:
    (count,), at = struct.unpack_from("<Q", data), 8
    parts = []
    for _ in range(count):
        (size,) = struct.unpack_from("<Q", data, at)
        parts.append(data[at + 8 : at + 8 + size])
        at += 8 + size
    share = libspu.Share()
    share.meta, share.share_chunks = parts[0], parts[1:]
    return share


def _inputs(name: str, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.round(rng.uniform(-100, 100, n), 4) for _ in range(FUNCTIONS[name][0])]


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    rank = int(config["rank"])
    desc = libspu.link.Desc()
    for i, port in enumerate(config["ports"]):
        desc.add_party(f"p{i}", f"127.0.0.1:{port}")
    desc.recv_timeout_ms = 1_800_000
    desc.http_max_payload_size = 1 << 30
    if config.get("tls"):
        tls = config["tls"]
        desc.enable_ssl = True
        for opts in (desc.client_ssl_opts, desc.server_ssl_opts):
            opts.cert.certificate_path, opts.cert.private_key_path = tls["cert"], tls["key"]
            opts.verify.ca_file_path, opts.verify.verify_depth = tls["ca"], 1
    lctx = libspu.link.create_brpc(desc, rank)
    rt_config = libspu.RuntimeConfig(
        protocol=libspu.ProtocolKind.ABY3, field=libspu.FieldType.FM64, fxp_fraction_bits=16
    )
    runtime = spu.Runtime(lctx, rt_config)
    io = spu.Io(3, rt_config)
    for k, job in enumerate(config["jobs"]):
        name, n, seed, reps = job["name"], int(job["n"]), int(job["seed"]), int(job.get("reps", 1))
        plain = _inputs(name, n, seed)
        names = [f"in{i}" for i in range(len(plain))]
        executable, _ = frontend.compile(
            frontend.Kind.JAX,
            FUNCTIONS[name][1],
            plain,
            {},
            names,
            [libspu.Visibility.VIS_SECRET] * len(plain),
            lambda outs: [f"out{i}" for i in range(len(outs))],
        )
        seconds = []
        for rep in range(reps):
            if rank == 0:
                shares = [io.make_shares(x, libspu.Visibility.VIS_SECRET) for x in plain]
                for peer in (1, 2):
                    lctx.send(peer, b"".join(struct.pack("<Q", len(b)) + b for b in (_pack(s[peer]) for s in shares)))
                mine = [s[0] for s in shares]
            else:
                blob, at, mine = lctx.recv(0), 0, []
                while at < len(blob):
                    (size,) = struct.unpack_from("<Q", blob, at)
                    mine.append(_unpack(blob[at + 8 : at + 8 + size]))
                    at += 8 + size
            for input_name, share in zip(names, mine, strict=True):
                runtime.set_var(input_name, share)
            lctx.barrier()
            start = time.perf_counter()
            runtime.run(executable)
            seconds.append(time.perf_counter() - start)
            if rep == 0:
                out = _pack(runtime.get_var(executable.output_names[0]))
                gathered = lctx.gather(out.hex(), 0)
                if rank == 0:
                    got = io.reconstruct([_unpack(bytes.fromhex(g)) for g in gathered])
                    want = FUNCTIONS[name][2](*plain)
                    error = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)))
                    if error > 1e-2:  # 16 fractional bits on inputs of magnitude up to 100
                        print(json.dumps({"job": k, "ok": False, "error": f"SPU's answer is {error:g} off numpy's"}))
                        sys.stdout.flush()
                        return
        print(json.dumps({"job": k, "ok": True, "seconds": seconds}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
