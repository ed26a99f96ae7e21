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

``outage``: a fresh 3+3 cluster per trial; one entry per shard every 5 ms;
SIGKILL of the master of shard 1's slot; the outage is the time from the kill
to the first acknowledgement of an entry of an affected shard written after
the kill (the cluster's own failover included: ``cluster-node-timeout`` 2 s).

    .venv/bin/python -m bench.cluster throughput --rounds 3
    .venv/bin/python -m bench.cluster outage --trials 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from router.embedded_redis import RedisServer
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


async def outage_trial() -> float:
    keys = KeySpace("bench", SHARDS)
    with RedisCluster() as cluster:
        pub = ClusterPublisher(cluster.seed_url, keys=keys, timeout=60)
        await pub.start()
        victim = cluster.slot_owner(key_slot(keys.inbound(1)))
        affected = {s for s in range(SHARDS)
                    if cluster.slot_owner(key_slot(keys.inbound(s))) is victim}
        first_after: list[float] = []
        killed_at = [0.0]
        stop = asyncio.Event()

        async def load() -> None:
            n = 0
            while not stop.is_set():
                for shard in range(SHARDS):
                    written = time.monotonic()

                    def ack(_id: bytes, shard: int = shard, written: float = written) -> None:
                        if (killed_at[0] and written > killed_at[0] and shard in affected
                                and not first_after):
                            first_after.append(time.monotonic())

                    pub.publish_inbound(f"CP-{n}", b"call", "ocpp1.6", b"n", "c", 1, str(n),
                                        "Heartbeat", b"{}", shard=shard, on_done=ack)
                    n += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(load())
        await asyncio.sleep(1.0)
        killed_at[0] = time.monotonic()
        victim.kill()
        while not first_after and time.monotonic() - killed_at[0] < 60:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await pub.close(flush=False)
        return first_after[0] - killed_at[0] if first_after else float("inf")


async def outage(args: argparse.Namespace) -> dict[str, Any]:
    trials = [await outage_trial() for _ in range(args.trials)]
    return {"seconds": trials, "median": statistics.median(trials), "max": max(trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--burst", type=int, default=500)
    p = sub.add_parser("outage")
    p.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(throughput(args) if args.what == "throughput" else outage(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
