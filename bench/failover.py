"""Redis failover and durability: publishing outage, loss and duplicates after a
master SIGKILL under Sentinel, and the publish path's throughput and CPU per
entry per Redis mode.

Method. The router's publish path (``router.streams.Publisher``: compiled RESP
encoding, one write per loop iteration, hold-and-resend through a failover,
``WAIT`` with ``--durability replicated``) runs in this process under uvloop
and publishes inbound entries in a closed loop with at most ``--window``
entries pending. Redis runs as real child processes: a standalone server, or
a master + replica + 3 sentinels (``down-after-milliseconds`` 1000).

* Failover trials: publish, SIGKILL the master, keep publishing; restart the
  killed master as a replica of the new one right after the promotion (as a
  StatefulSet restarts its pod). *Outage* is the longest gap between two
  consecutive acknowledgements (on_done) around the kill. *Lost* are entries
  acknowledged (counted as published) that the new master does not have;
  *duplicated* are entries stored twice (a batch written again after its
  connection broke). *Failed* are entries that ended in on_error (the
  charger would get CALLERROR InternalError).
* Throughput: entries acknowledged per second over ``--seconds``; CPU per
  entry is this process's user+system CPU time (``time.process_time``) over
  the same window divided by the entries: the router's publish path without
  the WebSocket side.

Run: ``python -m bench.failover --trials 5`` (``make bench-failover``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
import uvloop

from router.embedded_redis import RedisServer
from router.streams import KeySpace, Publisher
from tests.redis_modes.sentinel import SentinelDeployment


@dataclass
class Trial:
    durability: str
    outage: float
    acked: int
    lost: int
    duplicated: int
    failed: int
    codes: str


class Load:
    """Closed-loop publishing with a bounded window, recording every outcome."""

    def __init__(self, pub: Publisher, window: int) -> None:
        self.pub = pub
        self.window = window
        self.tag = 0
        self.done: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.running = True
        self.max_gap = 0.0
        self.last_ack = 0.0

    def _ok(self, tag: int) -> None:
        now = time.monotonic()
        if self.last_ack:
            self.max_gap = max(self.max_gap, now - self.last_ack)
        self.last_ack = now
        self.done[tag] = now

    async def run(self) -> None:
        pub = self.pub
        while self.running:
            while pub.pending < self.window and self.running:
                t = self.tag
                self.tag += 1
                pub.publish_inbound(f"CP-{t % 1000}", "call", "ocpp1.6", "bench", "c", 1,
                                    str(t), "Authorize", b'{"idTag":"A"}',
                                    on_done=lambda _i, t=t: self._ok(t),
                                    on_error=lambda e, t=t: self.failed.__setitem__(t, e.code))
            await asyncio.sleep(0)

    async def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len(self.done) + len(self.failed) < self.tag and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


async def failover_trial(durability: str, window: int) -> Trial:
    ks = KeySpace("bench")
    with SentinelDeployment(replicas=1) as sentinel:
        pub = Publisher(sentinel.url(), keys=ks, timeout=20.0, backoff_max=0.2,
                        connect_timeout=1.0, max_pending=window * 4,
                        wait_replicas=1 if durability == "replicated" else 0)
        await pub.start()
        load = Load(pub, window)
        task = asyncio.create_task(load.run())
        try:
            await asyncio.sleep(2.0)
            load.max_gap = 0.0
            old = sentinel.kill_master()
            new_port = await asyncio.to_thread(sentinel.wait_failover, old.port, 60)
            await asyncio.to_thread(sentinel.replica_of, old, new_port)
            await asyncio.sleep(2.0)
            load.running = False
            await task
            await load.settle(30)
            r = aioredis.Redis(host="127.0.0.1", port=new_port)
            try:
                tags = [int(f[b"id"]) for _, f in await r.xrange(ks.inbound(0))]
            finally:
                await r.aclose()
        finally:
            load.running = False
            await pub.close(flush=False)
    stored = set(tags)
    codes = collections.Counter(load.failed.values())
    return Trial(durability, load.max_gap, len(load.done), len(set(load.done) - stored),
                 len(tags) - len(stored), len(load.failed),
                 ", ".join(f"{c} {n}" for c, n in sorted(codes.items())))


async def throughput(url: str, durability: str, seconds: float, window: int) -> tuple[float, float]:
    pub = Publisher(url, keys=KeySpace("bench"), timeout=10.0, max_pending=window * 4,
                    wait_replicas=1 if durability == "replicated" else 0)
    await pub.start()
    load = Load(pub, window)
    task = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(1.0)   # warm up
        n0, c0, t0 = len(load.done), time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        n1, c1, t1 = len(load.done), time.process_time(), time.monotonic()
    finally:
        load.running = False
        await task
        await pub.close(flush=True)
    n = n1 - n0
    return n / (t1 - t0), (c1 - c0) / max(n, 1) * 1e6


async def main_async(args: argparse.Namespace) -> None:
    print(f"# bench.failover ({' '.join(sys.argv[1:])})\n")
    if args.trials:
        print("| durability | trial | outage s | acknowledged | lost | duplicated | failed |")
        print("|---|---|---|---|---|---|---|")
        by_mode: dict[str, list[Trial]] = {}
        for durability in args.durability.split(","):
            for i in range(args.trials):
                t = await failover_trial(durability, args.window)
                by_mode.setdefault(durability, []).append(t)
                print(f"| {durability} | {i + 1} | {t.outage:.2f} | {t.acked} | {t.lost} | "
                      f"{t.duplicated} | {t.failed}{f' ({t.codes})' if t.codes else ''} |",
                      flush=True)
        print()
        for durability, trials in by_mode.items():
            outs = [t.outage for t in trials]
            print(f"{durability}: outage median {statistics.median(outs):.2f} s, max "
                  f"{max(outs):.2f} s; lost {sum(t.lost for t in trials)}, duplicated "
                  f"{sum(t.duplicated for t in trials)}, failed {sum(t.failed for t in trials)} "
                  f"over {len(trials)} trials")
        print()
    if args.seconds:
        # The modes alternate, round after round, in one run: a noisy shared
        # machine slows them alike, and the medians are compared.
        modes = [("standalone", "none"), ("sentinel (1 replica)", "none"),
                 ("sentinel (1 replica)", "replicated")]
        rates: dict[tuple[str, str], list[tuple[float, float]]] = {m: [] for m in modes}
        with RedisServer() as standalone, SentinelDeployment(replicas=1) as sentinel:
            urls = {"standalone": standalone.url, "sentinel (1 replica)": sentinel.url()}
            for _ in range(args.rounds):
                for name, durability in modes:
                    rates[(name, durability)].append(
                        await throughput(urls[name], durability, args.seconds, args.window))
        print("| Redis | durability | entries/s (median) | CPU µs/entry (median) | rounds |")
        print("|---|---|---|---|---|")
        for (name, durability), runs in rates.items():
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            each = ", ".join(f"{r:,.0f}" for r, _ in runs)
            print(f"| {name} | {durability} | {rate:,.0f} | {cpu:.2f} | {each} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="failover trials per durability")
    parser.add_argument("--durability", default="none,replicated")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="throughput window per mode (0: skip)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds (the modes alternate within each)")
    parser.add_argument("--window", type=int, default=2000, help="entries pending at most")
    args = parser.parse_args()
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
