"""Redis Cluster figures: publishing CPU per entry, standalone vs cluster, and
the publishing outage after a master's SIGKILL.

    python -m bench.bench_cluster --entries 200000 --trials 3

``cpu``: the router's publisher (``Publisher`` on one redis-server, and
``ClusterPublisher`` on a 3-master + 3-replica cluster) publishes the same
inbound entries over 16 shards in closed-loop rounds of 500; CPU seconds of
this process (user + system, ``resource.getrusage``) per entry, side by side
in one run, alternating the two systems ``--rounds`` times. It is the hot
path's Redis side only (no WebSocket): the part cluster mode changes.

``outage``: a ``ClusterPublisher`` publishes 16 shards at a steady rate
(``--rate`` entries/s); the master of shard 0's slot is SIGKILLed; the outage
is the time from the kill to the first entry of a shard on that master being
acknowledged by the promoted replica (``cluster-node-timeout 2000``), over
``--trials`` fresh clusters. Entries still held then are written (none lost to
the router; CALLERRORs only past ``--publish-timeout``).

The Redis servers run on the same 2-core machine as the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from typing import Any

import orjson
import uvloop

from router.embedded_redis import RedisServer
from router.streams import KeySpace, Publisher
from router.streams.cluster import ClusterPublisher, key_slot
from tests.redis_modes.cluster import ClusterDeployment

SHARDS = 16
PAYLOAD = b'{"meterValue":[{"timestamp":"2026-01-01T00:00:00Z","sampledValue":[{"value":"1"}]}]}'


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def publish_rounds(pub: Any, entries: int, round_size: int = 500) -> float:
    """CPU seconds per entry of publishing ``entries`` in closed-loop rounds."""
    done = 0
    start = cpu()
    sent = 0
    while sent < entries:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        left = [round_size]

        def ack(_id: bytes, fut: asyncio.Future[None] = fut, left: list[int] = left) -> None:
            left[0] -= 1
            if left[0] == 0 and not fut.done():
                fut.set_result(None)

        for i in range(round_size):
            pub.publish_inbound(f"CP-{i % 997}", "call", "ocpp1.6", "bench", "c", 1,
                                str(sent + i), "MeterValues", PAYLOAD, on_done=ack,
                                on_error=lambda e: print("error", e))
        sent += round_size
        await fut
        done += round_size
    return (cpu() - start) / done


async def bench_cpu(entries: int, rounds: int) -> dict[str, Any]:
    ks = KeySpace("bench", SHARDS)
    out: dict[str, list[float]] = {"standalone": [], "cluster": []}
    with RedisServer() as server, ClusterDeployment() as cluster:
        single = Publisher(server.url, keys=ks, maxlen=100_000)
        multi = ClusterPublisher(cluster.url(), keys=ks, maxlen=100_000)
        await single.start()
        await multi.start()
        try:
            await publish_rounds(single, 5000)   # warm-up
            await publish_rounds(multi, 5000)
            for _ in range(rounds):
                out["standalone"].append(await publish_rounds(single, entries))
                out["cluster"].append(await publish_rounds(multi, entries))
        finally:
            await single.close()
            await multi.close()
    med = {k: statistics.median(v) * 1e6 for k, v in out.items()}
    return {"us_per_entry": med, "ratio": med["cluster"] / med["standalone"],
            "rounds": {k: [round(x * 1e6, 3) for x in v] for k, v in out.items()}}


async def one_outage(rate: int, publish_timeout: float) -> dict[str, Any]:
    ks = KeySpace("bench", SHARDS)
    with ClusterDeployment() as cluster:
        pub = ClusterPublisher(cluster.url(), keys=ks, timeout=publish_timeout)
        await pub.start()
        victim_slot = key_slot(ks.inbound(0))
        victim_port = cluster.master_of(victim_slot)
        on_victim = [n for n in range(SHARDS)
                     if cluster.master_of(key_slot(ks.inbound(n))) == victim_port]
        acked: list[float] = []
        failed = 0
        killed_at = 0.0
        tag = 0

        def done(_id: bytes, shard: int, t: int) -> None:
            if shard in on_victim and killed_at and t >= 0:
                acked.append(time.monotonic())

        def error(_e: Exception) -> None:
            nonlocal failed
            failed += 1

        try:
            end = None
            while True:
                now = time.monotonic()
                if killed_at == 0.0 and tag >= rate:     # one second of steady load
                    await asyncio.to_thread(cluster.kill_master, victim_slot)
                    killed_at = time.monotonic()
                    acked.clear()
                if acked and end is None:
                    end = now + 1.0
                if end is not None and now > end:
                    break
                if killed_at and now - killed_at > 60:
                    break
                for _ in range(max(1, rate // 100)):
                    shard = tag % SHARDS
                    pub.publish_inbound(f"CP-{tag}", "call", "ocpp1.6", "bench", "c", 1,
                                        str(tag), "Heartbeat", b"{}", shard=shard,
                                        on_done=lambda i, s=shard, t=tag: done(i, s, t),
                                        on_error=error)
                    tag += 1
                await asyncio.sleep(0.01)
            await pub.wait_flushed()
        finally:
            await pub.close()
        outage = (min(acked) - killed_at) if acked else float("nan")
        return {"outage_s": round(outage, 2), "failed": failed, "published": tag,
                "held_batches": sum(lane.stats.held for lane in pub._lanes.values())}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"args": vars(args)}
    if "cpu" in args.what:
        result["cpu"] = await bench_cpu(args.entries, args.rounds)
        print(orjson.dumps(result["cpu"]).decode(), flush=True)
    if "outage" in args.what:
        trials = []
        for _ in range(args.trials):
            trials.append(await one_outage(args.rate, args.publish_timeout))
            print(orjson.dumps(trials[-1]).decode(), flush=True)
        result["outage"] = trials
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", nargs="+", choices=("cpu", "outage"), default=["cpu", "outage"])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--publish-timeout", type=float, default=10.0)
    args = p.parse_args()
    print(orjson.dumps(uvloop.run(main_async(args)), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
