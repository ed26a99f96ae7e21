"""``ocpp-router tail``: follow the inbound streams live, without a consumer group.

Plain ``XREAD BLOCK`` on every shard, so it never takes entries away from the
backends and never leaves pending entries behind. On one server one XREAD
names every shard; on Redis Cluster that would be CROSSSLOT, so each shard is
read by its own blocked XREAD on the master that owns it (redis-py's
``RedisCluster`` routes it), all feeding one output. One line per entry::

    12:00:00.123 CP-1 call BootNotification #19223201 {"chargePointVendor":"ACME",…}
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fnmatch
import signal
import sys
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from router.backend.message import KINDS, MalformedEntry, Message, StreamReply
from router.backend.options import add_connection_arguments, redis_from_args
from router.cli.main import EXIT_USAGE, CLIError
from router.streams.keys import KeySpace

# Below redis-py's default socket timeout (5 s), or the blocked read is cut off.
BLOCK_MS = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--identity", action="append", default=[], metavar="PATTERN",
                        help="only these chargers (shell pattern, repeatable)")
    parser.add_argument("-a", "--action", action="append", default=[], metavar="ACTION",
                        help="only these actions (repeatable)")
    parser.add_argument("-k", "--kind", action="append", default=[], choices=KINDS,
                        help="only these kinds (repeatable)")
    parser.add_argument("--from-start", action="store_true",
                        help="print what the streams hold first, then follow")
    parser.add_argument("-n", "--count", type=int, default=0, metavar="N",
                        help="exit after N matching entries")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_connection_arguments(parser)


class Filter:
    """The ``--identity`` / ``--action`` / ``--kind`` selection."""

    def __init__(self, identities: list[str], actions: list[str], kinds: list[str]) -> None:
        self.identities = identities
        self.actions = set(actions)
        self.kinds = set(kinds)

    def __call__(self, msg: Message) -> bool:
        if self.kinds and msg.kind not in self.kinds:
            return False
        if self.actions and msg.action not in self.actions:
            return False
        return not self.identities or any(fnmatch.fnmatchcase(msg.cs, p) for p in self.identities)


def format_line(msg: Message) -> str:
    """One human-readable line for an entry."""
    when = dt.datetime.fromtimestamp(msg.ts / 1000, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    parts = [when, msg.cs, msg.kind]
    if msg.action:
        parts.append(msg.action)
    if msg.id:
        parts.append(f"#{msg.id}")
    if msg.kind in ("call", "result", "send"):
        parts.append(msg.payload.decode("utf-8", "replace"))
    elif msg.kind in ("error", "failed", "disconnected"):
        parts.append(f"{msg.code} {msg.description}".strip())
    elif msg.kind == "connected":
        parts.append(f"{msg.proto} from {msg.addr} on {msg.node}")
    return " ".join(parts)


def as_json(msg: Message) -> bytes:
    """The entry as one JSON object (fields as text, ``payload`` / ``details`` as JSON)."""
    out: dict[str, Any] = {k.decode(): v.decode("utf-8", "replace") for k, v in msg.fields.items()}
    for name in ("payload", "details"):
        if name in out:
            try:
                out[name] = orjson.loads(out[name])
            except orjson.JSONDecodeError:
                pass
    out["entry"] = msg.entry_id
    return orjson.dumps(out)


async def _last_ids(redis: aioredis.Redis, streams: list[bytes], from_start: bool) -> dict[bytes, str]:
    # Concrete ids instead of "$": with "$", entries arriving in a stream
    # between two XREADs of other streams would be skipped.
    ids: dict[bytes, str] = {}
    for stream in streams:
        if from_start:
            ids[stream] = "0-0"
            continue
        last = cast(list[tuple[bytes, Any]], await redis.xrevrange(stream, count=1))
        ids[stream] = last[0][0].decode() if last else "0-0"
    return ids


class _PerShardXRead:
    """``xread(ids, count, block)`` for Redis Cluster: one XREAD per shard,
    concurrently, each on its own master; returns as soon as one has entries
    (the others' come with a later call: their reads stay in flight)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.pending: dict[Any, asyncio.Future[Any]] = {}

    async def __call__(self, ids: dict[Any, Any], count: int, block: int) -> Any:
        pending = self.pending
        for stream in ids:
            if stream not in pending:
                pending[stream] = asyncio.ensure_future(
                    self.redis.xread({stream: ids[stream]}, count=count, block=block))
        done, _ = await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
        out: list[Any] = []
        for stream, fut in list(pending.items()):
            if fut in done:
                del pending[stream]
                out.extend(fut.result() or ())
        return out

    async def close(self) -> None:
        for fut in self.pending.values():
            fut.cancel()
        await asyncio.gather(*self.pending.values(), return_exceptions=True)


async def run_async(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CLIError("--count must not be negative", EXIT_USAGE)
    try:
        redis = redis_from_args(args)
    except ValueError as exc:
        raise CLIError(f"--redis-url: {exc}", EXIT_USAGE) from None
    keys = KeySpace(prefix=args.key_prefix, shards=args.shards)
    wanted = Filter(args.identity, args.action, args.kind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown = 0
    out = sys.stdout
    xread: Any = redis.xread
    per_shard: _PerShardXRead | None = None
    try:
        ids: dict[Any, Any] = await _last_ids(redis, keys.all_inbound(), args.from_start)
        if isinstance(redis, RedisCluster):
            xread = per_shard = _PerShardXRead(redis)
        while not stop.is_set():
            read = asyncio.ensure_future(xread(ids, count=500, block=BLOCK_MS))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not read.done():
                # Let the blocked read finish rather than cancel it mid-reply.
                await asyncio.wait({read})
            for stream, entries in cast(StreamReply, read.result()) or ():
                for entry_id, fields in entries:
                    ids[stream] = entry_id
                    try:
                        msg = Message(stream.decode(), entry_id.decode(), fields)
                    except MalformedEntry as exc:
                        print(f"(malformed entry {entry_id.decode()}: {exc})", file=out)
                        continue
                    if not wanted(msg):
                        continue
                    if args.json:
                        out.write(as_json(msg).decode() + "\n")
                    else:
                        out.write(format_line(msg) + "\n")
                    shown += 1
                    if args.count and shown >= args.count:
                        stop.set()
                        break
            out.flush()
    except BrokenPipeError:  # `ocpp-router tail | head`
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if per_shard is not None:
            await per_shard.close()
        await redis.aclose()
    return 0
