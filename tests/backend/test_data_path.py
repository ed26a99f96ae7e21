"""The SDK's compiled data path (issue 14): batches, pipelined answers and
acknowledgements, partial failures, inline ``def`` handlers, Redis restarts.

Real redis-server processes throughout; the test plays the router
(tests/backend/helpers.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.backend import BackendApp, Message
from router.embedded_redis import RedisServer
from router.streams.keys import KeySpace
from tests.backend.helpers import pending_count, publish, read_out, started, stopped, wait_acked
from tests.conftest import timeout

GROUP = "csms"


async def preload(redis: aioredis.Redis, keys: KeySpace, entries: list[tuple[str, str, str]],
                  node: str = "node-a") -> None:
    """XADD call entries ``(cs, action, id)`` in this order, in one pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for cs, action, mid in entries:
            pipe.xadd(keys.inbound_for(cs), {
                "v": 1, "kind": "call", "cs": cs, "proto": "ocpp1.6", "node": node,
                "conn": "c", "ts": 1, "id": mid, "action": action, "payload": "{}"})
        await pipe.execute()


async def all_acked(redis: aioredis.Redis, keys: KeySpace) -> None:
    async with asyncio.timeout(timeout(20)):
        while sum([await pending_count(redis, s, GROUP) for s in keys.all_inbound()]):
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(("batch", "max_in_flight"), [(1, 1000), (7, 10), (500, 3)])
async def test_batch_boundaries_keep_every_chargers_order(
        redis: aioredis.Redis, key_prefix: str, batch: int, max_in_flight: int) -> None:
    keys = KeySpace(prefix=key_prefix, shards=2)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=2, block=0.2,
                     batch=batch, max_in_flight=max_in_flight, start_id="0")
    seen: dict[str, list[int]] = {}

    @app.on_call("MeterValues")
    def meter(msg: Message) -> dict[str, Any]:     # a plain def: called inline
        seen.setdefault(msg.cs, []).append(int(msg.id))
        return {}

    entries = [(f"CP-{n % 5}", "MeterValues", str(n)) for n in range(60)]
    await preload(redis, keys, entries)
    task = await started(app)
    out = await read_out(redis, keys, count=60, timeout=timeout(30))
    await all_acked(redis, keys)
    await stopped(app, task)
    for cs, ids in seen.items():
        assert ids == sorted(ids), cs
    assert sorted(int(f[b"id"]) for f in out) == list(range(60))
    assert app.stats["handled"] == 60 and app.stats["failed"] == 0


async def test_one_write_per_batch(redis_server: RedisServer, key_prefix: str) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    keys = KeySpace(prefix=key_prefix, shards=1)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=5,
                     batch=25, start_id="0")

    @app.on_call("Heartbeat")
    def heartbeat(msg: Message) -> dict[str, Any]:
        return {"currentTime": "2026-12-04T12:00:00Z"}

    await preload(redis, keys, [(f"CP-{n}", "Heartbeat", str(n)) for n in range(100)])
    await redis.config_resetstat()
    task = await started(app)
    await read_out(redis, keys, count=100, timeout=timeout(30))
    await all_acked(redis, keys)
    stats = await redis.info("commandstats")
    await stopped(app, task)
    await redis.aclose()
    # 100 replies; 4 batches of 25: their XACKs ride with the following
    # reads, one XACK each (plus at most one empty read before the block).
    assert stats["cmdstat_xadd"]["calls"] == 100
    assert stats["cmdstat_xack"]["calls"] <= 5
    assert stats["cmdstat_xreadgroup"]["calls"] <= 7


async def test_a_handler_raising_inside_a_batch_fails_only_its_entry(
        redis: aioredis.Redis, key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix, shards=1)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2,
                     claim_idle=3600, start_id="0")

    @app.on_call("Authorize")
    def authorize(msg: Message) -> dict[str, Any]:
        if msg.id == "3":
            raise RuntimeError("token store down")
        return {"idTagInfo": {"status": "Accepted"}}

    await preload(redis, keys, [(f"CP-{n}", "Authorize", str(n)) for n in range(6)])
    task = await started(app)
    out = await read_out(redis, keys, count=5, timeout=timeout(20))
    assert sorted(f[b"id"] for f in out) == [b"0", b"1", b"2", b"4", b"5"]
    async with asyncio.timeout(timeout(20)):
        while await pending_count(redis, keys.inbound(0), GROUP) != 1:
            await asyncio.sleep(0.02)
        while not await redis.exists(app.errors_key):
            await asyncio.sleep(0.02)
    [pending] = await redis.xpending_range(keys.inbound(0), GROUP, "-", "+", 10)
    errors = await redis.hgetall(app.errors_key)
    await stopped(app, task)
    assert app.stats["failed"] == 1 and app.stats["handled"] == 5
    [error] = errors.values()
    assert error == b"RuntimeError: token store down"
    assert f"{keys.inbound(0).decode()} {pending['message_id'].decode()}".encode() in errors


async def test_partial_failure_in_one_pipelined_write_acks_only_what_was_written(
        redis: aioredis.Redis, key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix, shards=1)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2,
                     claim_idle=3600, start_id="0")
    state = f"{key_prefix}:state"

    @app.on_call("StatusNotification")
    def status(msg: Message) -> dict[str, Any]:
        # Entry 2's write hits a key of the wrong type: its reply is written,
        # the write fails, so it is not acknowledged.
        msg.write("HSET", state if msg.id != "2" else f"{key_prefix}:string", msg.cs, msg.id)
        return {}

    await redis.set(keys.out("broken"), "not a stream")        # XADD there: WRONGTYPE
    await redis.set(f"{key_prefix}:string", "not a hash")      # HSET there: WRONGTYPE
    await preload(redis, keys, [("CP-0", "StatusNotification", "0"),
                                ("CP-1", "StatusNotification", "1"),
                                ("CP-2", "StatusNotification", "2")])
    await preload(redis, keys, [("CP-3", "StatusNotification", "3")], node="broken")
    await preload(redis, keys, [("CP-4", "StatusNotification", "4")])
    task = await started(app)
    out = await read_out(redis, keys, count=4, timeout=timeout(20))
    assert sorted(f[b"id"] for f in out) == [b"0", b"1", b"2", b"4"]
    async with asyncio.timeout(timeout(20)):
        while await pending_count(redis, keys.inbound(0), GROUP) != 2:
            await asyncio.sleep(0.02)
        while len(await redis.hgetall(app.errors_key)) != 2:
            await asyncio.sleep(0.02)
    await stopped(app, task)
    assert app.stats["handled"] == 3 and app.stats["failed"] == 2
    # CP-3's write went through; its reply did not (the entry is retried).
    assert await redis.hgetall(state) == {b"CP-0": b"0", b"CP-1": b"1", b"CP-3": b"3",
                                          b"CP-4": b"4"}
    errors = list((await redis.hgetall(app.errors_key)).values())
    assert all(e.startswith(b"RedisReplyError: WRONGTYPE") for e in errors)
    pending = await redis.xpending_range(keys.inbound(0), GROUP, "-", "+", 10)
    assert len(pending) == 2


async def test_async_handler_holds_its_charger_while_plain_ones_go_on(
        redis: aioredis.Redis, key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix, shards=1)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2,
                     start_id="0")
    order: list[str] = []
    others_done = asyncio.Event()

    @app.on_call("StartTransaction")
    async def start(msg: Message) -> dict[str, Any]:
        await others_done.wait()
        order.append(f"{msg.cs}/{msg.id}")
        return {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}

    @app.on_call("MeterValues")
    def meter(msg: Message) -> dict[str, Any]:
        order.append(f"{msg.cs}/{msg.id}")
        if msg.cs == "CP-B" and msg.id == "b2":
            others_done.set()
        return {}

    await preload(redis, keys, [("CP-A", "StartTransaction", "a0"), ("CP-A", "MeterValues", "a1"),
                                ("CP-B", "MeterValues", "b1"), ("CP-A", "MeterValues", "a2"),
                                ("CP-B", "MeterValues", "b2")])
    task = await started(app)
    await read_out(redis, keys, count=5, timeout=timeout(20))
    await all_acked(redis, keys)
    await stopped(app, task)
    assert order == ["CP-B/b1", "CP-B/b2", "CP-A/a0", "CP-A/a1", "CP-A/a2"]


async def test_redis_restart_mid_batch(key_prefix: str) -> None:
    server = RedisServer().start()
    try:
        redis = aioredis.Redis.from_url(server.url)
        keys = KeySpace(prefix=key_prefix, shards=1)
        app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2,
                         start_id="0")
        killed = asyncio.Event()

        @app.on_call("Heartbeat")
        def heartbeat(msg: Message) -> dict[str, Any]:
            if msg.id == "5" and server.proc is not None and not killed.is_set():
                server.proc.kill()          # Redis dies in the middle of this batch
                killed.set()
            return {"currentTime": "2026-12-04T12:00:00Z"}

        await preload(redis, keys, [(f"CP-{n}", "Heartbeat", str(n)) for n in range(10)])
        task = await started(app)
        await asyncio.wait_for(killed.wait(), timeout(20))
        assert server.proc is not None
        server.proc.wait()
        server.stop()
        server = RedisServer(port=server.port).start()      # empty: streams and group gone
        deadline = time.monotonic() + timeout(30)
        while True:
            try:
                eid = await publish(redis, keys, "call", "CP-after", action="Heartbeat",
                                    id="after", payload={})
                break
            except (OSError, ConnectionError, aioredis.ConnectionError):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        [out] = await read_out(redis, keys, timeout=timeout(30))
        assert (out[b"id"], out[b"kind"]) == (b"after", b"result")
        assert orjson.loads(out[b"payload"]) == {"currentTime": "2026-12-04T12:00:00Z"}
        await wait_acked(redis, keys.inbound_for("CP-after"), GROUP, eid, timeout=timeout(20))
        await stopped(app, task)
        await redis.aclose()
    finally:
        server.stop()
