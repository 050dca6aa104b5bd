"""``mpc-relay``: run the relay that outbound-only agents and analysts reach each other through.

* ``serve --config relay.toml``: foreground daemon (systemd-friendly), JSON log lines on stdout,
  clean stop on SIGTERM/SIGINT. ``mpc-consortium add-relay`` writes ``relay.toml`` and the
  relay's certificate. See docs/deploy.md for its place in a hospital network.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ..agent.service import configure_logging
from ..errors import MpcError
from ..relay.config import load_relay
from ..relay.server import Relay


def cmd_serve(args: argparse.Namespace) -> int:
    configure_logging()
    try:
        config = load_relay(args.config)
        relay = Relay.from_config(config)
    except MpcError as exc:
        print(f"mpc-relay: error: {exc}", file=sys.stderr)
        return 1

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await relay.serve(config.listen.host, config.listen.port, stop)

    asyncio.run(main())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpc-relay", description="Relay end-to-end TLS sessions between members.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay in the foreground")
    serve.add_argument("--config", required=True, help="the relay's relay.toml")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
