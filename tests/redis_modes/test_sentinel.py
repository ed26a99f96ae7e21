"""Sentinel: master discovery, re-discovery after a SIGKILL of the master,
-READONLY after a demotion handled as a failover, on the hot path's own
connections and in the SDK/CLI, against a real master + replica + 3 sentinels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis.asyncio as aioredis
import redis.exceptions
import websockets

from router.backend import Client
from router.embedded_redis import RedisServer
from router.streams import (
    KeySpace,
    Publisher,
    RedisConnectionError,
    open_connection,
    parse_redis_url,
)
from router.streams.connection import SharedConnection, discover_master
from tests.conftest import start_router, timeout
from tests.redis_modes.run_cli import cli
from tests.redis_modes.sentinel import MASTER_NAME, SentinelDeployment
from tests.streams.helpers import client, until


@pytest.fixture
def sentinel() -> Iterator[SentinelDeployment]:
    with SentinelDeployment() as deployment:
        yield deployment


@pytest.fixture
async def backend(sentinel: SentinelDeployment) -> AsyncIterator[aioredis.Redis]:
    r = parse_redis_url(sentinel.url()).redis_py()
    try:
        yield r
    finally:
        await r.aclose()


async def test_discovery_and_role_check(sentinel: SentinelDeployment) -> None:
    url = parse_redis_url(sentinel.url())
    assert await discover_master(url) == ("127.0.0.1", sentinel.master_port())
    conn = await open_connection(sentinel.url(db=2), name="t-sentinel")
    assert conn.address is not None and conn.address.port == sentinel.master_port()
    await conn.command("SET", "k", "v")
    conn.close()
    # Sentinels that know no such master: one clear error.
    wrong = sentinel.url().replace(MASTER_NAME, "nope")
    with pytest.raises(RedisConnectionError, match="knows no master 'nope'"):
        await open_connection(wrong)
    # Dead sentinels first: the live one still answers.
    dead = f"redis+sentinel://127.0.0.1:1,{sentinel.url().split('://', 1)[1]}"
    conn = await open_connection(dead)
    conn.close()


@pytest.mark.parametrize("replicas", [1, 2])
async def test_publisher_follows_a_failover_with_replicated_durability(replicas: int) -> None:
    """SIGKILL the master while publishing with WAIT 1: the publisher holds what
    it cannot write, finds the promoted replica, and every entry it reported as
    published is on the new master. With one replica the new master has none
    left to confirm WAIT: entries fail as not replicated (never counted as
    published) until a replica is back; with two, none fails."""
    ks = KeySpace("ocpp")
    done: dict[int, bytes] = {}
    failed: dict[int, Exception] = {}
    with SentinelDeployment(replicas=replicas) as sentinel:
        pub = Publisher(sentinel.url(), keys=ks, timeout=timeout(30 if replicas > 1 else 8),
                        backoff_max=0.2, connect_timeout=1.0, wait_replicas=1)
        await pub.start()
        try:
            tag = 0

            def publish(n: int) -> None:
                nonlocal tag
                for _ in range(n):
                    t = tag
                    pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(t),
                                        "Heartbeat", b"{}",
                                        on_done=lambda i, t=t: done.__setitem__(t, i),
                                        on_error=lambda e, t=t: failed.__setitem__(t, e))
                    tag += 1

            for _ in range(20):
                publish(50)
                await asyncio.sleep(0.01)
            await pub.wait_flushed()
            assert failed == {} and len(done) == 1000
            old = sentinel.kill_master()
            # Keep publishing through the failover: these are held, then written.
            for _ in range(20):
                publish(10)
                await asyncio.sleep(0.05)
            new_port = await asyncio.to_thread(sentinel.wait_failover, old.port, timeout(60))
            await until(lambda: len(done) + len(failed) == tag, seconds=90,
                        what="every entry to be settled")
            assert pub.stats.held >= 1
            if replicas > 1:
                assert failed == {}
            else:
                assert all(e.code in ("not_replicated", "timeout", "not_connected", "connection_lost")
                           for e in failed.values()), {(type(e), str(e)) for e in failed.values()}
            async with client(f"redis://127.0.0.1:{new_port}/0") as r:
                stored = {int(f[b"id"]) for _, f in await r.xrange(ks.inbound(0))}
            assert set(done) - stored == set(), "entries counted as published were lost"
        finally:
            await pub.close()


async def test_readonly_after_a_demotion_is_a_failover() -> None:
    """A master demoted under open connections answers -READONLY: the
    publisher and the shared connection treat it as a lost connection (hold,
    reconnect), not as failed entries."""
    with RedisServer() as a, RedisServer() as b:
        ks = KeySpace("ocpp")
        done: list[int] = []
        failed: list[Exception] = []
        pub = Publisher(a.url, keys=ks, timeout=timeout(20), backoff_max=0.1)
        shared = SharedConnection(a.url)
        await pub.start()
        try:
            async with client(a.url) as ra:
                await shared.command("SET", "x", "1")
                await ra.execute_command("REPLICAOF", "127.0.0.1", str(b.port))
                for t in range(5):
                    pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(t),
                                        "Heartbeat", b"{}", on_done=lambda _i, t=t: done.append(t),
                                        on_error=failed.append)
                await until(lambda: pub.stats.held >= 1, what="the batch to be held")
                assert not done and not failed
                with pytest.raises(Exception, match="no longer the master"):
                    await shared.command("SET", "x", "2")
                await ra.execute_command("REPLICAOF", "NO", "ONE")
                await until(lambda: len(done) == 5, seconds=20, what="the held batch")
                assert failed == []
                assert await shared.command("SET", "x", "3") == b"OK"
                assert await ra.xlen(ks.inbound(0)) == 5
        finally:
            await pub.close()
            await shared.close()




async def test_sdk_and_cli_find_the_new_master(sentinel: SentinelDeployment,
                                               backend: aioredis.Redis, key_prefix: str) -> None:
    conn = ["--redis-url", sentinel.url(), "--key-prefix", key_prefix]
    async with Client(backend, prefix=key_prefix) as sdk:
        assert await sdk.chargers() == []
    rc, out, err = await cli("chargers", "--json", *conn)
    assert (rc, orjson.loads(out)) == (0, []), err
    old = sentinel.kill_master()
    new_port = await asyncio.to_thread(sentinel.wait_failover, old.port, timeout(60))
    assert new_port != old.port
    rc, out, err = await cli("chargers", "--json", *conn)
    assert (rc, orjson.loads(out)) == (0, []), err
    rc, _, err = await cli("auth", "set", "CP-S", *conn, stdin=b"s3cret-passw0rd-16\n")
    assert rc == 0, err
    rc, _, err = await cli("call", "CP-S", "Reset", '{"type":"Soft"}', *conn)
    assert rc == 5 and b"not connected" in err.lower(), err    # through the new master
    r = parse_redis_url(sentinel.url()).redis_py()
    await r.xadd(f"{key_prefix}:in:{{0}}", {"v": "1", "kind": "connected", "cs": "CP-S",
                                            "proto": "ocpp1.6", "node": "n", "conn": "c",
                                            "ts": "1", "addr": "127.0.0.1"})
    await r.aclose()
    rc, out, err = await cli("tail", "--from-start", "--count", "1", *conn)
    assert rc == 0 and b"CP-S connected" in out, err
    # The SDK's client re-discovers on its own (redis-py Sentinel pool).
    async with asyncio.timeout(timeout(30)):
        while True:
            try:
                async with Client(backend, prefix=key_prefix) as sdk:
                    assert await sdk.chargers() == []
                break
            except (OSError, redis.exceptions.ConnectionError, redis.exceptions.ReadOnlyError):
                await asyncio.sleep(0.2)
    # A CALL answered by a charger, through a router on the new master: the
    # CLI's reply stream and the router's out stream on the promoted server.
    node = await asyncio.to_thread(start_router, sentinel.url(), key_prefix)
    try:
        async with websockets.connect(node.url("CP-S"), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      open_timeout=timeout(20)) as ws:
            await ws.send(orjson.dumps([2, "m1", "Heartbeat", {}]).decode())
            assert orjson.loads(await ws.recv())[:2] == [3, "m1"]
            rc, out, err = await cli("chargers", *conn)
            assert rc == 0 and b"CP-S" in out, err

            async def answer() -> None:
                msg = orjson.loads(await ws.recv())
                assert msg[2] == "Reset"
                await ws.send(orjson.dumps([3, msg[1], {"status": "Accepted"}]).decode())

            answering = asyncio.create_task(answer())
            rc, out, err = await cli("call", "CP-S", "Reset", '{"type":"Soft"}', *conn)
            await asyncio.wait_for(answering, timeout(10))
            assert rc == 0 and orjson.loads(out) == {"status": "Accepted"}, err
    finally:
        node.stop()
