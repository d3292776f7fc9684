"""The ``pcomm`` command line.

    pcomm coordinator --listen HOST:PORT [--heartbeat-timeout SECONDS] [--run NAME]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .errors import PcommError


def _coordinator(args: argparse.Namespace) -> int:
    from .coordinator import Coordinator

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    coord = Coordinator(listen=args.listen, heartbeat_timeout=args.heartbeat_timeout, run=args.run).start()
    print(f"pcomm coordinator for run '{args.run}' listening on {coord.address}", flush=True)
    last = None
    try:
        while not stop.wait(0.5):
            now = (coord.epoch, len(coord.peers), coord.pending_peers)
            if now != last:
                print(f"epoch {now[0]}: {now[1]} peers, {now[2]} pending", flush=True)
                last = now
    finally:
        coord.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcomm", description="pcomm: fault-tolerant collective communication")
    sub = parser.add_subparsers(dest="command", required=True)
    coord = sub.add_parser("coordinator", help="run a coordinator for one run")
    coord.add_argument("--listen", default="0.0.0.0:29500", help="HOST:PORT to listen on (default 0.0.0.0:29500)")
    coord.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="drop a peer silent for this long (default 5)",
    )
    coord.add_argument("--run", default="default", help="run name peers must use (default 'default')")
    coord.set_defaults(func=_coordinator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PcommError as e:
        print(f"pcomm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
