"""A real router on a real Redis Cluster (3 masters + 3 replicas), 16 shards,
chargers under load, a backend on the SDK (redis-py ``RedisCluster``): a slot
migration and a master's SIGKILL under load. Every charger CALL ends answered
or with the charger's own timeout, nothing is dropped silently, and the
backend handles every published entry exactly once after de-duplication by
(cs, conn, id). Then the CLI (``chargers``, ``call``, ``tail``, ``auth``)
against the same cluster."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
import websockets

from router.backend import BackendApp, Message
from router.backend.dedup import Deduplicator
from router.streams import KeySpace, parse_redis_url
from router.streams.cluster import key_slot
from tests.conftest import start_router, timeout
from tests.redis_modes.cluster import RedisCluster
from tests.redis_modes.test_failover import Load

SHARDS = 16
CHARGERS = 16


async def test_router_on_a_cluster_through_migration_and_failover(key_prefix: str) -> None:
    with RedisCluster() as cluster:
        node = await asyncio.to_thread(
            start_router, cluster.seed_url, key_prefix, "--shards", str(SHARDS),
            "--publish-timeout", str(timeout(20)), "--reply-timeout", str(timeout(45)),
            # The closed-loop chargers send far above the per-charger message
            # limit (50/s by default): its GenericErrors are not what this
            # test counts.
            "--message-rate", "0")
        backend = parse_redis_url(cluster.url).redis_py()
        # (cs, conn, id) → the stream entries the handler ran for
        handled: dict[tuple[str, str, str], set[str]] = {}
        app = BackendApp(backend, group="csms", prefix=key_prefix, shards=SHARDS,
                         block=0.5, claim_idle=2.0, claim_interval=0.5,
                         dedup=Deduplicator(backend, prefix=key_prefix, group="csms"))

        @app.on_call("Authorize")
        async def authorize(msg: Message) -> dict[str, Any]:
            handled.setdefault((msg.cs, msg.conn, msg.id or ""), set()).add(msg.entry_id)
            return {"idTagInfo": {"status": "Accepted"}}

        app_task = asyncio.create_task(app.run())
        load = Load(node.url("").rstrip("/") + "/")
        keys = KeySpace(key_prefix, SHARDS)
        try:
            await asyncio.wait_for(app.wait_ready(), timeout(20))
            tasks = [asyncio.create_task(load.charger(f"CP-{i}")) for i in range(CHARGERS)]

            async def flowing(more: int) -> None:
                async with asyncio.timeout(timeout(60)):
                    mark = load.outcomes["result"]
                    while load.outcomes["result"] < mark + more:
                        await asyncio.sleep(0.1)

            await flowing(100)
            # Live resharding: the slot of shard 0's stream and of the node's
            # out stream move to another master under load.
            for key in (keys.inbound(0), keys.out(node.node_id)):
                slot = key_slot(key)
                src = cluster.slot_owner(slot)
                dst = next(n for n in cluster.masters_now() if n is not src)
                await asyncio.to_thread(cluster.move_slot, slot, dst)
            await flowing(100)
            # A master dies: its replica takes over within seconds. The one
            # holding the node's out stream (and some shards): the router's
            # out-stream reader, the SDK's answers and its readers of those
            # shards all lose their master at once.
            old = cluster.kill_master(key_slot(keys.out(node.node_id)))
            await asyncio.to_thread(cluster.wait_failover, old, timeout(60))
            await flowing(200)
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout(90))
            assert load.closed == []
            # Every CALL ended answered (or with the charger's own timeout);
            # the failover was shorter than the publish timeout: CALLERRORs
            # (the charger retries them) stay under 1 % of the CALLs.
            calls = sum(load.outcomes.values())
            assert load.outcomes["result"] + load.outcomes["no answer"] >= calls * 0.99, \
                load.outcomes
            # Exactly once after de-duplication: a repeat the router wrote
            # (another stream entry of the same charger message) is dropped; the
            # handler runs again only for the same entry, when writing its
            # answer failed (SDK retry). Every answered CALL was handled.
            async with asyncio.timeout(timeout(30)):
                while not set(load.answered) <= {(cs, mid) for cs, _, mid in handled}:
                    await asyncio.sleep(0.1)
            assert max(len(entries) for entries in handled.values()) == 1
            # Nothing in the streams the backend did not handle.
            stored: set[tuple[str, str, str]] = set()
            for shard in range(SHARDS):
                for _, f in await backend.xrange(keys.inbound(shard)):
                    if f[b"kind"] == b"call":
                        stored.add((f[b"cs"].decode(), f[b"conn"].decode(), f[b"id"].decode()))
            assert stored - set(handled) == set()
            # /readyz comes back.
            async with asyncio.timeout(timeout(30)):
                while node.admin("/readyz")[0] != 200:
                    await asyncio.sleep(0.1)
        finally:
            load.stop.set()
            app.stop()
            await asyncio.wait_for(app_task, timeout(30))
            await backend.aclose()
            node.stop()


def _cli(url: str, prefix: str, *args: str, stdin: str = "",
         timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OCPP_ROUTER_REDIS_URL=url, OCPP_ROUTER_KEY_PREFIX=prefix,
               OCPP_ROUTER_SHARDS=str(SHARDS))
    return subprocess.run([sys.executable, "-m", "router.cli.main", *args], env=env,
                          capture_output=True, text=True, input=stdin,
                          timeout=timeout(timeout_s))


@pytest.mark.parametrize("seed_only", [True])
async def test_cli_and_sdk_client_on_a_cluster(key_prefix: str, seed_only: bool) -> None:
    with RedisCluster() as cluster:
        url = cluster.seed_url if seed_only else cluster.url
        r = await asyncio.to_thread(_cli, url, key_prefix, "auth", "set", "CP-A",
                                    stdin="secret-password-1\n")
        assert r.returncode == 0, r.stderr
        node = await asyncio.to_thread(start_router, url, key_prefix, "--shards", str(SHARDS),
                                       "--auth", "basic")
        try:
            base = node.url("").rstrip("/").replace("ws://", "ws://CP-A:secret-password-1@")
            async with websockets.connect(f"{base}/CP-A", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                          open_timeout=timeout(20)) as ws:
                tail = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "router.cli.main", "tail", "--count", "2",
                    "--from-start", env=dict(os.environ, OCPP_ROUTER_REDIS_URL=url,
                                             OCPP_ROUTER_KEY_PREFIX=key_prefix,
                                             OCPP_ROUTER_SHARDS=str(SHARDS)),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                await ws.send(orjson.dumps([2, "m1", "Heartbeat", {}]).decode())
                assert orjson.loads(await ws.recv())[:2] == [3, "m1"]
                r = await asyncio.to_thread(_cli, url, key_prefix, "chargers")
                assert r.returncode == 0 and "CP-A" in r.stdout, r.stderr

                async def answer() -> None:
                    msg = orjson.loads(await ws.recv())
                    assert msg[2] == "ChangeAvailability"
                    await ws.send(orjson.dumps([3, msg[1], {"status": "Accepted"}]).decode())

                answering = asyncio.create_task(answer())
                r = await asyncio.to_thread(
                    _cli, url, key_prefix, "call", "CP-A", "ChangeAvailability",
                    '{"connectorId": 0, "type": "Operative"}')
                await answering
                assert r.returncode == 0 and "Accepted" in r.stdout, r.stderr
                out, err = await asyncio.wait_for(tail.communicate(), timeout(60))
                assert tail.returncode == 0, err
                lines = out.decode().splitlines()
                assert len(lines) == 2 and "CP-A connected" in lines[0], lines
        finally:
            node.stop()
