"""Registry semantics against a real redis-server, over both client kinds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from router.embedded_redis import RedisServer
from router.streams import KeySpace, RedisConnection, StreamsError, open_connection
from router.streams.registry import REFRESH_CHUNK, Entry, Holder, Registry
from tests.streams.helpers import client


@pytest.fixture(params=["redis-py", "RedisConnection"])
async def registry(request: pytest.FixtureRequest, redis_session: RedisServer,
                   key_prefix: str) -> AsyncIterator[Registry]:
    conn: aioredis.Redis | RedisConnection
    if request.param == "redis-py":
        conn = aioredis.Redis.from_url(redis_session.url)
    else:
        conn = await open_connection(redis_session.url)
    try:
        yield Registry(conn, KeySpace(key_prefix), ttl=60)
    finally:
        if isinstance(conn, RedisConnection):
            conn.close()
            await conn.wait_closed()
        else:
            await conn.aclose()


async def register(reg: Registry, ident: str, node: str, conn: str) -> Holder | None:
    return await reg.register(ident, node=node, conn=conn, proto="ocpp2.0.1",
                              since_ms=1763731200123, addr="10.0.0.7:50312")


async def test_register_lookup(registry: Registry, redis_session: RedisServer) -> None:
    assert await registry.lookup("CP-1") is None
    assert await register(registry, "CP-1", "node-a", "c1") is None
    assert await registry.lookup("CP-1") == {
        "node": "node-a", "conn": "c1", "proto": "ocpp2.0.1", "since": "1763731200123",
        "addr": "10.0.0.7:50312"}
    async with client(redis_session.url) as r:
        ttl = await r.ttl(registry.keys.registry("CP-1"))
    assert 0 < ttl <= 60


async def test_takeover_returns_previous_holder(registry: Registry) -> None:
    await register(registry, "Zürich-1", "node-a", "c1")
    previous = await register(registry, "Zürich-1", "node-b", "c2")
    assert previous == Holder("node-a", "c1")
    prev_node, prev_conn = previous  # unpacks like a tuple
    assert prev_node == "node-a"
    assert (await registry.lookup("Zürich-1") or {})["conn"] == "c2"
    # The old connection's cleanup must not remove the newer entry.
    assert await registry.unregister("Zürich-1", prev_conn) is False
    assert (await registry.lookup("Zürich-1") or {})["node"] == "node-b"
    assert await registry.unregister("Zürich-1", "c2") is True
    assert await registry.lookup("Zürich-1") is None
    assert await registry.unregister("Zürich-1", "c2") is False


async def test_register_replaces_stale_fields(registry: Registry,
                                              redis_session: RedisServer) -> None:
    key = registry.keys.registry("CP-9")
    async with client(redis_session.url) as r:
        await r.hset(key, mapping={b"node": b"old", b"conn": b"c0", b"junk": b"x"})
    assert await register(registry, "CP-9", "node-a", "c1") == Holder("old", "c0")
    entry = await registry.lookup("CP-9")
    assert entry is not None and "junk" not in entry


async def test_refresh_reports_missing(registry: Registry, redis_session: RedisServer) -> None:
    await register(registry, "CP-1", "node-a", "c1")
    await register(registry, "CP-2", "node-a", "c2")
    async with client(redis_session.url) as r:
        await r.expire(registry.keys.registry("CP-1"), 5)
        await r.delete(registry.keys.registry("CP-2"))
        assert await registry.refresh(["CP-1", "CP-2"]) == ["CP-2"]
        assert await r.ttl(registry.keys.registry("CP-1")) > 5
    assert await registry.refresh([]) == []


async def test_refresh_many_in_chunks(registry: Registry, redis_session: RedisServer) -> None:
    n = REFRESH_CHUNK * 2 + 7
    async with client(redis_session.url) as r:
        async with r.pipeline(transaction=False) as pipe:
            for i in range(0, n, 2):  # every other identity is registered
                pipe.hset(registry.keys.registry(f"CP-{i}"), "conn", f"c{i}")
            await pipe.execute()
    missing = await registry.refresh(f"CP-{i}" for i in range(n))
    assert missing == [f"CP-{i}" for i in range(1, n, 2)]


async def test_node_alive(registry: Registry, redis_session: RedisServer) -> None:
    assert await registry.node_is_alive("node-a") is False
    await registry.node_alive("node-a", 30)
    assert await registry.node_is_alive("node-a") is True
    async with client(redis_session.url) as r:
        key = registry.keys.node("node-a")
        assert 0 < await r.ttl(key) <= 30
        assert int(await r.get(key)) > 1_700_000_000_000


@pytest.mark.parametrize("kind", ["redis-py", "RedisConnection"])
async def test_script_cache_flushed(redis_server: RedisServer, kind: str) -> None:
    """After a restart/failover the script cache is empty: NOSCRIPT → EVAL.
    (A private server: flushing the shared one's cache would touch other tests.)"""
    conn: aioredis.Redis | RedisConnection
    if kind == "redis-py":
        conn = aioredis.Redis.from_url(redis_server.url)
    else:
        conn = await open_connection(redis_server.url)
    registry = Registry(conn, KeySpace(), ttl=60)
    try:
        await register(registry, "CP-1", "node-a", "c1")
        async with client(redis_server.url) as r:
            await r.script_flush()
        assert await register(registry, "CP-1", "node-b", "c2") == Holder("node-a", "c1")
        async with client(redis_server.url) as r:
            await r.script_flush()
        assert await registry.unregister("CP-1", "c2") is True
    finally:
        if isinstance(conn, RedisConnection):
            conn.close()
            await conn.wait_closed()
        else:
            await conn.aclose()


@pytest.mark.parametrize("kind", ["redis-py", "RedisConnection"])
async def test_restore_many_after_an_empty_restart(redis_server: RedisServer, kind: str) -> None:
    """What a node does once Redis lost its registry: every entry written back
    in chunks, the script cache empty (NOSCRIPT → EVAL within the chunk), an
    entry a newer connection wrote meanwhile left alone. A private server: the
    script flush would touch other tests."""
    conn: aioredis.Redis | RedisConnection
    if kind == "redis-py":
        conn = aioredis.Redis.from_url(redis_server.url)
    else:
        conn = await open_connection(redis_server.url)
    registry = Registry(conn, KeySpace(), ttl=60)
    n = REFRESH_CHUNK * 2 + 3
    try:
        await register(registry, "CP-5", "node-b", "newer")
        async with client(redis_server.url) as r:
            await r.script_flush()
        entries = [Entry(f"CP-{i}", "node-a", f"c{i}", "ocpp1.6", 1_763_731_200_000 + i,
                         "10.0.0.7:1") for i in range(n)]
        assert await registry.restore_many(entries) == n - 1
        assert (await registry.lookup("CP-5") or {})["conn"] == "newer"
        assert await registry.lookup(f"CP-{n - 1}") == {
            "node": "node-a", "conn": f"c{n - 1}", "proto": "ocpp1.6",
            "since": str(1_763_731_200_000 + n - 1), "addr": "10.0.0.7:1"}
        assert await registry.refresh(e.identity for e in entries) == []
        assert await registry.restore_many(entries) == 0     # all there: nothing written
        assert await registry.restore_many([]) == 0
        # A SOAP charger's entry carries its transport and endpoint.
        soap = Entry("CP-soap", "node-a", "c-soap", "ocpp1.5", 1_763_731_200_000, "10.0.0.8:1",
                     ("transport", "soap", "endpoint", "http://10.0.0.8:8080/"))
        assert await registry.restore_many([soap]) == 1
        assert await registry.lookup("CP-soap") == {
            "node": "node-a", "conn": "c-soap", "proto": "ocpp1.5", "since": "1763731200000",
            "addr": "10.0.0.8:1", "transport": "soap", "endpoint": "http://10.0.0.8:8080/"}
        async with client(redis_server.url) as r:
            assert 0 < await r.ttl(registry.keys.registry("CP-0")) <= 60
    finally:
        if isinstance(conn, RedisConnection):
            conn.close()
            await conn.wait_closed()
        else:
            await conn.aclose()


async def test_unreachable_redis_raises_streams_error(port: int) -> None:
    conn = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(StreamsError):
            await Registry(conn, KeySpace()).lookup("CP-1")
    finally:
        await conn.aclose()
