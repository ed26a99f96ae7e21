"""The router, the SDK and the CLI on a real Redis Cluster (3 masters + 3
replicas, 16 inbound shards): a backend (the reference CSMS on redis-py's
RedisCluster) answers chargers through the router; the CLI's ``auth``,
``chargers``, ``call`` and ``tail`` work against the cluster; a master is
SIGKILLed under load and every charger CALL ends answered or with the
charger's own timeout while the cluster fails over."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from ocpp.v16 import call as call16

from router.backend import Client
from router.backend.reference_csms import ReferenceCSMS
from router.streams import KeySpace, parse_redis_url
from router.streams.cluster import key_slot
from tests.backend.test_e2e import Charger16
from tests.conftest import RouterNode, start_router, timeout
from tests.redis_modes.cluster import ClusterDeployment
from tests.redis_modes.run_cli import cli

SHARDS = 16


@pytest.fixture
def cluster() -> Iterator[ClusterDeployment]:
    with ClusterDeployment() as deployment:
        yield deployment


@pytest.fixture
async def backend(cluster: ClusterDeployment) -> AsyncIterator[aioredis.Redis]:
    client = parse_redis_url(cluster.url()).redis_py()
    try:
        yield client
    finally:
        await client.aclose()


async def test_router_sdk_and_cli_on_a_cluster(cluster: ClusterDeployment,
                                               backend: aioredis.Redis, key_prefix: str) -> None:
    conn = ["--redis-url", cluster.url(), "--key-prefix", key_prefix]
    rc, _out, err = await cli("auth", "set", "CP-CL", *conn, stdin=b"s3cret-passw0rd-16\n")
    assert rc == 0, err
    node: RouterNode = await asyncio.to_thread(
        start_router, cluster.url(), key_prefix, "--auth", "basic", "--shards", str(SHARDS))
    csms = ReferenceCSMS(backend, prefix=key_prefix, shards=SHARDS, block=0.5)
    task = asyncio.create_task(csms.run())
    try:
        await asyncio.wait_for(csms.app.wait_ready(), timeout(20))
        header = {"Authorization": "Basic " + base64.b64encode(
            b"CP-CL:s3cret-passw0rd-16").decode()}
        async with websockets.connect(node.url("CP-CL"), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      additional_headers=header) as ws:
            cp = Charger16("CP-CL", ws)
            runner = asyncio.create_task(cp.start())
            try:
                boot = await asyncio.wait_for(cp.call(call16.BootNotification(
                    charge_point_vendor="ACME", charge_point_model="X1")), timeout(20))
                assert boot.status == "Accepted"
                async with Client(backend, prefix=key_prefix, shards=SHARDS) as client:
                    async with asyncio.timeout(timeout(10)):
                        while await client.where("CP-CL") is None:
                            await asyncio.sleep(0.05)
                    # client.call: the node's out stream, a reply_to stream.
                    reply = await client.call("CP-CL", "Reset", {"type": "Hard"},
                                              timeout=timeout(20))
                    assert reply == {"status": "Accepted"}
                rc, out, err = await cli("chargers", "--json", *conn)
                assert rc == 0, err
                assert [r["identity"] for r in orjson.loads(out)] == ["CP-CL"]
                rc, out, err = await cli("call", "CP-CL", "Reset", '{"type":"Soft"}', *conn)
                assert rc == 0, err
                assert orjson.loads(out) == {"status": "Accepted"}
                rc, out, err = await cli("tail", "--from-start", "--count", "2",
                                         "--shards", str(SHARDS), *conn)
                assert rc == 0, err
                assert b"BootNotification" in out
            finally:
                runner.cancel()
        status, _ = node.admin("/readyz")
        assert status == 200
    finally:
        csms.stop()
        await asyncio.wait_for(task, timeout(20))
        node.stop()
    assert node.proc.returncode == 0
    rc, _out, err = await cli("auth", "rm", "CP-CL", *conn)
    assert rc == 0, err


async def test_master_killed_under_load(cluster: ClusterDeployment,
                                        backend: aioredis.Redis, key_prefix: str) -> None:
    """32 chargers over 16 shards in closed loops of Heartbeat CALLs; the
    master of shard 0's slot is SIGKILLed. Every CALL ends with an answer
    (CALLRESULT, or a CALLERROR from the router) or the charger's own timeout,
    and after the failover every charger is answered again."""
    node: RouterNode = await asyncio.to_thread(
        start_router, cluster.url(), key_prefix, "--shards", str(SHARDS),
        "--publish-timeout", "10")
    csms = ReferenceCSMS(backend, prefix=key_prefix, shards=SHARDS, block=0.5)
    task = asyncio.create_task(csms.run())
    ks = KeySpace(key_prefix, SHARDS)
    charger_timeout = timeout(30)
    outcomes: dict[str, list[str]] = {}
    killed = asyncio.Event()
    stop = asyncio.Event()
    after_kill: dict[str, int] = {}

    async def charger(name: str) -> None:
        got = outcomes[name] = []
        async with websockets.connect(node.url(name), subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            n = 0
            while not stop.is_set():
                n += 1
                await ws.send(orjson.dumps([2, f"m{n}", "Heartbeat", {}]).decode())
                try:
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), charger_timeout))
                except TimeoutError:
                    got.append("timeout")
                    return          # its CALL is still open: OCPP-J allows no second
                assert frame[1] == f"m{n}", frame
                got.append("result" if frame[0] == 3 else f"error:{frame[2]}")
                if killed.is_set() and frame[0] == 3:
                    after_kill[name] = after_kill.get(name, 0) + 1
                await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(csms.app.wait_ready(), timeout(20))
        names = [f"CP-L{i}" for i in range(32)]
        assert len({ks.shard_of(n) for n in names}) >= 12
        chargers = [asyncio.create_task(charger(n)) for n in names]
        async with asyncio.timeout(timeout(20)):
            while sum(len(v) for v in outcomes.values()) < 200:
                await asyncio.sleep(0.05)
        victim = await asyncio.to_thread(cluster.kill_master, key_slot(ks.inbound(0)))
        killed.set()
        began = time.monotonic()
        await asyncio.to_thread(cluster.wait_failover, victim.port, timeout(60))
        # Messages flow again for every charger, whichever master it publishes to.
        async with asyncio.timeout(timeout(60)):
            while len([n for n in names if after_kill.get(n, 0) >= 3]) < len(names):
                if any(t.done() for t in chargers):
                    break
                await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*chargers), charger_timeout + timeout(10))
        total = [o for v in outcomes.values() for o in v]
        errors = [o for o in total if o.startswith("error")]
        assert "timeout" not in total or time.monotonic() - began < charger_timeout + 60
        assert all(after_kill.get(n, 0) >= 3 for n in names), after_kill
        # The router holds what it cannot publish for up to --publish-timeout
        # (10 s, longer than the failover): no CALLERROR expected, a few
        # tolerated (a batch in flight at the kill that the master had not
        # answered is written again; one whose reply was lost counts as sent).
        assert len(errors) <= max(2, len(total) // 100), (len(errors), len(total), errors[:5])
        # Ready again (the out-stream reader may reconnect a moment later).
        async with asyncio.timeout(timeout(20)):
            while node.admin("/readyz")[0] != 200:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        csms.stop()
        await asyncio.wait_for(task, timeout(30))
        node.stop()


async def test_slots_migrated_under_load(cluster: ClusterDeployment,
                                         backend: aioredis.Redis, key_prefix: str) -> None:
    """16 chargers in closed loops while the slots of two inbound shards and
    of the node's out stream move to another master (CLUSTER SETSLOT
    IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE): the router follows ASK and
    MOVED; every CALL is answered with a CALLRESULT."""
    from tests.redis_modes.test_cluster import finish_migration, migrate

    node: RouterNode = await asyncio.to_thread(
        start_router, cluster.url(), key_prefix, "--shards", str(SHARDS))
    csms = ReferenceCSMS(backend, prefix=key_prefix, shards=SHARDS, block=0.5)
    task = asyncio.create_task(csms.run())
    ks = KeySpace(key_prefix, SHARDS)
    outcomes: list[str] = []
    stop = asyncio.Event()

    async def charger(name: str) -> None:
        async with websockets.connect(node.url(name), subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            n = 0
            while not stop.is_set():
                n += 1
                await ws.send(orjson.dumps([2, f"m{n}", "Heartbeat", {}]).decode())
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout(30)))
                assert frame[1] == f"m{n}", frame
                outcomes.append("result" if frame[0] == 3 else f"error:{frame[2]}")
                await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(csms.app.wait_ready(), timeout(20))
        names = [f"CP-M{i}" for i in range(16)]
        chargers = [asyncio.create_task(charger(n)) for n in names]
        async with asyncio.timeout(timeout(20)):
            while len(outcomes) < 100:
                await asyncio.sleep(0.05)
        moved = [ks.inbound(ks.shard_of(names[0])), ks.inbound(ks.shard_of(names[1])),
                 ks.out(node.node_id)]
        for key in dict.fromkeys(moved):
            slot = key_slot(key)
            _src, dst = await migrate(cluster, slot, key, finish=False)
            before = len(outcomes)
            async with asyncio.timeout(timeout(20)):     # answers keep coming meanwhile
                while len(outcomes) < before + 50:
                    await asyncio.sleep(0.02)
            await finish_migration(cluster, slot, dst)
        before = len(outcomes)
        async with asyncio.timeout(timeout(20)):
            while len(outcomes) < before + 200:
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*chargers), timeout(40))
        assert set(outcomes) == {"result"}, {o for o in outcomes if o != "result"}
    finally:
        stop.set()
        csms.stop()
        await asyncio.wait_for(task, timeout(30))
        node.stop()
