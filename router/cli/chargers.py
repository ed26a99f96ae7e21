"""``ocpp-router chargers``: the connected chargers, from the registry (SCAN ``<prefix>:cs:*``)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import orjson

from router.backend.client import Client, Registration
from router.backend.options import add_connection_arguments, redis_from_args
from router.cli.main import EXIT_USAGE, CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print a JSON array (identity, proto, transport, node, conn, "
                             "since, addr, endpoint)")
    add_connection_arguments(parser, shards=False)


def _since(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_table(rows: list[Registration]) -> str:
    """The human-readable listing: one aligned line per charger."""
    header = ("IDENTITY", "PROTOCOL", "TRANSPORT", "NODE", "SINCE", "ADDRESS")
    lines = [header] + [(r.identity, r.proto, r.transport, r.node, _since(r.since),
                         # OCPP-S: where CSMS CALLs go, after the peer address.
                         f"{r.addr} {r.endpoint}" if r.endpoint else r.addr) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = ["  ".join([*(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)), line[-1]])
           for line in lines]
    out.append(f"{len(rows)} charger{'s' if len(rows) != 1 else ''} connected")
    return "\n".join(out)


async def run_async(args: argparse.Namespace) -> int:
    try:
        redis = redis_from_args(args)
    except ValueError as exc:
        raise CLIError(f"--redis-url: {exc}", EXIT_USAGE) from None
    try:
        async with Client(redis, prefix=args.key_prefix) as client:
            rows = await client.chargers()
    finally:
        await redis.aclose()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([
            {"identity": r.identity, "proto": r.proto, "transport": r.transport,
             "node": r.node, "conn": r.conn, "since": r.since, "addr": r.addr,
             "endpoint": r.endpoint} for r in rows]) + b"\n")
    else:
        print(format_table(rows))
    sys.stdout.flush()
    return 0
