"""Replies and acknowledgements, batched per event-loop iteration.

Handlers of many chargers finish in the same loop iteration under load.
Instead of two round trips per entry (XADD the reply, then XACK), the outbox
writes everything submitted meanwhile in two pipelined round trips: first all
replies, then the XACKs of exactly those entries whose reply was written, so
the "acknowledge only after the reply" rule of docs/streams.md holds per entry.
One task, one Redis connection, however many handlers run.

With ``connect`` (a plain Redis server the SDK can reach directly) the writes
go through the compiled RESP encoder and reply reader on a connection of its
own (router.streams.connection) instead of redis-py: this is the path of
handlers that awaited, whose answers cannot ride with their reader's batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.streams._resp import CommandBuffer
from router.streams.connection import RedisConnection
from router.streams.errors import RedisReplyError, StreamsError

# docs/streams.md: "Backends should add to out streams with MAXLEN ~ 100000".
OUT_MAXLEN = 100_000


@dataclasses.dataclass(slots=True)
class _Item:
    stream: str
    entry_id: str
    out_key: bytes | None
    fields: dict[Any, Any] | None
    done: asyncio.Future[None]


class Outbox:
    """Write replies to out streams and acknowledge inbound entries, in batches.

    Args:
        redis: the Redis client.
        group: the consumer group that acknowledges.
    """

    def __init__(self, redis: aioredis.Redis, group: str,
                 connect: Callable[[], Awaitable[RedisConnection]] | None = None) -> None:
        self.redis = redis
        self.group = group
        self._connect = connect
        self._conn: RedisConnection | None = None
        self._items: list[_Item] = []
        self._task: asyncio.Task[None] | None = None

    def put(self, stream: str, entry_id: str, out_key: bytes | None = None,
            fields: dict[Any, Any] | None = None) -> asyncio.Future[None]:
        """Queue an acknowledgement, preceded by a reply when ``out_key`` is given.

        The returned future resolves once the entry is acknowledged, or fails
        with the Redis error that prevented the reply or the acknowledgement
        (then the entry stays pending).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.append(_Item(stream, entry_id, out_key, fields, done))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="backend-outbox")
        return done

    async def _run(self) -> None:
        try:
            while self._items:
                # One yield lets every handler finishing in this iteration add
                # its entry; under load, entries also pile up during a write.
                await asyncio.sleep(0)
                items, self._items = self._items, []
                if self._connect is not None:
                    await self._write_direct(items)
                else:
                    await self._write(items)
        finally:
            self._task = None

    async def aclose(self) -> None:
        """Close the direct connection (if one is open)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()

    async def _round_trip(self, buf: CommandBuffer) -> list[Any]:
        conn = self._conn
        if conn is None or not conn.connected:
            assert self._connect is not None
            conn = self._conn = await self._connect()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        n = len(buf)
        conn.send_raw(buf.take(), n, lambda r: None if fut.done() else fut.set_result(r), 30.0)
        replies = await fut
        if isinstance(replies, StreamsError):
            raise replies
        return replies  # type: ignore[no-any-return]

    async def _write_direct(self, items: list[_Item]) -> None:
        # Same two steps as _write, on the compiled path: the XADDs, then the
        # XACKs of the entries whose XADD succeeded (and of those without one).
        try:
            buf = CommandBuffer()
            replies = [it for it in items if it.out_key is not None]
            for it in replies:
                assert it.fields is not None and it.out_key is not None
                buf.append_xadd(it.out_key, OUT_MAXLEN, [x for kv in it.fields.items() for x in kv])
            if replies:
                for it, result in zip(replies, await self._round_trip(buf), strict=True):
                    if isinstance(result, RedisReplyError):
                        it.done.set_exception(result)
            by_stream: dict[str, list[_Item]] = {}
            for it in items:
                if not it.done.done():
                    by_stream.setdefault(it.stream, []).append(it)
            if not by_stream:
                return
            for stream, group_items in by_stream.items():
                buf.append_xack(stream, self.group, [it.entry_id for it in group_items])
            results = await self._round_trip(buf)
            for (_stream, group_items), result in zip(by_stream.items(), results, strict=True):
                for it in group_items:
                    if isinstance(result, RedisReplyError):
                        it.done.set_exception(result)
                    else:
                        it.done.set_result(None)
        except StreamsError as exc:
            if self._conn is not None:
                self._conn.abort()
                self._conn = None
            for it in items:
                if not it.done.done():
                    it.done.set_exception(exc)

    async def _write(self, items: list[_Item]) -> None:
        try:
            replies = [it for it in items if it.out_key is not None]
            if replies:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for it in replies:
                        pipe.xadd(it.out_key, it.fields, maxlen=OUT_MAXLEN,  # type: ignore[arg-type]
                                  approximate=True)
                    results = await pipe.execute(raise_on_error=False)
                for it, result in zip(replies, results, strict=True):
                    if isinstance(result, Exception):
                        it.done.set_exception(result)
            ackable = [it for it in items if not it.done.done()]
            by_stream: dict[str, list[_Item]] = {}
            for it in ackable:
                by_stream.setdefault(it.stream, []).append(it)
            if by_stream:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for stream, group_items in by_stream.items():
                        pipe.xack(stream, self.group, *(it.entry_id for it in group_items))
                    results = await pipe.execute(raise_on_error=False)
                for (_stream, group_items), result in zip(by_stream.items(), results, strict=True):
                    for it in group_items:
                        if isinstance(result, Exception):
                            it.done.set_exception(result)
                        else:
                            it.done.set_result(None)
        except (RedisError, OSError) as exc:
            for it in items:
                if not it.done.done():
                    it.done.set_exception(exc)
