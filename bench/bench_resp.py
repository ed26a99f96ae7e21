"""Client CPU per XADD: the router's Publisher against redis-py pipelines.

    .venv/bin/python -m bench.bench_resp                    # embedded redis-server
    .venv/bin/python -m bench.bench_resp --entries 200000 --batch 100 --batch 1000
    .venv/bin/python -m bench.bench_resp --url redis://127.0.0.1:6379/0

Every variant XADDs the same inbound entry (docs/streams.md: a charger CALL
with ``--payload`` bytes of payload, ``MAXLEN ~``) to the same real
redis-server, in batches of ``--batch`` entries per event-loop iteration /
pipeline, on uvloop. The figure is this process's CPU time
(``time.process_time``: user + system, all threads) divided by the entries
acknowledged (or delivered, for the readers); Redis runs in its own process and is not counted. Each variant
runs ``--rounds`` times and the best round is reported (least disturbed by the
other work on a shared machine). Variants:

* ``encode only``: ``CommandBuffer.append_inbound`` + ``take`` (no I/O).
* ``publisher``: ``Publisher.publish_inbound`` with an ``on_error`` callback,
  replies parsed by hiredis, one write per batch (what the router does).
* ``redis-py pipeline``: ``redis.asyncio`` pipeline (``transaction=False``)
  of ``xadd`` calls, hiredis parser installed (redis-py's fastest setup).
* ``reader``: ``OutboundReader`` draining ``--entries`` backend replies
  already in the node's out stream, ``COUNT`` = batch, trimming what it read
  (filling the stream is not measured).
* ``redis-py XREAD``: the same with ``redis.asyncio`` ``xread`` + ``xtrim``.

Output: one table row per variant and batch size; ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis
import uvloop

from router.embedded_redis import RedisServer
from router.streams import CommandBuffer, KeySpace, OutboundReader, Publisher, StreamsError
from router.streams.reader import Entries

PREFIX = "bench-resp"
CS = "CP-000123"
NODE = "router-a-0"
CONN = "3f2a9c0e7b1d4e21"


def payload_of(size: int) -> bytes:
    body = b'{"connectorId":1,"meterValue":[{"timestamp":"2026-11-21T12:00:00Z","sampledValue":['
    filler = b'{"value":"12.5"},'
    while len(body) + len(filler) + 3 < size:
        body += filler
    return body.rstrip(b",") + b"]}]}"


async def bench_encode(entries: int, batch: int, payload: bytes) -> int:
    buf = CommandBuffer()
    key = KeySpace(PREFIX).inbound(0)
    done = 0
    while done < entries:
        for i in range(batch):
            buf.append_inbound(key, 1_000_000, b"call", CS, b"ocpp1.6", NODE, CONN,
                               1_763_731_200_123, str(i), b"MeterValues", payload)
        buf.take()
        done += batch
    return done


async def bench_publisher(url: str, entries: int, batch: int, payload: bytes) -> int:
    errors: list[StreamsError] = []
    pub = Publisher(url, keys=KeySpace(PREFIX), max_pending=max(50_000, 2 * batch))
    await pub.start()
    try:
        done = 0
        while done < entries:
            for i in range(batch):
                pub.publish_inbound(CS, b"call", b"ocpp1.6", NODE, CONN, 1_763_731_200_123,
                                    str(i), b"MeterValues", payload, shard=0,
                                    on_error=errors.append)
            await pub.wait_flushed()
            done += batch
    finally:
        await pub.close()
    if errors:
        raise SystemExit(f"publisher: {len(errors)} errors, first: {errors[0]!r}")
    return pub.stats.entries


async def bench_redis_py(url: str, entries: int, batch: int, payload: bytes) -> int:
    r = aioredis.Redis.from_url(url)
    key = KeySpace(PREFIX).inbound(0)
    try:
        done = 0
        while done < entries:
            async with r.pipeline(transaction=False) as pipe:
                for i in range(batch):
                    pipe.xadd(key, {
                        "v": "1", "kind": "call", "cs": CS, "proto": "ocpp1.6", "node": NODE,
                        "conn": CONN, "ts": 1_763_731_200_123, "id": str(i),
                        "action": "MeterValues", "payload": payload,
                    }, maxlen=1_000_000, approximate=True)
                replies = await pipe.execute()
            done += len(replies)
    finally:
        await r.aclose()
    return done


OUT_KEY = KeySpace(PREFIX).out(NODE)


def fill_out_stream(url: str, entries: int, payload: bytes) -> None:
    """Backend replies waiting in the node's out stream (not measured)."""
    r = redis.Redis.from_url(url)
    try:
        r.delete(OUT_KEY)
        for start in range(0, entries, 1000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(entries, start + 1000)):
                pipe.xadd(OUT_KEY, {"kind": "result", "cs": CS, "conn": CONN, "id": str(i),
                                    "payload": payload})
            pipe.execute()
    finally:
        r.close()


async def bench_reader(url: str, entries: int, batch: int, payload: bytes) -> int:
    done = asyncio.Event()
    got = 0

    def on_entries(batch_: Entries) -> None:
        nonlocal got
        got += len(batch_)
        if got >= entries:
            done.set()

    reader = OutboundReader(url, OUT_KEY, on_entries, count=batch, start_id=b"0-0")
    await reader.start()
    try:
        await done.wait()
    finally:
        await reader.stop()
    return got


async def bench_redis_py_reader(url: str, entries: int, batch: int, payload: bytes) -> int:
    r = aioredis.Redis.from_url(url)
    got = 0
    last = b"0-0"
    try:
        while got < entries:
            res = await r.xread({OUT_KEY: last}, count=batch, block=1000)
            for _, items in res or []:
                got += len(items)
                last = items[-1][0]
                ms, seq = last.split(b"-")
                await r.xtrim(OUT_KEY, minid=b"%s-%d" % (ms, int(seq) + 1), approximate=False)
    finally:
        await r.aclose()
    return got


Variant = Callable[[str, int, int, bytes], Awaitable[int]]


async def measure(fn: Variant, url: str, entries: int, batch: int, payload: bytes,
                  rounds: int) -> float:
    """Best-of-rounds client CPU µs per acknowledged entry."""
    best = float("inf")
    for _ in range(rounds):
        r = redis.Redis.from_url(url)
        r.delete(KeySpace(PREFIX).inbound(0))
        r.close()
        if fn in (bench_reader, bench_redis_py_reader):
            fill_out_stream(url, entries, payload)
        cpu0 = time.process_time()
        n = await fn(url, entries, batch, payload)
        cpu = time.process_time() - cpu0
        best = min(best, cpu / n * 1e6)
    return best


async def main_async(args: argparse.Namespace) -> int:
    payload = payload_of(args.payload)
    server: RedisServer | None = None
    url = args.url
    if url is None:
        server = RedisServer().start()
        url = server.url
    try:
        results = []
        variants: list[tuple[str, Variant]] = [
            ("encode only", lambda _u, n, b, p: bench_encode(n, b, p)),
            ("publisher", bench_publisher),
            ("redis-py pipeline", bench_redis_py),
            ("reader", bench_reader),
            ("redis-py XREAD", bench_redis_py_reader),
        ]
        for batch in args.batch or [100, 1000]:
            for name, fn in variants:
                n = args.entries // 4 if name == "redis-py pipeline" else args.entries
                us = await measure(fn, url, n, batch, payload, args.rounds)
                results.append({"variant": name, "batch": batch, "entries": n,
                                "cpu_us_per_xadd": round(us, 3)})
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "machine": platform.machine(),
                          "payload_bytes": len(payload), "results": results}, indent=2))
    else:
        print(f"payload {len(payload)} B, best of {args.rounds} rounds, "
              f"Python {sys.version.split()[0]}, uvloop")
        print(f"{'variant':<20} {'batch':>6} {'entries':>8} {'client CPU µs/entry':>20}")
        for row in results:
            print(f"{row['variant']:<20} {row['batch']:>6} {row['entries']:>8} "
                  f"{row['cpu_us_per_xadd']:>20.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="Redis URL (default: start an embedded redis-server)")
    parser.add_argument("--entries", type=int, default=100_000,
                        help="entries per round (redis-py gets a quarter: it is slow)")
    parser.add_argument("--batch", type=int, action="append",
                        help="entries per iteration/pipeline (repeatable; default 100, 1000)")
    parser.add_argument("--payload", type=int, default=200, help="payload size in bytes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
