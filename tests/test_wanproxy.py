"""``benchmarks/wanproxy.py``: bytes pass untouched, each round trip takes at least the RTT, and
a bulk transfer takes at least its size over the rate (lower bounds only: load only adds)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from wanproxy import Proxies

from site_agent.net.loopback import free_ports


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed early"
        out += chunk
    return bytes(out)


def test_round_trips_take_the_rtt_and_transfers_the_rate() -> None:
    srv, target = _echo_server()
    port = free_ports(1)[0]
    with (
        srv,
        Proxies({port: ("127.0.0.1", target)}, rtt_ms=100, mbit=8),
        socket.create_connection(("127.0.0.1", port)) as c,
    ):
        for message in (b"ping", bytes(range(256)) * 4):
            start = time.perf_counter()
            c.sendall(message)
            assert _recv_exactly(c, len(message)) == message
            assert time.perf_counter() - start >= 0.1 * 0.98  # half the RTT each way (timer slack)
        bulk = bytes(200_000)
        start = time.perf_counter()
        c.sendall(bulk)
        assert _recv_exactly(c, len(bulk)) == bulk
        assert time.perf_counter() - start >= len(bulk) * 8 / 8e6  # 0.2 s at 8 Mbit/s
