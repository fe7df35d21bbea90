"""``python -m django_talonone.sandbox``: serve the sandbox until interrupted.

Prints ``listening on http://HOST:PORT`` once the port is bound, and exits 0 on SIGINT or SIGTERM
(saving the state first when ``--state FILE`` is given).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from . import DEFAULT_API_KEY, Sandbox


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox from the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    sandbox = Sandbox(
        campaigns=args.campaigns,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        seed=args.seed,
        state_file=args.state,
    )
    try:
        sandbox.start()
    except (ValueError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"listening on {sandbox.url}", flush=True)
    try:
        # wait() with a timeout keeps the main thread responsive to signals on every platform.
        while not stop.wait(1.0):
            pass
    finally:
        sandbox.stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m django_talonone.sandbox",
        description="Serve a local, stateful fake of Talon.One's Integration API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--campaigns", metavar="FILE", help="campaigns JSON file to load")
    parser.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        metavar="KEY",
        help=f"API key clients must send (default: {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--state", metavar="FILE", help="load the state from FILE on start, save it on exit"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="N",
        help="answer 429 with Retry-After beyond N API requests per second",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for fault injection (0)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
