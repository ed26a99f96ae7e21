"""Redis Cluster on the hot path (router.streams.cluster) against a real
cluster of three masters and three replicas: slot computation, the topology,
the publisher's per-slot lanes, MOVED and ASK during a slot migration
(CLUSTER SETSLOT MIGRATING/IMPORTING + MIGRATE), the control plane's routed
commands and pipelines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from router.streams import KeySpace, RedisReplyError
from router.streams.cluster import (
    ClusterPublisher,
    ClusterReader,
    ClusterSharedConnection,
    ClusterTopology,
    command_key,
    key_slot,
)
from router.streams.registry import Registry
from tests.conftest import timeout
from tests.redis_modes.cluster import ClusterDeployment
from tests.streams.helpers import until


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterDeployment]:
    with ClusterDeployment() as deployment:
        yield deployment


@pytest.fixture
async def topology(cluster: ClusterDeployment) -> AsyncIterator[ClusterTopology]:
    topo = ClusterTopology(cluster.url(), name="t-cluster")
    await topo.start()
    try:
        yield topo
    finally:
        await topo.close()


def node_client(port: int) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=port)


async def test_key_slot_matches_cluster_keyslot(cluster: ClusterDeployment) -> None:
    keys = [b"", b"a", b"ocpp:in:{0}", b"ocpp:in:{15}", b"x:{}:y", b"{}{a}", b"{a}{b}",
            b"foo{", b"foo}{bar}", b"\xff\x00binary", "ünicode:{tag}".encode(),
            b"ocpp:cs:CP-1", b"ocpp:out:node-a", *(b"k%d" % i for i in range(200))]
    r = node_client(cluster.nodes[0].port)
    try:
        for key in keys:
            assert key_slot(key) == await r.execute_command("CLUSTER", "KEYSLOT", key), key
    finally:
        await r.aclose()
    assert key_slot("ocpp:in:{3}") == key_slot(b"other:{3}")


def test_command_key() -> None:
    assert command_key((b"EVALSHA", b"abc", 1, b"ocpp:cs:x", b"n")) == b"ocpp:cs:x"
    assert command_key((b"EVAL", b"return 1", 0)) is None
    assert command_key(("GET", "k")) == b"k"
    assert command_key((b"PING",)) is None


async def test_topology_has_a_connection_per_master(cluster: ClusterDeployment,
                                                    topology: ClusterTopology) -> None:
    assert topology.ready
    assert len(topology.masters) == 3
    for slot in (0, 5000, 16383):
        assert topology.owner[slot] == ("127.0.0.1", cluster.master_of(slot))
    # One connection per master, shared by all its slots.
    assert len({id(topology.conn_for_slot(s)) for s in range(0, 16384, 97)}) == 3


async def migrate(cluster: ClusterDeployment, slot: int, key: bytes, *,
                  finish: bool) -> tuple[int, int]:
    """Move ``key``'s ``slot`` to another master: IMPORTING/MIGRATING, MIGRATE
    the key, and with ``finish`` CLUSTER SETSLOT NODE on every master."""
    src = cluster.master_of(slot)
    dst = next(p for p in (cluster.master_of(s) for s in (0, 8000, 16383)) if p != src)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    a, b = node_client(src), node_client(dst)
    try:
        await b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        await a.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", key)
        if finish:
            await finish_migration(cluster, slot, dst)
    finally:
        await a.aclose()
        await b.aclose()
    return src, dst


async def finish_migration(cluster: ClusterDeployment, slot: int, dst: int) -> None:
    dst_id = cluster.node_id(dst)
    for port in {cluster.master_of(s) for s in (0, 8000, 16383)} | {dst}:
        r = node_client(port)
        try:
            await r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        finally:
            await r.aclose()


async def test_publisher_follows_ask_then_moved(cluster: ClusterDeployment,
                                                key_prefix: str) -> None:
    """Entries keep landing, in order and exactly once, while the slot of their
    stream migrates: ASK (ASKING + the batch in MULTI on the target) during the
    migration, MOVED after it."""
    ks = KeySpace(key_prefix, shards=4)
    done: list[int] = []
    failed: list[Exception] = []
    pub = ClusterPublisher(cluster.url(), keys=ks, timeout=timeout(20))
    await pub.start()
    tag = 0

    async def publish(n: int) -> None:
        nonlocal tag
        for _ in range(n):
            t = tag
            pub.publish_inbound(f"CP-{t % 7}", "call", "ocpp1.6", "n", "c", 1, str(t),
                                "Heartbeat", b"{}", shard=0,
                                on_done=lambda _i, t=t: done.append(t), on_error=failed.append)
            tag += 1
        await until(lambda: len(done) + len(failed) == tag, seconds=30, what="the batch")

    try:
        await publish(20)
        key = ks.inbound(0)
        slot = key_slot(key)
        _src, dst = await migrate(cluster, slot, key, finish=False)
        await publish(20)
        assert pub.topology.stats.asks >= 1
        await finish_migration(cluster, slot, dst)
        await publish(20)
        assert pub.topology.stats.moved >= 1
        assert failed == []
        assert pub.topology.owner[slot] == ("127.0.0.1", dst)
        r = node_client(dst)
        try:
            stored = [int(f[b"id"]) for _, f in await r.xrange(key)]
        finally:
            await r.aclose()
        assert stored == list(range(60))
        assert sorted(done) == list(range(60))
    finally:
        await pub.close()


async def test_shared_connection_routes_commands_and_pipelines(
        cluster: ClusterDeployment, topology: ClusterTopology, key_prefix: str) -> None:
    shared = ClusterSharedConnection(topology)
    ks = KeySpace(key_prefix, shards=16)
    registry = Registry(shared, ks, ttl=60)
    names = [f"CP-{i}" for i in range(50)]
    for i, name in enumerate(names):
        await registry.register(name, node="node-a", conn=f"c{i}", proto="ocpp1.6",
                                since_ms=0, addr=f"10.0.0.{i}:1")
    assert await registry.refresh(names) == []
    assert (await registry.lookup("CP-7") or {}).get("conn") == "c7"
    assert await registry.unregister("CP-7", "c7")
    assert await registry.refresh(["CP-7", "CP-8"]) == ["CP-7"]
    # A pipeline over keys of every master comes back in order.
    replies = await shared.pipeline([(b"SET", f"{key_prefix}:k{i}", i) for i in range(40)]
                                    + [(b"GET", f"{key_prefix}:k{i}") for i in range(40)])
    assert replies[40:] == [str(i).encode() for i in range(40)]
    # Ordinary error replies are raised, not retried.
    with pytest.raises(RedisReplyError, match="WRONGTYPE"):
        await shared.command(b"XLEN", f"{key_prefix}:k1")
    # MOVED on a control-plane command: followed at once.
    key = f"{key_prefix}:moving".encode()
    await shared.command(b"SET", key, b"1")
    slot = key_slot(key)
    _, dst = await migrate(cluster, slot, key, finish=False)
    assert await shared.command(b"GET", key) == b"1"          # ASK
    await finish_migration(cluster, slot, dst)
    assert await shared.command(b"GET", key) == b"1"          # MOVED
    assert topology.owner[slot] == ("127.0.0.1", dst)
    assert topology.stats.asks >= 1 and topology.stats.moved >= 1


async def test_reader_reads_the_out_stream_on_its_master(
        cluster: ClusterDeployment, topology: ClusterTopology, key_prefix: str) -> None:
    ks = KeySpace(key_prefix)
    key = ks.out("node-x")
    reader = ClusterReader(topology, key, lambda _entries: None, block_ms=200)
    await reader.start()
    try:
        r = node_client(cluster.master_of(key_slot(key)))
        try:
            for i in range(5):
                await r.xadd(key, {"n": i})
        finally:
            await r.aclose()
        await until(lambda: reader.stats.entries == 5, seconds=10, what="the out entries")
        assert reader.connected
    finally:
        await reader.stop()


async def test_decisions() -> None:
    """Every retry decision in one place: MOVED updates the map at once, ASK
    does not, TRYAGAIN/CLUSTERDOWN/LOADING back off with a cap, anything else
    is not the cluster client's business."""
    topo = ClusterTopology("redis+cluster://127.0.0.1:7000", backoff_min=0.05, backoff_max=0.5)
    moved = topo.decide(RedisReplyError("MOVED 3999 127.0.0.1:6381"), 0)
    assert moved is not None and (moved.action, moved.slot, moved.address) == (
        "moved", 3999, ("127.0.0.1", 6381))
    assert topo.owner[3999] == ("127.0.0.1", 6381)
    # An empty host means the node that answered.
    moved = topo.decide(RedisReplyError("MOVED 12 :6390"), 0, source=("10.0.0.5", 7000))
    assert moved is not None and moved.address == ("10.0.0.5", 6390)
    ask = topo.decide(RedisReplyError("ASK 100 127.0.0.1:6382"), 0)
    assert ask is not None and ask.action == "ask" and topo.owner[100] is None
    for text in ("TRYAGAIN Multiple keys request during rehashing of slot",
                 "CLUSTERDOWN The cluster is down", "LOADING Redis is loading"):
        first = topo.decide(RedisReplyError(text), 0)
        late = topo.decide(RedisReplyError(text), 10_000)
        assert first is not None and late is not None and first.action == "retry"
        assert 0 < first.delay <= 0.05 and late.delay <= 0.5
    assert topo.decide(RedisReplyError("WRONGTYPE Operation against a key"), 0) is None
    assert topo.stats.moved == 2 and topo.stats.asks == 1 and topo.stats.retries == 6
    await topo.close()
    with pytest.raises(ValueError):
        ClusterTopology("redis://127.0.0.1:6379/0")
