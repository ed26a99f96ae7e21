"""Play the router's side of docs/streams.md in tests, before/without a router process."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from router.backend import BackendApp
from router.streams.keys import KeySpace
from tests.conftest import timeout

_ids = itertools.count(1)


async def started(app: BackendApp) -> asyncio.Task[None]:
    """Run ``app`` in a task; return it once the app reads."""
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.wait_ready(), timeout(10))
    return task


async def stopped(app: BackendApp, task: asyncio.Task[None]) -> None:
    """Stop ``app`` and wait for its :meth:`~BackendApp.run` to return."""
    app.stop()
    await asyncio.wait_for(task, timeout(20))


async def publish(redis: aioredis.Redis, keys: KeySpace, kind: str, cs: str, *,
                  node: str = "node-a", conn: str = "conn-1", proto: str = "ocpp1.6",
                  **fields: Any) -> str:
    """XADD one inbound entry exactly as a router does; returns its entry id."""
    entry: dict[Any, Any] = {"v": 1, "kind": kind, "cs": cs, "proto": proto, "node": node,
                             "conn": conn, "ts": int(time.time() * 1000)}
    for name, value in fields.items():
        entry[name] = orjson.dumps(value) if isinstance(value, dict) else value
    if kind in ("call", "send") and "id" not in entry:
        entry["id"] = f"m{next(_ids)}"
    eid = await redis.xadd(keys.inbound_for(cs), entry, maxlen=1_000_000, approximate=True)
    return eid.decode()


async def read_stream(redis: aioredis.Redis, key: bytes | str, count: int = 1,
                      timeout: float = 10.0) -> list[dict[bytes, bytes]]:
    """Wait for ``count`` entries in a stream (XREAD BLOCK from the start, no sleeps)."""
    got: list[dict[bytes, bytes]] = []
    last: bytes | str = "0-0"
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"only {len(got)} of {count} entries arrived in {key!r}")
        # Short blocks: redis-py's default socket timeout (5 s) cuts longer ones.
        resp = await redis.xread({key: last}, block=max(1, int(min(left, 2) * 1000)))
        for _stream, entries in resp or ():
            for eid, fields in entries:
                last = eid
                got.append(fields)
    return got


async def read_out(redis: aioredis.Redis, keys: KeySpace, node: str = "node-a",
                   count: int = 1, timeout: float = 10.0) -> list[dict[bytes, bytes]]:
    """Wait for ``count`` entries in the out stream of ``node``."""
    return await read_stream(redis, keys.out(node), count, timeout)


async def pending_count(redis: aioredis.Redis, stream: bytes | str, group: str) -> int:
    info = await redis.xpending(stream, group)
    return int(info["pending"])


async def wait_until_pending(redis: aioredis.Redis, stream: bytes | str, group: str,
                             count: int, timeout: float = 10.0) -> None:
    """Poll XPENDING until it reaches ``count`` (Redis offers no blocking wait for acks)."""
    deadline = time.monotonic() + timeout
    while await pending_count(redis, stream, group) != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"pending count did not reach {count}")
        await asyncio.sleep(0.01)


def _eid(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def wait_acked(redis: aioredis.Redis, stream: bytes | str, group: str, entry_id: str,
                     timeout: float = 10.0) -> None:
    """Poll until the group has delivered ``entry_id`` and nothing is pending."""
    deadline = time.monotonic() + timeout
    while True:
        [info] = [g for g in await redis.xinfo_groups(stream) if g["name"] == group.encode()]
        if _eid(info["last-delivered-id"]) >= _eid(entry_id) and info["pending"] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{entry_id} was not acknowledged by {group}")
        await asyncio.sleep(0.01)


class FakeRouter:
    """The out-stream side of one router node, for ``Client`` tests.

    It answers every ``call`` entry of ``<prefix>:out:<node>`` through
    ``reply_to`` with what ``answer(fields)`` returns (kind + fields), exactly
    as docs/streams.md says a router does.
    """

    def __init__(self, redis: aioredis.Redis, keys: KeySpace, node: str, answer: Any) -> None:
        self.redis, self.keys, self.node, self.answer = redis, keys, node, answer
        self.seen: list[dict[bytes, bytes]] = []
        self.conn = uuid.uuid4().hex[:16]
        self._task: asyncio.Task[None] | None = None

    async def register(self, identity: str, proto: str = "ocpp1.6") -> None:
        await self.redis.hset(self.keys.registry(identity), mapping={
            "node": self.node, "conn": self.conn, "proto": proto,
            "since": int(time.time() * 1000), "addr": "127.0.0.1:5555"})
        await self.redis.expire(self.keys.registry(identity), 300)

    async def __aenter__(self) -> FakeRouter:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _loop(self) -> None:
        last = "0-0"  # the stream is new in each test: nothing old to skip
        while True:
            resp = await self.redis.xread({self.keys.out(self.node): last}, block=1000)
            for _stream, entries in resp or ():
                for eid, fields in entries:
                    last = eid
                    self.seen.append(fields)
                    reply = self.answer(fields)
                    if reply is None or b"reply_to" not in fields:
                        continue
                    entry = {"v": 1, "cs": fields[b"cs"], "proto": "ocpp1.6",
                             "node": self.node, "conn": self.conn,
                             "ts": int(time.time() * 1000), "id": fields[b"id"],
                             "action": fields[b"action"], **reply}
                    await self.redis.xadd(self.keys.inbound_for(fields[b"cs"].decode()), entry)
                    await self.redis.xadd(fields[b"reply_to"], entry, maxlen=10000,
                                          approximate=True)
