"""``ocpp-router reference-csms``: run the reference CSMS (router/backend/reference_csms.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from router.backend.metrics import serve_metrics
from router.backend.options import add_connection_arguments, redis_from_args
from router.backend.reference_csms import DEFAULT_HEARTBEAT_INTERVAL, ReferenceCSMS
from router.cli.main import EXIT_USAGE, CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", default="reference-csms",
                        help="consumer group (default: reference-csms)")
    parser.add_argument("--consumer", help="consumer name (default: host-pid-random)")
    parser.add_argument("--allow", action="append", default=[], metavar="TAGS",
                        help="authorised id tags / tokens, comma-separated, repeatable "
                             "(default: accept all)")
    parser.add_argument("--heartbeat-interval", type=int, default=DEFAULT_HEARTBEAT_INTERVAL,
                        metavar="SECONDS",
                        help=f"interval sent in BootNotification (default: {DEFAULT_HEARTBEAT_INTERVAL})")
    parser.add_argument("--claim-idle", type=float, default=30.0, metavar="SECONDS",
                        help="claim entries pending this long from dead consumers (default: 30)")
    parser.add_argument("--max-deliveries", type=int, default=5, metavar="N",
                        help="dead-letter an entry delivered more often (default: 5)")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                        help="serve Prometheus metrics on this port at /metrics (default: off)")
    parser.add_argument("--metrics-addr", default="0.0.0.0", metavar="ADDR",
                        help="address of the metrics server (default: 0.0.0.0)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="(default: INFO)")
    add_connection_arguments(parser)


def allow_list(values: list[str]) -> set[str] | None:
    """``--allow A,B --allow C`` → ``{"A", "B", "C"}``; no option → ``None`` (accept all)."""
    if not values:
        return None
    return {tag.strip() for value in values for tag in value.split(",") if tag.strip()}


async def run_async(args: argparse.Namespace) -> int:
    if args.heartbeat_interval < 1 or args.claim_idle <= 0 or args.max_deliveries < 1:
        raise CLIError("--heartbeat-interval, --claim-idle and --max-deliveries must be positive",
                       EXIT_USAGE)
    if not 0 <= args.metrics_port <= 65535:
        raise CLIError("--metrics-port must be a port number (0: off)", EXIT_USAGE)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        redis = redis_from_args(args)
    except ValueError as exc:
        raise CLIError(f"--redis-url: {exc}", EXIT_USAGE) from None
    csms = ReferenceCSMS(redis, prefix=args.key_prefix, shards=args.shards, group=args.group,
                         consumer=args.consumer, heartbeat_interval=args.heartbeat_interval,
                         allow=allow_list(args.allow), claim_idle=args.claim_idle,
                         max_deliveries=args.max_deliveries)
    stop_metrics: Callable[[], None] | None = None
    if args.metrics_port:
        try:
            stop_metrics = serve_metrics(csms.app, args.metrics_port, args.metrics_addr)
        except OSError as exc:
            await redis.aclose()
            raise CLIError(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}",
                           EXIT_USAGE) from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Graceful: stop reading, let in-flight handlers answer, then exit.
        loop.add_signal_handler(sig, csms.stop)
    try:
        await redis.ping()
        await csms.run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await redis.aclose()
    return 0
