"""Redis Cluster figures: publishing CPU and throughput standalone vs cluster,
and the publishing outage after a master's SIGKILL.

``throughput``: the router's publisher (the compiled ``PublisherCore`` the
charger path calls, with its batching) publishes inbound entries over 16
shards as fast as Redis takes them, in bursts of ``--burst`` entries per event
loop iteration (what a loaded router does): once against one standalone
``redis-server``, once against a 3-master cluster (``ClusterPublisher``),
alternating, ``--rounds`` times. CPU per entry is this process's CPU time
(user + system, ``time.process_time``) over the entries acknowledged — the
publishing layer only, not the WebSocket side, which is the same in both modes.

``router``: the whole router process with chargers, standalone vs cluster:
the same closed-loop charger load (``router.sim.loadgen``, OCPP 1.6 mix, every
CALL through Redis: ``--heartbeat forward``) on ``ocpp-router serve
--shards 16`` with ``--redis-url redis://`` (one ``redis-server``) and with
``redis+cluster://`` (3 masters + 3 replicas), the SDK backend
(``bench.backends.sdk_constant``, one reader per shard on its master)
answering; alternating rounds in one run, both Redis deployments up the whole
time. The router's CPU µs per message comes from /proc (loadgen's ``watch``).
With ``--rate`` both modes carry the same open-loop rate: a closed loop runs
each mode as fast as its backend answers, and a router's CPU per message falls
with the rate (bigger batches), so only equal rates compare the router alone.

``outage``: a fresh 3+3 cluster per trial; one entry per shard every 5 ms;
SIGKILL of the master of shard 1's slot (restarted once a replica took over:
it rejoins as that replica's replica); the outage is the time from the kill
to the first acknowledgement of an entry of an affected shard written after
the kill (the cluster's own failover included: ``cluster-node-timeout`` 2 s).
Entries lost (acknowledged, not in the streams afterwards) and duplicated
(twice in a stream) are counted, per ``--durability`` mode (``none``,
``replicated``: ``WAIT`` for one replica per batch).

    .venv/bin/python -m bench.cluster throughput --rounds 3
    .venv/bin/python -m bench.cluster router --rounds 3 --chargers 100 --duration 8
    .venv/bin/python -m bench.cluster outage --trials 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError

from bench import run
from bench.services import Service, ServiceError, python_module
from router.embedded_redis import RedisServer, free_port
from router.sim.loadgen import LoadConfig
from router.streams import parse_redis_url
from router.streams.cluster import ClusterPublisher, key_slot
from router.streams.keys import KeySpace
from router.streams.publisher import Publisher
from tests.redis_modes.cluster import RedisCluster

SHARDS = 16


async def _publish(pub: Any, entries: int, burst: int) -> tuple[float, float]:
    acked = 0
    done = asyncio.Event()

    def ack(_id: bytes) -> None:
        nonlocal acked
        acked += 1
        if acked == entries:
            done.set()

    payload = b'{"idTag":"04A2B3C4"}'
    cpu0, t0 = time.process_time(), time.perf_counter()
    sent = 0
    while sent < entries:
        for _ in range(min(burst, entries - sent)):
            pub.publish_inbound(f"CP-{sent % 5000}", b"call", "ocpp1.6", b"node-a",
                                "3f2a9c0e7b1d4e21", 1763731200123, str(sent), "Authorize",
                                payload, on_done=ack)
            sent += 1
        while pub.pending > 4 * burst:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
    await done.wait()
    return time.process_time() - cpu0, time.perf_counter() - t0


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    keys = KeySpace("bench", SHARDS)
    results: dict[str, list[dict[str, float]]] = {"standalone": [], "cluster": []}
    with RedisServer() as server, RedisCluster() as cluster:
        for _ in range(args.rounds):
            for mode in ("standalone", "cluster"):
                cls = Publisher if mode == "standalone" else ClusterPublisher
                url = server.url if mode == "standalone" else cluster.seed_url
                pub = cls(url, keys=keys, timeout=30, max_pending=1_000_000, maxlen=100_000)
                await pub.start()
                await _publish(pub, args.burst * 4, args.burst)          # warm-up
                cpu, wall = await _publish(pub, args.entries, args.burst)
                await pub.close()
                results[mode].append({"cpu_us_per_entry": cpu / args.entries * 1e6,
                                      "entries_per_s": args.entries / wall})
    summary = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for m, rs in results.items()}
    summary["cluster_cpu_ratio"] = {"value": summary["cluster"]["cpu_us_per_entry"]
                                    / summary["standalone"]["cpu_us_per_entry"]}
    return {"rounds": results, "median": summary}


@contextlib.asynccontextmanager
async def _router_on(url: str, prefix: str, shards: int) -> AsyncIterator[run.System]:
    """The SDK backend and ``ocpp-router serve`` on the Redis of ``url``."""
    started: list[Service] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}
    try:
        back = Service("backend-sdk", python_module(
            "bench.backends.sdk_constant", "--redis-url", url, "--key-prefix", prefix,
            "--shards", str(shards)), None, env=env)
        started.append(back)
        back.start()
        redis = parse_redis_url(url).redis_py()
        try:
            deadline = time.monotonic() + 60
            keys = KeySpace(prefix, shards)
            while True:     # the backend's groups exist before any charger boots
                try:
                    if all([await redis.xinfo_groups(k) for k in keys.all_inbound()]):
                        break
                except RedisError:
                    pass
                if time.monotonic() > deadline or not back.alive():
                    raise run.NotAvailable(f"backend not reading: {back.log_tail()}")
                await asyncio.sleep(0.2)
        finally:
            await redis.aclose()
        port, admin = free_port(), free_port()
        router = Service("router", python_module(
            "router.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--admin-host", "127.0.0.1", "--admin-port", str(admin), "--redis-url", url,
            "--key-prefix", prefix, "--shards", str(shards), "--node-id", "bench",
            "--auth", "none", "--log-level", "warning", "--drain-seconds", "1",
            "--heartbeat", "forward", "--message-rate", "0"), port, env=env)
        started.append(router)
        router.start()
        await asyncio.to_thread(run._wait_http_ok, f"http://127.0.0.1:{admin}/readyz",
                                router, 60)
        yield run.System(f"ws://127.0.0.1:{port}/ocpp",
                         {"router": router.pid, "backend": back.pid}, "router")
    except ServiceError as exc:
        raise run.NotAvailable(str(exc)) from exc
    finally:
        for svc in reversed(started):
            svc.stop()
            svc.cleanup()


async def router_cpu(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"standalone": [], "cluster": []}
    with RedisServer() as server, RedisCluster() as cluster:
        for rnd in range(args.rounds):
            for mode in ("standalone", "cluster"):
                url = server.url if mode == "standalone" else cluster.seed_url
                prefix = f"b{rnd}{mode[0]}"
                cfg = LoadConfig(url="", mode="open" if args.rate else "closed",
                                 rate=args.rate, proto="ocpp1.6", progress=False,
                                 chargers=args.chargers, duration=args.duration,
                                 warmup=args.warmup, procs=1)
                result = await run.measure(
                    mode, lambda url=url, prefix=prefix: _router_on(url, prefix, SHARDS), cfg)
                if not result.get("available"):
                    raise SystemExit(f"bench.cluster: {mode}: {result.get('reason')}")
                row = {"router_cpu_us_per_msg": result["cpu"]["router"]["us_per_msg"],
                       "backend_cpu_us_per_msg": result["cpu"]["backend"]["us_per_msg"],
                       "msgs_per_s": result["msgs_per_s"],
                       "p99_ms": result["latency_ms"].get("p99"),
                       "load_avg_1m": os.getloadavg()[0]}
                results[mode].append(row)
                print(f"round {rnd + 1}/{args.rounds} {mode:10s} {json.dumps(row)}",
                      flush=True)
    summary: dict[str, Any] = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                               for m, rs in results.items()}
    summary["cluster_router_cpu_ratio"] = (summary["cluster"]["router_cpu_us_per_msg"]
                                           / summary["standalone"]["router_cpu_us_per_msg"])
    return {"rounds": results, "median": summary}


async def outage_trial(durability: str) -> dict[str, Any]:
    keys = KeySpace("bench", SHARDS)
    with RedisCluster() as cluster:
        pub = ClusterPublisher(cluster.seed_url, keys=keys, timeout=60,
                               wait_replicas=1 if durability == "replicated" else 0)
        await pub.start()
        victim = cluster.slot_owner(key_slot(keys.inbound(1)))
        affected = {s for s in range(SHARDS)
                    if cluster.slot_owner(key_slot(keys.inbound(s))) is victim}
        first_after: list[float] = []
        killed_at = [0.0]
        acked: set[str] = set()
        failed = [0]
        stop = asyncio.Event()

        async def load() -> None:
            n = 0
            while not stop.is_set():
                for shard in range(SHARDS):
                    written = time.monotonic()
                    mid = str(n)

                    def ack(_id: bytes, shard: int = shard, written: float = written,
                            mid: str = mid) -> None:
                        acked.add(mid)
                        if (killed_at[0] and written > killed_at[0] and shard in affected
                                and not first_after):
                            first_after.append(time.monotonic())

                    def fail(_exc: Exception) -> None:
                        failed[0] += 1

                    pub.publish_inbound(f"CP-{n}", b"call", "ocpp1.6", b"n", "c", 1, mid,
                                        "Heartbeat", b"{}", shard=shard, on_done=ack,
                                        on_error=fail)
                    n += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(load())
        await asyncio.sleep(1.0)
        killed_at[0] = time.monotonic()
        victim.killed_slot = key_slot(keys.inbound(1))     # what wait_failover watches
        victim.kill()
        # The killed master comes back as its successor's replica, as a
        # StatefulSet restarts its pod (with `replicated` the successor needs
        # a replica to confirm writes).
        await asyncio.to_thread(cluster.wait_failover, victim, 60)
        victim.start()
        while not first_after and time.monotonic() - killed_at[0] < 60:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)    # entries after the recovery, too
        stop.set()
        await task
        await pub.wait_flushed()
        await pub.close()
        # What the streams hold now (the promoted replicas' data): an entry the
        # publisher counted as published and that is not there is lost; one
        # that is there twice is a duplicate (a batch written again).
        redis = parse_redis_url(cluster.seed_url).redis_py()
        try:
            stored: collections.Counter[str] = collections.Counter()
            for key in keys.all_inbound():
                for _eid, fields in await redis.xrange(key):
                    stored[fields[b"id"].decode()] += 1
        finally:
            await redis.aclose()
        return {"outage_s": (first_after[0] - killed_at[0]) if first_after else float("inf"),
                "published": len(acked), "failed": failed[0],
                "lost": len(acked - set(stored)),
                "duplicated": sum(c - 1 for c in stored.values() if c > 1)}


async def outage(args: argparse.Namespace) -> dict[str, Any]:
    trials: dict[str, list[dict[str, Any]]] = {"none": [], "replicated": []}
    for i in range(args.trials):
        for durability in trials:
            row = await outage_trial(durability)
            row["load_avg_1m"] = os.getloadavg()[0]
            print(f"trial {i + 1}/{args.trials} {durability:10s} {json.dumps(row)}", flush=True)
            trials[durability].append(row)
    return {d: {"trials": rows,
                "median_outage_s": statistics.median(r["outage_s"] for r in rows),
                "max_outage_s": max(r["outage_s"] for r in rows),
                "lost": sum(r["lost"] for r in rows),
                "duplicated": sum(r["duplicated"] for r in rows)}
            for d, rows in trials.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--burst", type=int, default=500)
    p = sub.add_parser("router")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chargers", type=int, default=100)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=0.0,
                   help="open loop at this many CALLs/s (both modes at the same rate, "
                        "so batching is alike); 0: closed loop")
    p = sub.add_parser("outage")
    p.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    what = {"throughput": throughput, "router": router_cpu, "outage": outage}[args.what]
    result = asyncio.run(what(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
