"""De-duplication of redelivered inbound entries (router/backend/dedup.py),
against a real redis-server, the test playing a router that wrote a batch twice."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def test_a_message_written_twice_is_handled_once(redis: aioredis.Redis,
                                                       key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix)
    handled: list[tuple[str, str]] = []

    def make_app() -> BackendApp:
        app = BackendApp(redis, group=GROUP, prefix=key_prefix, block=0.2, start_id="0",
                         dedup=Deduplicator(redis, prefix=key_prefix, group=GROUP))

        @app.on_call("Authorize")
        async def authorize(msg: Message) -> dict[str, Any]:
            handled.append((msg.conn, msg.id))
            return {"idTagInfo": {"status": "Accepted"}}

        @app.on_connected()
        async def connected(msg: Message) -> None:
            handled.append((msg.conn, "connected"))
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


async def test_the_same_entry_delivered_again_is_handled_again(redis: aioredis.Redis,
                                                               key_prefix: str) -> None:
    # A handled entry whose answer was never written (its master died before
    # the XADD) is claimed again: the charger still waits, so it is handled
    # again. Only a copy under another entry id is a duplicate.
    keys = KeySpace(prefix=key_prefix)
    call = {"id": "m1", "action": "Authorize", "payload": {"idTag": "A"}}
    ids = [await publish(redis, keys, "call", "CP-1", conn="c1", **call) for _ in range(2)]
    stream = keys.inbound_for("CP-1").decode()
    entries = dict(await redis.xrange(stream))
    first, copy = (Message(stream, eid, entries[eid.encode()]) for eid in ids)
    dedup = Deduplicator(redis, prefix=key_prefix, group=GROUP)
    assert not await dedup.seen(first)
    await dedup.mark(first)
    assert not await dedup.seen(first)
    assert await dedup.seen(copy)
    # A restarted consumer (empty local cache) tells them apart through Redis.
    restarted = Deduplicator(redis, prefix=key_prefix, group=GROUP)
    assert not await restarted.seen(first)
    assert await restarted.seen(copy)
    assert (dedup.dropped, restarted.dropped) == (1, 1)
