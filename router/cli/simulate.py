"""``ocpp-router simulate URL``: real OCPP-J chargers against a deployment.

A rehearsal for operators: N chargers (OCPP 1.6, 2.0.1, 2.1 or a mix) connect
to ``URL<identity>``, boot, then send the CALLs of a charging session
(status, authorize, transaction start, meter values, heartbeat, transaction
end) in a closed loop or at a total ``--rate``, and answer the CSMS's CALLs
(Reset, RemoteStartTransaction / RequestStartTransaction,
ChangeConfiguration / SetVariables, …). A live line shows connected chargers,
msg/s, errors and p50/p99; a summary ends the run (``--json`` for all of it,
``--plot`` for a PNG).

It is the benchmarks' load generator (:mod:`router.sim.loadgen`: picows,
several processes, one source address each), so it needs the ``sim`` extra.

Exit status: 0 when every charger booted (BootNotification answered
``Accepted``), 1 when one did not (or an error), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from router.cli.live import Status
from router.cli.main import EXIT_ERROR, EXIT_USAGE, CLIError

EXTRA = "pip install 'ocpp-router[sim]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Simulated OCPP-J chargers over real WebSockets: rehearse a "
                          "migration or load-test a deployment.")
    parser.epilog = ("Each charger connects to URL + identity (identity = PREFIX + 6 digits, "
                     "e.g. CP000000). Exit status: 0 every charger booted, 1 one did not "
                     "(or an error), 2 usage. Needs the 'sim' extra: " + EXTRA)
    parser.add_argument("url", help="base URL, e.g. ws://router:9000/ocpp/ (wss:// for TLS)")
    parser.add_argument("--chargers", type=int, default=10, metavar="N",
                        help="simulated chargers (default: 10)")
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS",
                        help="seconds of traffic after every charger connected (default: 30)")
    parser.add_argument("--proto", default="mix",
                        choices=("mix", "ocpp1.6", "ocpp2.0.1", "ocpp2.1"),
                        help="subprotocol of the chargers; mix: round robin (default: mix)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=0.0, metavar="MSG_PER_S",
                      help="total CALLs per second over all chargers (open loop); default: "
                           "closed loop, each charger's next CALL as soon as the previous one "
                           "is answered")
    load.add_argument("--idle", action="store_true",
                      help="only connect, boot and hold the connections (answering CSMS CALLs)")
    parser.add_argument("--heartbeat", type=float, default=0.0, metavar="SECONDS",
                        help="with --idle: each charger sends a Heartbeat this often "
                             "(default: none; the traffic mixes have their own)")
    parser.add_argument("--id-prefix", default="CP", metavar="PREFIX",
                        help="identity prefix (default: CP)")
    parser.add_argument("--password", metavar="PASSWORD",
                        help="HTTP Basic auth (security profile 1/2), user name = identity")
    parser.add_argument("--tls-ca", metavar="FILE", help="CA bundle to verify a wss:// server")
    parser.add_argument("--insecure", action="store_true",
                        help="wss:// without verifying the server certificate")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="client certificate (security profile 3; with --tls-key)")
    parser.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    parser.add_argument("--source-addr", action="append", default=[], metavar="ADDR",
                        dest="source_addrs",
                        help="local address to connect from, one per process (repeat to go "
                             "beyond ~28k connections per address); default: the kernel's "
                             "choice (127.0.0.10+i for a 127.x target)")
    parser.add_argument("--procs", type=int, default=0, metavar="N",
                        help="generator processes (default: enough for the fd limit)")
    parser.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long chargers keep trying to connect and boot (default: 60)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="write throughput and latency over time as a PNG (matplotlib)")
    parser.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")


def _load_modules() -> Any:
    try:
        from router.sim import loadgen
    except ImportError as exc:
        raise CLIError(f"simulate needs the 'sim' extra ({exc.name or exc} is missing): "
                       f"{EXTRA}") from None
    return loadgen


async def run_async(args: argparse.Namespace) -> int:
    if args.heartbeat and not args.idle:
        raise CLIError("--heartbeat goes with --idle (the traffic mixes have their own "
                       "Heartbeats)", EXIT_USAGE)
    if (args.chargers < 1 or args.duration <= 0 or args.rate < 0 or args.connect_timeout <= 0
            or args.heartbeat < 0):
        raise CLIError("--chargers, --duration and --connect-timeout must be positive",
                       EXIT_USAGE)
    if not args.url.startswith(("ws://", "wss://")):
        raise CLIError(f"the URL must start with ws:// or wss:// (got {args.url!r})", EXIT_USAGE)
    loadgen = _load_modules()
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError(f"--plot needs matplotlib, part of the 'sim' extra: {EXTRA}") from None
    mode = "idle" if args.idle else "open" if args.rate > 0 else "closed"
    cfg = loadgen.LoadConfig(
        url=args.url.rstrip("/"), chargers=args.chargers, mode=mode, proto=args.proto,
        duration=args.duration, warmup=0.0, rate=args.rate, hold=args.duration,
        procs=args.procs, source_addrs=args.source_addrs, connect_timeout=args.connect_timeout,
        handshake_timeout=min(30.0, args.connect_timeout), id_prefix=args.id_prefix,
        progress=not args.quiet, reconnect=True, password=args.password, tls_ca=args.tls_ca,
        tls_insecure=args.insecure, tls_cert=args.tls_cert, tls_key=args.tls_key,
        heartbeat=args.heartbeat)
    status = Status(sys.stderr)
    try:
        result: dict[str, Any] = await loadgen.run_load(
            cfg, log=None if args.quiet else status.show)
    except loadgen.LoadgenError as exc:
        raise CLIError(str(exc)) from None
    finally:
        status.end()
    if args.json:
        _write(args.json, orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    if args.plot:
        from router.sim.plot import plot_run

        try:
            plot_run(result, args.plot, f"ocpp-router simulate {args.url}: "
                                        f"{args.chargers} chargers ({args.proto})")
        except OSError as exc:
            raise CLIError(f"cannot write {args.plot}: {exc.strerror}") from None
    print(summary(result, args.url))
    sys.stdout.flush()
    counters = result["counters"]
    if counters["boot_accepted"] < args.chargers:
        print(f"ocpp-router simulate: {args.chargers - counters['boot_accepted']} of "
              f"{args.chargers} chargers did not boot (BootNotification not answered "
              f"Accepted): {_boot_failure(result)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror}") from None


def _boot_failure(result: dict[str, Any]) -> str:
    c = result["counters"]
    parts = []
    if c["handshakes"] < result["chargers"]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(c["failure_kinds"].items()))
        parts.append(f"{result['chargers'] - c['handshakes']} never connected"
                     + (f" ({kinds})" if kinds else ""))
    if c["boot_not_accepted"]:
        parts.append(f"{c['boot_not_accepted']} answered but not Accepted")
    if c["booted"] < c["handshakes"]:
        parts.append(f"{c['handshakes'] - c['booted']} got no answer")
    return "; ".join(parts) or "see the summary"


def _ms(p: dict[str, float]) -> str:
    if not p:
        return "-"
    return " ".join(f"{k} {p[k]:.2f}" for k in ("p50", "p90", "p99", "max") if k in p)


def summary(result: dict[str, Any], url: str) -> str:
    """The human-readable end of a run."""
    c = result["counters"]
    n = result["chargers"]
    lines = [f"ocpp-router simulate: {n} charger{'s' if n != 1 else ''} against {url}"]
    lines.append(f"  connected   {c['handshakes']}/{n} (handshake failures "
                 f"{c['handshake_failures']}, dropped {c['disconnects']}, reconnects "
                 f"{c['reconnects']})")
    lines.append(f"  booted      {c['booted']} (Accepted {c['boot_accepted']}, other "
                 f"{c['boot_not_accepted']}), boot ms {_ms(result.get('boot_latency_ms', {}))}")
    sent = result.get("sent_by_action", {})
    for proto, table in sent.items():
        actions = ", ".join(f"{a} {k}" for a, k in table.items())
        lines.append(f"  sent {proto:<9} {sum(table.values())} CALLs: {actions}")
    if "window_s" in result:
        lines.append(f"  answered    {c['done']} CALLs in the {result['window_s']:.1f} s window, "
                     f"{result['msgs_per_s']:,.1f} msg/s; latency ms "
                     f"{_ms(result.get('latency_ms', {}))}")
    codes = ", ".join(f"{k} {v}" for k, v in sorted(c["callerror_codes"].items()))
    lines.append(f"  CALLERRORs  {c['call_errors']}" + (f" ({codes})" if codes else ""))
    lines.append(f"  CSMS CALLs  {c['backend_calls']} answered"
                 + (f", {c['bad_backend_calls']} unreadable" if c["bad_backend_calls"] else ""))
    return "\n".join(lines)
