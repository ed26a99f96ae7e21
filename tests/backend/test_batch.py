"""The SDK's batched data path (router.backend.batch) against a real redis-server:
batch boundaries, partial failures inside one pipelined write, handlers that
raise or suspend inside a batch, plain ``def`` handlers, a Redis restart."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.backend import BackendApp, Message
from router.embedded_redis import RedisServer
from router.streams.keys import KeySpace
from tests.backend.helpers import pending_count, read_out
from tests.conftest import timeout

GROUP = "csms"


def entry(cs: str, n: int, *, node: str = "node-a", action: str = "Heartbeat") -> dict[str, Any]:
    return {"v": 1, "kind": "call", "cs": cs, "proto": "ocpp1.6", "node": node, "conn": "c",
            "ts": 1, "id": str(n), "action": action, "payload": orjson.dumps({"n": n})}


async def prefill(redis: aioredis.Redis, keys: KeySpace, entries: list[dict[str, Any]]) -> None:
    """Publish entries before the app starts (it reads them from 0, in batches)."""
    async with redis.pipeline(transaction=False) as pipe:
        for fields in entries:
            pipe.xadd(keys.inbound_for(fields["cs"]), fields)
        await pipe.execute()


async def run_until(app: BackendApp, done: Any) -> None:
    task = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(app.wait_ready(), timeout(10))
        async with asyncio.timeout(timeout(20)):
            while not done():
                await asyncio.sleep(0.01)
    finally:
        app.stop()
        await asyncio.wait_for(task, timeout(20))


async def pending_total(redis: aioredis.Redis, keys: KeySpace) -> int:
    return sum([await pending_count(redis, s, GROUP) for s in keys.all_inbound()])


@pytest.fixture
def keys(key_prefix: str) -> KeySpace:
    return KeySpace(prefix=key_prefix, shards=2)


async def test_batch_boundaries_keep_each_chargers_order(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    # 3 chargers x 25 calls read 4 at a time: batches split every charger's run.
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=2, block=0.2, batch=4,
                     start_id="0")
    seen: dict[str, list[int]] = {}

    @app.on_call("Heartbeat")
    def heartbeat(msg: Message) -> dict[str, Any]:   # a plain def handler, called inline
        seen.setdefault(msg.cs, []).append(msg.json["n"])
        return {"currentTime": "2026-11-21T12:00:00Z"}

    await prefill(redis, keys, [entry(f"CP-{c}", n) for n in range(25) for c in "XYZ"])
    await run_until(app, lambda: app.stats["handled"] == 75)
    assert seen == {f"CP-{c}": list(range(25)) for c in "XYZ"}
    out = await read_out(redis, keys, count=75)
    for c in "XYZ":
        assert [int(f[b"id"]) for f in out if f[b"cs"] == f"CP-{c}".encode()] == list(range(25))
    assert all(f[b"kind"] == b"result" for f in out)
    assert await pending_total(redis, keys) == 0


async def test_a_failed_xadd_in_a_pipelined_write_leaves_only_its_entry_pending(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    # The out stream of node-bad is a string: its XADD gets WRONGTYPE in the
    # middle of the write that answers the whole batch.
    await redis.set(keys.out("node-bad"), "not a stream")
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2, batch=10,
                     start_id="0", claim_idle=3600)
    keys1 = KeySpace(prefix=key_prefix, shards=1)

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, Any]:
        return {"currentTime": "2026-11-21T12:00:00Z"}

    await prefill(redis, keys1, [entry("CP-1", 0), entry("CP-2", 1, node="node-bad"),
                                 entry("CP-3", 2)])
    await run_until(app, lambda: app.stats["handled"] == 2 and app.stats["failed"] == 1)
    out = await read_out(redis, keys1, count=2)
    assert sorted(f[b"id"] for f in out) == [b"0", b"2"]
    [pending] = await redis.xpending_range(keys1.inbound(0), GROUP, "-", "+", 10)
    errors = await redis.hgetall(app.errors_key)
    assert list(errors) == [keys1.inbound(0) + b" " + pending["message_id"]]
    assert b"WRONGTYPE" in next(iter(errors.values()))


async def test_a_handler_raising_inside_a_batch_fails_only_its_entry(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=2, block=0.2, batch=50,
                     start_id="0", claim_idle=3600)
    handled: list[int] = []

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, Any]:
        n = msg.json["n"]
        if n == 5:
            raise RuntimeError("database down")
        handled.append(n)
        return {"currentTime": "2026-11-21T12:00:00Z"}

    await prefill(redis, keys, [entry("CP-R", n) for n in range(10)])
    await run_until(app, lambda: app.stats["handled"] == 9)
    # Later entries of the same charger still run (a failed entry is retried later).
    assert handled == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert app.stats["failed"] == 1
    out = await read_out(redis, keys, count=9)
    assert b"5" not in {f[b"id"] for f in out}
    assert await pending_total(redis, keys) == 1


async def test_a_suspending_handler_holds_back_only_its_own_charger(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2, batch=50,
                     start_id="0")
    keys1 = KeySpace(prefix=key_prefix, shards=1)
    release = asyncio.Event()
    order: list[tuple[str, int]] = []

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, Any]:
        n = msg.json["n"]
        if msg.cs == "CP-SLOW" and n == 0:
            await release.wait()        # suspends: this charger moves to a task
        if msg.cs == "CP-FAST" and n == 2:
            release.set()
        await asyncio.sleep(0)          # suspends briefly too: still in order
        order.append((msg.cs, n))
        return {"currentTime": "2026-11-21T12:00:00Z"}

    await prefill(redis, keys1, [entry(cs, n) for n in range(3) for cs in ("CP-SLOW",
                                                                            "CP-FAST")])
    await run_until(app, lambda: app.stats["handled"] == 6)
    assert [n for cs, n in order if cs == "CP-SLOW"] == [0, 1, 2]
    assert [n for cs, n in order if cs == "CP-FAST"] == [0, 1, 2]
    # CP-FAST went on while CP-SLOW's first handler waited (for CP-FAST's third).
    assert order.index(("CP-FAST", 1)) < order.index(("CP-SLOW", 0))
    assert await pending_total(redis, keys1) == 0


async def test_redis_restart_mid_batch(redis_server: RedisServer, key_prefix: str) -> None:
    # redis_server keeps nothing across a restart (no RDB/AOF): the group is
    # gone afterwards and the app recreates it; nothing of the lost batch is
    # acknowledged (it never could be: the stream is gone) and nothing crashes.
    redis = aioredis.Redis.from_url(redis_server.url)
    keys = KeySpace(prefix=key_prefix, shards=1)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2, batch=10,
                     start_id="0")
    stopped = asyncio.Event()

    @app.on_call("Heartbeat")
    def heartbeat(msg: Message) -> dict[str, Any]:
        if msg.json["n"] == 1 and not stopped.is_set():
            redis_server.stop()     # between the handlers of one batch
            stopped.set()
        return {"currentTime": "2026-11-21T12:00:00Z"}

    await prefill(redis, keys, [entry("CP-A", n) for n in range(3)])
    task = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(app.wait_ready(), timeout(10))
        await asyncio.wait_for(stopped.wait(), timeout(10))
        await asyncio.sleep(0.3)    # the write of the batch fails; the reader backs off
        await asyncio.to_thread(redis_server.start)
        assert not task.done()
        await prefill(redis, keys, [entry("CP-B", 7)])
        [out] = await read_out(redis, keys, timeout=timeout(20))
        assert (out[b"cs"], out[b"id"]) == (b"CP-B", b"7")
        async with asyncio.timeout(timeout(10)):
            while await pending_count(redis, keys.inbound(0), GROUP):
                await asyncio.sleep(0.01)
    finally:
        app.stop()
        await asyncio.wait_for(task, timeout(20))
        await redis.aclose()
