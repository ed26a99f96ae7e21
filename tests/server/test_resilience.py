"""Failures: Redis stopped and restarted under load, SIGTERM drain under load,
several workers behind one port."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from router.embedded_redis import RedisServer
from tests.conftest import RouterNode, start_router, timeout
from tests.server.helpers import BOOT, BOOT_REPLY, Charger


async def answering_backend(url: str, prefix: str, stop: asyncio.Event,
                            answered: set[str]) -> None:
    """Answers every call with a valid BootNotification reply; survives Redis restarts."""
    last = b"0-0"      # from the start: no CALL published before this task runs is missed
    while not stop.is_set():
        r = aioredis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            while not stop.is_set():
                res = await r.xread({f"{prefix}:in:{{0}}": last}, count=100, block=200)
                for _, entries in res or []:
                    for entry_id, f in entries:
                        last = entry_id
                        if f[b"kind"] != b"call":
                            continue
                        await r.xadd(f"{prefix}:out:{f[b'node'].decode()}", {
                            "kind": "result", "cs": f[b"cs"], "conn": f[b"conn"],
                            "id": f[b"id"], "payload": json.dumps(BOOT_REPLY["ocpp1.6"])})
                        answered.add(f[b"id"].decode())
        except (OSError, aioredis.ConnectionError, aioredis.TimeoutError):
            await asyncio.sleep(0.1)
        finally:
            await r.aclose()


async def charger_loop(node: RouterNode, identity: str, stop: asyncio.Event,
                       outcomes: dict[str, list[str]]) -> None:
    cp = await Charger.connect(node, identity)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            msg_id = f"{identity}-{n}"
            await cp.call("BootNotification", BOOT["ocpp1.6"], msg_id)
            answer = await cp.recv(wait=30)
            assert answer[1] == msg_id
            outcomes["ok" if answer[0] == 3 else answer[2]].append(msg_id)
            if answer[0] != 3:
                await asyncio.sleep(0.05)
    finally:
        await cp.close()


async def _until(condition: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_redis_restart_under_load(key_prefix: str) -> None:
    server = RedisServer().start()
    node = start_router(server.url, key_prefix, "--publish-timeout", "1",
                        "--reply-timeout", "3")
    stop = asyncio.Event()
    answered: set[str] = set()
    outcomes: dict[str, list[str]] = {"ok": [], "InternalError": []}
    try:
        backend = asyncio.create_task(answering_backend(server.url, key_prefix, stop, answered))
        chargers = [asyncio.create_task(charger_loop(node, f"CP-{i}", stop, outcomes))
                    for i in range(5)]
        await _until(lambda: len(outcomes["ok"]) >= 10, timeout(15))
        ok_before = len(outcomes["ok"])
        server.stop()                                  # Redis goes away
        await _until(lambda: node.admin("/readyz")[0] == 503, timeout(5))
        # A CALL whose XADD fails gets InternalError at once; one that was
        # published before Redis went away gets it after --reply-timeout (3 s).
        await _until(lambda: len(outcomes["InternalError"]) >= 5, timeout(3 + 3))
        server = RedisServer(port=server.port).start()  # and comes back, empty
        deadline = time.monotonic() + timeout(20)
        while len(outcomes["ok"]) < ok_before + 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(outcomes["ok"]) >= ok_before + 20, "router recovers without a restart"
        assert node.admin("/readyz")[0] == 200
        stop.set()
        await asyncio.gather(*chargers)
        backend.cancel()
        await asyncio.gather(backend, return_exceptions=True)
        # Never a success the backend did not give.
        assert set(outcomes["ok"]) <= answered
        assert node.proc.poll() is None
    finally:
        stop.set()
        node.stop()
        server.stop()


async def test_sigterm_drains_under_load(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--drain-seconds", "2")
    stop = asyncio.Event()
    answered: set[str] = set()
    backend = asyncio.create_task(answering_backend(node.redis_url, node.key_prefix, stop,
                                                    answered))
    closes: list[int | None] = []

    async def one(i: int) -> None:
        cp = await Charger.connect(node, f"CP-d{i}")
        try:
            while True:
                await cp.call("BootNotification", BOOT["ocpp1.6"])
                await cp.recv(wait=10)
        except Exception:
            closes.append(cp.ws.close_code)

    chargers = [asyncio.create_task(one(i)) for i in range(10)]
    await asyncio.sleep(timeout(0.5))
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert node.admin("/readyz")[0] == 503
    await asyncio.wait_for(asyncio.gather(*chargers), timeout(15))
    code = await asyncio.to_thread(node.proc.wait, timeout(15))
    elapsed = time.monotonic() - started
    stop.set()
    backend.cancel()
    await asyncio.gather(backend, return_exceptions=True)
    assert code == 0
    assert closes.count(1001) == 10, closes
    assert elapsed >= 1.5, "closes are spread over --drain-seconds"


@pytest.mark.slow
async def test_workers_share_the_port_and_aggregate_metrics(
        redis_server: RedisServer, key_prefix: str) -> None:
    node = start_router(redis_server.url, key_prefix, "--workers", "2", node_id="multi")
    try:
        chargers = [await Charger.connect(node, f"CP-w{i}") for i in range(8)]
        deadline = time.monotonic() + timeout(10)
        while time.monotonic() < deadline:
            if node.metric("ocpp_router_connections") == 8:
                break
            await asyncio.sleep(0.1)
        assert node.metric("ocpp_router_connections") == 8
        r = aioredis.from_url(redis_server.url)
        nodes = set()
        for i in range(8):
            nodes.add((await r.hget(f"{key_prefix}:cs:CP-w{i}", "node") or b"").decode())
        await r.aclose()
        assert nodes <= {"multi-0", "multi-1"} and nodes
        for cp in chargers:
            await cp.close()
        assert node.stop() == 0
    finally:
        node.stop()


async def test_drain_leaves_no_registry_entries(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--drain-seconds", "0.5")
    chargers = [await Charger.connect(node, f"CP-r{i}") for i in range(5)]
    r = aioredis.from_url(node.redis_url)
    try:
        await _until_async(lambda: _registry_count(r, node.key_prefix), 5, timeout(10))
        node.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(node.proc.wait, timeout(15)) == 0
        assert await _registry_count(r, node.key_prefix) == 0
        kinds = [f[b"kind"] for _, f in await r.xrange(f"{node.key_prefix}:in:{{0}}")]
        assert kinds.count(b"disconnected") == 5
    finally:
        await r.aclose()
        for cp in chargers:
            await cp.ws.close()


async def _registry_count(r: aioredis.Redis, prefix: str) -> int:
    return len([k async for k in r.scan_iter(f"{prefix}:cs:*")])


async def _until_async(probe: Callable[[], object], want: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while await probe() != want:  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_registry_entries_come_back_after_redis_loses_them(
        router_factory: Callable[..., RouterNode]) -> None:
    """Data lost without a connection loss (FLUSHALL): the node's liveness key
    is gone, which the node checks every 2 s. The default --registry-ttl (300)
    puts the next full refresh 100 s away: only that check can bring the
    entries back in time."""
    node = router_factory()
    cp = await Charger.connect(node, "CP-back")
    r = aioredis.from_url(node.redis_url)
    key = f"{node.key_prefix}:cs:CP-back"
    try:
        await _until_async(lambda: r.exists(key), 1, timeout(5))
        conn = await r.hget(key, "conn")
        await _until_async(lambda: r.exists(f"{node.key_prefix}:node:{node.node_id}"), 1,
                           timeout(5))
        await r.flushall()
        await _until_async(lambda: r.exists(key), 1, timeout(10))
        assert await r.hget(key, "conn") == conn
        assert await r.hget(key, "node") == node.node_id.encode()
        assert await r.ttl(key) > 100          # the full --registry-ttl again
        assert node.metric("ocpp_router_registry_restored_total",
                           trigger="node_key_lost") == 1
    finally:
        await r.aclose()
        await cp.close()


async def test_registry_is_back_within_seconds_after_redis_restarts_empty(
        key_prefix: str) -> None:
    """A real redis-server restarted without persistence under a router with
    connected chargers: the node writes its entries back at once (not at the
    next refresh, 100 s away with the default TTL), and a backend CALL routed
    through the registry reaches its charger."""
    server = RedisServer().start()
    node = start_router(server.url, key_prefix)
    chargers: list[Charger] = []
    r = aioredis.from_url(server.url)
    try:
        chargers = [await Charger.connect(node, f"CP-rs{i}") for i in range(20)]
        await _until_async(lambda: _registry_count(r, key_prefix), 20, timeout(10))
        await r.aclose()
        server.stop()
        server = RedisServer(port=server.port).start()     # empty
        r = aioredis.from_url(server.url)
        await _until_async(lambda: _registry_count(r, key_prefix), 20, timeout(5))
        for i in range(len(chargers)):
            assert (await r.hget(f"{key_prefix}:cs:CP-rs{i}", "node") or b"").decode() == \
                node.node_id
        assert node.metric("ocpp_router_registry_restored_total") == 20
        # A backend finds the charger's node in the registry and CALLs it.
        entry = await r.hgetall(f"{key_prefix}:cs:CP-rs7")
        await r.xadd(f"{key_prefix}:out:{entry[b'node'].decode()}", {
            "kind": "call", "cs": "CP-rs7", "id": "after-restart",
            "action": "ChangeAvailability",
            "payload": json.dumps({"connectorId": 1, "type": "Operative"})})
        assert await chargers[7].recv(wait=10) == [
            2, "after-restart", "ChangeAvailability", {"connectorId": 1, "type": "Operative"}]
        await chargers[7].send([3, "after-restart", {"status": "Accepted"}])

        async def result() -> int:
            entries = await r.xrange(f"{key_prefix}:in:{{0}}")
            return sum(f[b"kind"] == b"result" and f[b"id"] == b"after-restart"
                       and f[b"conn"] == entry[b"conn"] for _, f in entries)

        await _until_async(result, 1, timeout(10))
    finally:
        await r.aclose()
        for cp in chargers:
            await cp.ws.close()
        node.stop()
        server.stop()


async def test_restore_never_overwrites_a_newer_holder(redis_server: RedisServer,
                                                       key_prefix: str) -> None:
    from router.streams.keys import KeySpace
    from router.streams.registry import Registry

    r = aioredis.from_url(redis_server.url)
    registry = Registry(r, KeySpace(key_prefix), ttl=60)
    try:
        assert await registry.restore("CP-x", node="a", conn="c1", proto="ocpp1.6",
                                      since_ms=1, addr="x")
        assert not await registry.restore("CP-x", node="b", conn="c2", proto="ocpp1.6",
                                          since_ms=2, addr="y")
        assert (await registry.lookup("CP-x") or {})["conn"] == "c1"
    finally:
        await r.aclose()
