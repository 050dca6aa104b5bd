"""A TCP proxy on loopback that adds wide-area latency and a bandwidth limit (no netem needed).

    python benchmarks/wanproxy.py --rtt-ms 20 --mbit 100 --map 7101=127.0.0.1:7001 [--map ...]

Each ``--map LISTEN=HOST:PORT`` listens on 127.0.0.1:LISTEN and forwards every connection to
HOST:PORT (loopback only). Every direction of every connection is a link of its own with a
one-way delay of half the round-trip time and a rate of ``--mbit`` megabits per second: a
chunk read at time t starts on the link when the link is free (at max(t, end of the previous
chunk)), takes len * 8 / rate to serialise, and is written out one propagation delay after
its serialisation ends. So a request and its reply take one RTT plus their serialisation,
and a bulk transfer runs at the rate. The bytes are relayed untouched (TLS passes through).

It prints ``ready`` once every listener is up and runs until SIGTERM or SIGINT.
:class:`Proxies` starts it as a child process for a benchmark or a test. The proxy adds
its own small cost (a read, a timer and a write per chunk of at most 64 KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

CHUNK = 64 * 1024
QUEUED_CHUNKS = 256  # at most 16 MiB in flight per direction: the reader waits beyond that


class Link:
    """One direction of one connection: delay and rate, as in the module docstring."""

    def __init__(self, one_way_s: float, bits_per_s: float) -> None:
        self.one_way_s = one_way_s
        self.bits_per_s = bits_per_s

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUED_CHUNKS)

        async def receive() -> None:
            try:
                while data := await reader.read(CHUNK):
                    await queue.put((loop.time(), data))
            except ConnectionError:
                pass
            await queue.put(None)

        async def deliver() -> None:
            free = 0.0
            while (item := await queue.get()) is not None:
                arrived, data = item
                free = max(arrived, free) + len(data) * 8 / self.bits_per_s
                wait = free + self.one_way_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        receiving = asyncio.ensure_future(receive())
        try:
            await deliver()
        except ConnectionError:
            receiving.cancel()
        finally:
            await asyncio.gather(receiving, return_exceptions=True)


async def serve(routes: Mapping[int, tuple[str, int]], rtt_s: float, mbit: float) -> None:
    """Listen on every route's port and relay each connection through two :class:`Link` s."""

    def handler(target: tuple[str, int]):  # type: ignore[no-untyped-def]
        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            try:
                server_r, server_w = await asyncio.open_connection(*target)
            except OSError:
                client_w.close()
                return
            up, down = Link(rtt_s / 2, mbit * 1e6), Link(rtt_s / 2, mbit * 1e6)
            # On shutdown or a reset, close both sides (asyncio's stream callback trips on a cancelled task).
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await asyncio.gather(up.relay(client_r, server_w), down.relay(server_r, client_w))
            for w in (client_w, server_w):
                w.close()

        return handle

    servers = [await asyncio.start_server(handler(t), "127.0.0.1", port) for port, t in routes.items()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def parse_route(text: str) -> tuple[int, tuple[str, int]]:
    """``LISTEN=HOST:PORT`` with a loopback host."""
    listen, _, target = text.partition("=")
    host, _, port = target.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise argparse.ArgumentTypeError(f"{text!r}: the proxy forwards to loopback only")
    return int(listen), (host.strip("[]"), int(port))


class Proxies:
    """The proxy as a child process for the duration of a ``with`` block."""

    def __init__(self, routes: Mapping[int, tuple[str, int]], rtt_ms: float, mbit: float) -> None:
        self.args = [sys.executable, str(Path(__file__).resolve()), "--rtt-ms", str(rtt_ms), "--mbit", str(mbit)]
        for port, (host, target) in routes.items():
            self.args += ["--map", f"{port}={host}:{target}"]
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Proxies:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError("the WAN proxy did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt-ms", type=float, required=True, help="round-trip time added to every connection")
    ap.add_argument("--mbit", type=float, default=100.0, help="rate of each direction, megabits per second")
    ap.add_argument("--map", type=parse_route, action="append", required=True, help="LISTEN=HOST:PORT")
    args = ap.parse_args(argv)
    asyncio.run(serve(dict(args.map), args.rtt_ms / 1000, args.mbit))


if __name__ == "__main__":
    main()
