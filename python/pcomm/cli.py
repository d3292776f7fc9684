"""The ``pcomm`` command line.

    pcomm coordinator --listen HOST:PORT [--secret-file PATH | --insecure]
                      [--heartbeat-timeout SECONDS] [--straggler-timeout SECONDS] [--run NAME]
                      [--state-dir DIR] [--standby --peer-of HOST:PORT | --peer-of HOST:PORT]
                      [--gather-window SECONDS]
                      [--relay HOST:PORT ...] [--announce RUN --bootstrap MULTIADDR ... [--advertise HOST:PORT]]
    pcomm relay --listen HOST:PORT [--secret-file PATH | --insecure] [--max-circuits N]
                [--rate BYTES_PER_S] [--announce RUN --bootstrap MULTIADDR ... [--advertise HOST:PORT]]
    pcomm dht --listen /ip4/HOST/tcp/PORT [--bootstrap MULTIADDR ...] [--key-file PATH]
    pcomm progress --run RUN --bootstrap MULTIADDR ... [--watch SECONDS] [--secret-file PATH]
    pcomm status (--coordinator HOST:PORT | --run RUN --bootstrap MULTIADDR ...) [--secret-file PATH]
                 [--watch SECONDS]

The run secret comes from --secret-file, else from the file named by $PCOMM_SECRET_FILE.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from .errors import InvalidArgumentError, PcommError

kRelayLookupInterval = 10.0  # seconds between DHT lookups of a run's relays (coordinator)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _add_announce_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--announce and friends, for every server role the DHT can point at."""
    parser.add_argument("--announce", metavar="RUN", help=f"publish this {what} for RUN in the discovery DHT")
    parser.add_argument("--bootstrap", nargs="+", default=[], metavar="MULTIADDR", help="DHT nodes to announce through")
    parser.add_argument("--advertise", metavar="HOST:PORT", help="address to announce (default: the listen address, "
                        "with 0.0.0.0 replaced by the local address that reaches the bootstrap node)")
    parser.add_argument("--key-file", help="DHT identity key file (created if missing; default: a new identity)")


def _add_secret_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--secret-file", metavar="PATH", help="file holding the run secret (default: $PCOMM_SECRET_FILE; "
                        "make one with: openssl rand -hex 32 > run.secret)")
    parser.add_argument("--insecure", action="store_true", help=f"let this {what} listen on a non-loopback address "
                        "without a secret (anyone who reaches it can join the run)")


def _secret_of(args: argparse.Namespace) -> bytes | None:
    from . import _secret

    return _secret.read_file(args.secret_file) if args.secret_file else _secret.resolve(None)


def _start_announcing(kind: str, run: str, listening: str, args: argparse.Namespace):
    """Publishes ``listening`` as this process's ``kind`` for ``run`` when --announce
    was given; returns the node to close at exit (None otherwise)."""
    if args.announce is None:
        return None
    from .discovery.runs import advertised_address, announce

    address = args.advertise or advertised_address(listening, args.bootstrap)
    node, published = announce(kind, run, address, args.bootstrap, key_file=args.key_file, secret=_secret_of(args))
    print(f"announced {address} for run '{run}' on {published.stored_on} DHT nodes", flush=True)
    return node


def _serve(server, kind: str, run: str | None, args: argparse.Namespace, status, tick=None,
           may_announce=lambda: True) -> int:
    """Runs a started server until SIGINT/SIGTERM: announces it in the DHT when asked
    (once may_announce() is true: a standby coordinator waits until it serves), prints
    status() whenever it changes, calls tick(node) every round, then stops it."""
    stop = _stop_on_signals()
    node = None
    try:
        if may_announce():
            node = _start_announcing(kind, run, server.address, args)
        last = None
        while not stop.wait(0.5):
            if node is None and args.announce is not None and may_announce():
                node = _start_announcing(kind, run, server.address, args)
            if tick is not None:
                tick(node)
            now = status()
            if now != last:
                print(now, flush=True)
                last = now
    finally:
        if node is not None:
            node.close()
        server.stop()
    return 0


def _coordinator(args: argparse.Namespace) -> int:
    from .coordinator import Coordinator

    run = args.run
    if args.announce is not None:
        if run not in ("default", args.announce):
            raise InvalidArgumentError(f"--run {run} and --announce {args.announce} name different runs")
        if not args.bootstrap:
            raise InvalidArgumentError("--announce needs --bootstrap MULTIADDR (a `pcomm dht` node)")
        run = args.announce
    if args.standby and not args.peer_of:
        raise InvalidArgumentError("--standby needs --peer-of HOST:PORT (the primary coordinator it watches)")
    coord = Coordinator(listen=args.listen, heartbeat_timeout=args.heartbeat_timeout, run=run,
                        relays=args.relay, secret=_secret_of(args), insecure=args.insecure,
                        straggler_timeout=args.straggler_timeout or None, state_dir=args.state_dir,
                        standby=args.standby, peer_of=args.peer_of, gather_window=args.gather_window).start()
    print(f"pcomm coordinator for run '{run}' listening on {coord.address}", flush=True)  # tests read the last word
    next_lookup = [0.0]

    def find_relays(node) -> None:
        # Relays announced for the run in the DHT join those given with --relay.
        if node is None or time.monotonic() < next_lookup[0]:
            return
        next_lookup[0] = time.monotonic() + kRelayLookupInterval
        try:
            for record in node.lookup("relay", run):
                for address in record.addrs:
                    if address not in coord.relays:
                        coord.add_relay(address)
                        print(f"relay {address} found in the DHT", flush=True)
        except PcommError as e:
            print(f"relay lookup failed: {e}", file=sys.stderr, flush=True)

    def status() -> str:
        role = coord.role
        if role != "serving":
            return f"{role} (watching {args.peer_of})" if role == "standby" and args.peer_of else role
        return (f"term {coord.term}, epoch {coord.epoch}: {len(coord.peers)} peers ({', '.join(coord.peers) or 'none'}), "
                f"{coord.pending_peers} pending")

    return _serve(coord, "coordinator", run, args, status, find_relays, may_announce=lambda: coord.role != "standby")


def _relay(args: argparse.Namespace) -> int:
    from .relay import Relay

    if args.announce is not None and not args.bootstrap:
        raise InvalidArgumentError("--announce needs --bootstrap MULTIADDR (a `pcomm dht` node)")
    relay = Relay(listen=args.listen, max_circuits=args.max_circuits, rate=args.rate, secret=_secret_of(args),
                  insecure=args.insecure).start()
    print(f"pcomm relay listening on {relay.address}", flush=True)

    def status() -> str:
        s = relay.stats()
        return f"{s['circuits_open']} circuits open, {s['circuits_total']} in total, {s['refused']} connections refused"

    return _serve(relay, "relay", args.announce, args, status)


def _dht(args: argparse.Namespace) -> int:
    from .discovery import Node

    stop = _stop_on_signals()
    with Node(listen=args.listen, bootstrap=args.bootstrap, key_file=args.key_file, announce=args.announce_addr).start() as node:
        for addr in node.addrs:
            print(addr, flush=True)
        last = None
        while not stop.wait(1.0):
            now = (node.routing_table_size, node.stored_records)
            if now != last:
                print(f"routing table: {now[0]} nodes, {now[1]} records stored", flush=True)
                last = now
    return 0


def _progress(args: argparse.Namespace) -> int:
    import time

    from .crdt import Store, progress_table
    from .discovery import Node
    from .errors import DiscoveryError

    stop = _stop_on_signals()
    with Node(bootstrap=args.bootstrap, server=False, timeout=args.timeout, secret=_secret_of(args)).start() as node:
        store = Store(args.run, node=node, announce=False)
        try:
            deadline = time.monotonic() + args.timeout
            while store.replicas == 0:
                if time.monotonic() > deadline or stop.is_set():
                    raise DiscoveryError(
                        f"no replica of the store of run '{args.run}' found within {args.timeout} s "
                        "(do its peers publish progress with pcomm.crdt.ProgressBoard?)"
                    )
                time.sleep(0.1)
            pulled_once = False
            while True:
                if _pull(store, args.timeout, stop):
                    pulled_once = True
                elif not pulled_once:
                    raise DiscoveryError(f"none of the {store.replicas} replicas of run '{args.run}' found so far "
                                         f"answered within {args.timeout} s")
                else:
                    print(f"no replica answered within {args.timeout} s: showing what was pulled before",
                          file=sys.stderr, flush=True)
                print(progress_table(store), flush=True)
                if args.watch is None or stop.wait(args.watch):
                    return 0
                print(flush=True)
        finally:
            store.close()


def _pull(store: Any, timeout: float, stop: threading.Event) -> bool:
    """Syncs with the run's replicas until a round brings nothing new. A replica found in
    the DHT may be gone (a peer that died keeps its record until it expires): a round
    nobody answers is retried while the store forgets dead replicas and finds new ones.
    False when no round was answered within ``timeout``."""
    deadline = time.monotonic() + timeout
    answered_any, before = False, -1
    while True:
        left = deadline - time.monotonic()
        if left > 0 and store.sync_now(timeout=left) > 0:
            answered_any = True
            if store.writes == before:
                return True
            before = store.writes
            continue
        if answered_any:
            return True  # a later round failing does not undo what was pulled
        if time.monotonic() >= deadline or stop.is_set():
            return False
        time.sleep(0.3)


def _status(args: argparse.Namespace) -> int:
    from . import _pcomm

    secret = _secret_of(args) or b""
    stop = _stop_on_signals()
    if (args.coordinator is None) == (args.run is None):
        raise InvalidArgumentError("give --coordinator HOST:PORT, or --run NAME --bootstrap MULTIADDR to find it")
    if args.run is not None and not args.bootstrap:
        raise InvalidArgumentError("--run needs --bootstrap MULTIADDR (a `pcomm dht` node) to find the coordinator")
    while True:
        where = args.coordinator
        if where is None:  # looked up again each time: a restarted coordinator may have moved
            from .discovery.runs import find_run

            where = find_run(args.run, args.bootstrap, args.timeout, secret=secret or None).coordinator
        print(status_text(_pcomm.coordinator_status(where, secret, args.timeout), where), flush=True)
        if args.watch is None or stop.wait(args.watch):
            return 0
        print(flush=True)


def status_text(s: dict, where: str) -> str:
    """`pcomm status` output for one StatusReply (as the binding returns it)."""
    role = "" if s["role"] == "serving" else f", {s['role']}"
    lines = [f"run '{s['run']}' (incarnation {s['run_id']}, term {s['term']}{role}) at {where}, epoch {s['epoch']}: "
             f"{len(s['peers'])} peers, {s['pending']} pending, {s['collectives_running']} collectives running",
             f"  {'rank':>4}  {'peer':12}  {'address':21}  {'step':>6}  {'ops':>6}  {'last op':>8}  {'sent/s':>9}  links"]
    for rank, p in enumerate(s["peers"]):
        step = "-" if p["step"] is None else str(p["step"])
        age = "-" if p["last_op_age"] is None else f"{p['last_op_age']:.1f} s"
        links = ", ".join(f"{peer} {kind}" for peer, kind in p["links"]) or "-"
        lines.append(f"  {rank:>4}  {p['peer_id']:12}  {p['address']:21}  {step:>6}  {p['ops_done']:>6}  {age:>8}  "
                     f"{_bytes(p['send_rate']) + '/s':>9}  {links}")
        if "failed" in p["last_op"]:
            lines.append(f"        last op {p['last_op']}")
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def build_parser() -> argparse.ArgumentParser:
    from . import PROTOCOL_VERSION, __version__

    parser = argparse.ArgumentParser(prog="pcomm", description="pcomm: fault-tolerant collective communication")
    parser.add_argument("--version", action="version", version=f"pcomm {__version__} (wire protocol {PROTOCOL_VERSION})")
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
    coord.add_argument(
        "--straggler-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="drop peers that leave the others waiting in a collective call this long (default 10; 0: never)",
    )
    coord.add_argument("--run", default="default", help="run name peers must use (default 'default')")
    coord.add_argument("--state-dir", metavar="DIR", help="keep the term and last ring here, so a restart never "
                       "reuses a term and first gathers the ring's peers (docs/failover.md)")
    coord.add_argument("--standby", action="store_true", help="serve nobody while the coordinator at --peer-of "
                       "answers; take over when it is gone")
    coord.add_argument("--peer-of", metavar="HOST:PORT", help="the other coordinator: the primary a --standby "
                       "watches (a serving coordinator that watches one steps down to a newer term)")
    coord.add_argument("--gather-window", type=float, default=2.0, metavar="SECONDS",
                       help="how long a new term waits for the last ring's peers to re-register (default 2)")
    coord.add_argument("--relay", action="append", default=[], metavar="HOST:PORT",
                       help="a relay for peers that cannot connect otherwise (repeatable)")
    _add_secret_options(coord, "coordinator")
    _add_announce_options(coord, "coordinator")
    coord.set_defaults(func=_coordinator)
    relay = sub.add_parser("relay", help="run a relay for peers that cannot reach each other")
    relay.add_argument("--listen", default="0.0.0.0:29600", help="HOST:PORT to listen on (default 0.0.0.0:29600)")
    relay.add_argument("--max-circuits", type=int, default=1024, help="circuits open at once (default 1024)")
    relay.add_argument("--rate", type=float, metavar="BYTES_PER_S", help="cap each circuit's direction (default: none)")
    _add_secret_options(relay, "relay")
    _add_announce_options(relay, "relay")
    relay.set_defaults(func=_relay)
    dht = sub.add_parser("dht", help="run a discovery DHT node (bootstrap node for runs)")
    dht.add_argument("--listen", default="/ip4/0.0.0.0/tcp/4001", help="multiaddr to listen on (default /ip4/0.0.0.0/tcp/4001)")
    dht.add_argument("--bootstrap", nargs="+", default=[], metavar="MULTIADDR", help="other DHT nodes to join through")
    dht.add_argument("--key-file", help="identity key file, created if missing, so the printed address stays valid across restarts")
    dht.add_argument("--announce-addr", nargs="+", metavar="MULTIADDR", help="addresses to advertise instead of the listen address")
    dht.set_defaults(func=_dht)
    prog = sub.add_parser("progress", help="print every peer's training progress from the run's CRDT store")
    prog.add_argument("--run", required=True, help="the run name (its store has the same name)")
    prog.add_argument("--bootstrap", nargs="+", required=True, metavar="MULTIADDR", help="DHT nodes to find the run's replicas")
    prog.add_argument("--watch", type=float, metavar="SECONDS", help="print again every SECONDS until Ctrl-C")
    prog.add_argument("--timeout", type=float, default=30.0, help="seconds to find a replica and sync (default 30)")
    prog.add_argument("--secret-file", metavar="PATH", help="file holding the run secret (default: $PCOMM_SECRET_FILE)")
    prog.set_defaults(func=_progress)
    status = sub.add_parser("status", help="print a run's ring as its coordinator sees it (no peer needed)")
    status.add_argument("--coordinator", metavar="HOST:PORT", help="the coordinator's address")
    status.add_argument("--run", help="or: the run name, to find its coordinator in the DHT (with --bootstrap)")
    status.add_argument("--bootstrap", nargs="+", default=[], metavar="MULTIADDR", help="DHT nodes (with --run)")
    status.add_argument("--secret-file", metavar="PATH", help="file holding the run secret (default: $PCOMM_SECRET_FILE)")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="print again every SECONDS until Ctrl-C")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds to get an answer (default 10)")
    status.set_defaults(func=_status)
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
