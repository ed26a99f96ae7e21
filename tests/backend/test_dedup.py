"""De-duplication of redelivered inbound entries (router/backend/dedup.py),
against a real redis-server, the test playing a router that wrote a batch twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.backend import BackendApp, Deduplicator, Message
from router.streams.keys import KeySpace
from tests.backend.helpers import publish, read_out, wait_acked
from tests.conftest import timeout

GROUP = "csms"


async def run_app(app: BackendApp, until: Any) -> None:
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.wait_ready(), timeout(10))
    try:
        async with asyncio.timeout(timeout(10)):
            while not until():
                await asyncio.sleep(0.02)
    finally:
        app.stop()
        await asyncio.wait_for(task, timeout(20))


@pytest.mark.parametrize("plain", [True, False], ids=["def", "async-def"])
async def test_a_message_written_twice_is_handled_once(redis: aioredis.Redis,
                                                       key_prefix: str, plain: bool) -> None:
    # Plain `def` handlers take the batch path (one EXISTS per entry in one
    # write, the mark with the answer); `async def` ones finish in a task.
    keys = KeySpace(prefix=key_prefix)
    handled: list[tuple[str, str]] = []

    def make_app() -> BackendApp:
        app = BackendApp(redis, group=GROUP, prefix=key_prefix, block=0.2, start_id="0",
                         dedup=Deduplicator(redis, prefix=key_prefix, group=GROUP))

        def authorize(msg: Message) -> dict[str, Any]:
            handled.append((msg.conn, msg.id))
            return {"idTagInfo": {"status": "Accepted"}}

        def connected(msg: Message) -> None:
            handled.append((msg.conn, "connected"))

        async def authorize_async(msg: Message) -> dict[str, Any]:
            return authorize(msg)

        async def connected_async(msg: Message) -> None:
            connected(msg)

        app.on_call("Authorize")(authorize if plain else authorize_async)
        app.on_connected()(connected if plain else connected_async)
        return app

    call = {"id": "m1", "action": "Authorize", "payload": {"idTag": "A"}}
    first = [await publish(redis, keys, "connected", "CP-1", conn="c1"),
             await publish(redis, keys, "call", "CP-1", conn="c1", **call),
             await publish(redis, keys, "call", "CP-1", conn="c1", **call),     # the resend
             await publish(redis, keys, "connected", "CP-1", conn="c1"),        # the resend
             # Same message id on another connection: a different message.
             await publish(redis, keys, "call", "CP-1", conn="c2", **call)]
    app = make_app()
    await run_app(app, lambda: len(handled) >= 3 and app.stats["duplicates"] >= 2)
    for eid in first:
        await wait_acked(redis, keys.inbound_for("CP-1"), GROUP, eid)
    assert sorted(handled) == [("c1", "connected"), ("c1", "m1"), ("c2", "m1")]
    assert len(await read_out(redis, keys, count=2)) == 2   # one answer per message
    # A restarted consumer (empty local cache) still knows, through Redis.
    late = await publish(redis, keys, "call", "CP-1", conn="c1", **call)
    app = make_app()
    await run_app(app, lambda: app.stats["duplicates"] >= 1)
    await wait_acked(redis, keys.inbound_for("CP-1"), GROUP, late)
    assert len(handled) == 3


async def test_a_copy_in_a_later_batch_is_dropped_by_the_mark_in_redis(
        redis: aioredis.Redis, key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix, shards=2)
    handled: list[str] = []
    dedup = Deduplicator(redis, prefix=key_prefix, group=GROUP, local=0)  # no local cache
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=2, block=0.2, dedup=dedup)

    @app.on_call("Heartbeat")
    def heartbeat(msg: Message) -> dict[str, Any]:
        handled.append(msg.id)
        return {"currentTime": "2026-12-04T12:00:00Z"}

    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.wait_ready(), timeout(10))
    try:
        call = {"action": "Heartbeat", "payload": {}, "conn": "c1"}
        first = await publish(redis, keys, "call", "CP-7", id="h1", **call)
        await read_out(redis, keys)
        await wait_acked(redis, keys.inbound_for("CP-7"), GROUP, first)
        # The mark is in Redis, on the shard's hash tag (one slot with its stream).
        shard = keys.inbound_for("CP-7")
        tag = (shard.decode() if isinstance(shard, bytes) else shard).rsplit(":", 1)[1]
        assert await redis.exists(f"{key_prefix}:seen:{GROUP}:{tag}:CP-7:c1:call:h1") == 1
        copy = await publish(redis, keys, "call", "CP-7", id="h1", **call)
        fresh = await publish(redis, keys, "call", "CP-7", id="h2", **call)
        await wait_acked(redis, keys.inbound_for("CP-7"), GROUP, fresh)
        await wait_acked(redis, keys.inbound_for("CP-7"), GROUP, copy)
        assert handled == ["h1", "h2"]
        assert app.stats["duplicates"] == 1 and dedup.dropped == 1
        assert len(await read_out(redis, keys, count=2)) == 2   # no second answer to h1
    finally:
        app.stop()
        await asyncio.wait_for(task, timeout(20))


@pytest.mark.parametrize("coroutine", [False, True], ids=["def", "async-def"])
async def test_an_entry_whose_answer_was_lost_is_answered_when_claimed(
        redis: aioredis.Redis, key_prefix: str, coroutine: bool) -> None:
    # The answer's XADD fails (here: the out stream key has the wrong type;
    # in production: its master died mid-write; on a cluster the mark, on the
    # shard's master, lands anyway). The entry stays pending; when it is
    # claimed, its mark names this very entry, so it is handled again rather
    # than acknowledged without an answer while the charger waits.
    keys = KeySpace(prefix=key_prefix)
    out = keys.out("node-a")
    await redis.set(out, "not a stream")
    handled: list[str] = []
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, block=0.2, start_id="0",
                     claim_idle=0.5, claim_interval=0.2,
                     dedup=Deduplicator(redis, prefix=key_prefix, group=GROUP))

    def answer(msg: Message) -> dict[str, Any]:
        handled.append(msg.entry_id)
        return {"idTagInfo": {"status": "Accepted"}}

    async def answer_later(msg: Message) -> dict[str, Any]:
        return answer(msg)

    app.on_call("Authorize")(answer_later if coroutine else answer)
    eid = await publish(redis, keys, "call", "CP-1", conn="c1", id="m1", action="Authorize",
                        payload={"idTag": "A"})
    task = asyncio.create_task(app.run())
    try:
        async with asyncio.timeout(timeout(10)):
            while app.stats["failed"] < 1:
                await asyncio.sleep(0.02)
        await redis.delete(out)
        [reply] = await read_out(redis, keys, count=1, timeout=timeout(10))
        assert reply[b"kind"] == b"result" and reply[b"id"] == b"m1"
        await wait_acked(redis, keys.inbound_for("CP-1"), GROUP, eid, timeout=timeout(10))
        assert handled == [eid, eid] and app.stats["duplicates"] == 0
        assert len([k async for k in redis.scan_iter(match=f"{key_prefix}:seen:*")]) == 1
    finally:
        app.stop()
        await asyncio.wait_for(task, timeout(20))
