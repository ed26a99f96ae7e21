"""OutboundReader against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from router.embedded_redis import RedisServer
from router.streams import KeySpace, OutboundReader, RedisReplyError
from router.streams.reader import Entries, next_id
from tests.streams.helpers import client, until, until_async


class Sink:
    def __init__(self) -> None:
        self.batches: list[Entries] = []

    def __call__(self, entries: Entries) -> None:
        self.batches.append(entries)

    @property
    def entries(self) -> Entries:
        return [e for batch in self.batches for e in batch]


def test_next_id() -> None:
    assert next_id(b"1-0") == b"1-1"
    assert next_id(b"1763731200123-41") == b"1763731200123-42"
    assert next_id(b"5-%d" % (2**64 - 1)) == b"6-0"
    with pytest.raises(ValueError):
        next_id(b"nope")


async def test_delivers_in_order_and_trims(redis_session: RedisServer, key_prefix: str) -> None:
    key = KeySpace(key_prefix).out("node-1")
    async with client(redis_session.url) as r:
        await r.xadd(key, {b"kind": b"stale"})  # there before start: not delivered
        sink = Sink()
        reader = OutboundReader(redis_session.url, key, sink, block_ms=200, count=7)
        await reader.start()
        try:
            sent = []
            for i in range(50):
                fields = {b"kind": b"result", b"cs": "Zürich".encode(), b"id": str(i).encode(),
                          b"payload": b'{"status":"Accepted"}'}
                sent.append((await r.xadd(key, fields), fields))
            await until(lambda: len(sink.entries) == 50, what="50 entries")
            assert sink.entries == sent
            assert max(len(b) for b in sink.batches) <= 7
            # Everything delivered, and the stale entry, is trimmed away.
            await until_len(r, key, 0)
            assert reader.last_id == sent[-1][0]
            assert reader.stats.entries == 50
        finally:
            await reader.stop()


async def until_len(r: aioredis.Redis, key: bytes, n: int) -> None:
    async def probe() -> bool:
        return bool(await r.xlen(key) == n)

    # The XTRIM goes out with the next XREAD, right after delivery.
    await until_async(probe, what=f"stream length {n}")


async def test_no_trim_keeps_entries(redis_session: RedisServer, key_prefix: str) -> None:
    key = KeySpace(key_prefix).out("node-2")
    sink = Sink()
    reader = OutboundReader(redis_session.url, key, sink, block_ms=100, trim=False)
    await reader.start()
    try:
        async with client(redis_session.url) as r:
            for i in range(3):
                await r.xadd(key, {b"i": str(i).encode()})
            await until(lambda: len(sink.entries) == 3)
            await until(lambda: reader.stats.reads >= 2, what="another XREAD round")
            assert await r.xlen(key) == 3
    finally:
        await reader.stop()


async def test_callback_error_does_not_stop_reader(redis_session: RedisServer,
                                                   key_prefix: str) -> None:
    key = KeySpace(key_prefix).out("node-3")
    seen: list[bytes] = []
    handled: list[BaseException] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, ctx: handled.append(ctx["exception"]))

    def boom(entries: Entries) -> None:
        seen.extend(e[0] for e in entries)
        if len(seen) == 1:
            raise RuntimeError("handler bug")

    reader = OutboundReader(redis_session.url, key, boom, block_ms=100)
    await reader.start()
    try:
        async with client(redis_session.url) as r:
            first = await r.xadd(key, {b"a": b"1"})
            await until(lambda: len(seen) == 1)
            second = await r.xadd(key, {b"a": b"2"})
            await until(lambda: len(seen) == 2)
        assert seen == [first, second]
        assert reader.stats.callback_errors == 1
        assert [str(e) for e in handled] == ["handler bug"]
    finally:
        await reader.stop()
        loop.set_exception_handler(None)


async def test_start_on_wrong_type(redis_session: RedisServer, key_prefix: str) -> None:
    key = f"{key_prefix}:string".encode()
    async with client(redis_session.url) as r:
        await r.set(key, b"x")
    reader = OutboundReader(redis_session.url, key, Sink())
    with pytest.raises(RedisReplyError):
        await reader.start()
    await reader.stop()


async def test_start_id_delivers_existing_entries(redis_session: RedisServer,
                                                  key_prefix: str) -> None:
    key = KeySpace(key_prefix).out("node-4")
    async with client(redis_session.url) as r:
        first = await r.xadd(key, {b"n": b"1"})
        second = await r.xadd(key, {b"n": b"2"})
        sink = Sink()
        reader = OutboundReader(redis_session.url, key, sink, block_ms=100, start_id=first)
        await reader.start()
        try:
            await until(lambda: len(sink.entries) == 1)
            assert sink.entries == [(second, {b"n": b"2"})]
            # Trimmed up to what was delivered, the entry before start_id included.
            await until_len(r, key, 0)
        finally:
            await reader.stop()
    with pytest.raises(ValueError):
        OutboundReader(redis_session.url, key, sink, start_id=b"x-y")
