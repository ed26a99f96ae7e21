"""A node writing its registry back after Redis lost it: ``python -m bench.registry_restore``.

What a node holding ``--entries`` chargers does when its liveness key is gone
(Redis restarted without persistence): ``Registry.refresh`` (pipelined
``EXPIRE``s, all missing) then ``Registry.restore_many`` (the conditional
restore script, pipelined 1,000 per round trip, one chunk in flight, the
script cache empty first) — against the one-round-trip-per-entry restore of
before, on a sample of the same entries. Both over the router's own
``SharedConnection`` to a private redis-server; for each: wall time, this
process's CPU time, and the longest the event loop went without running a
ticker task (what every charger connection of that node would wait).
Written to ``bench/results/registry_restore.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import RESULTS, log
from router.embedded_redis import RedisServer
from router.streams.connection import SharedConnection
from router.streams.keys import KeySpace
from router.streams.registry import Entry, Registry


async def measure(step: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """Wall, CPU and the longest event-loop stall while ``step`` runs."""
    stalls = [0.0]
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            stalls[0] = max(stalls[0], now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await step()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    done = True
    await tick
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "longest_loop_stall_ms": round(stalls[0] * 1000, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as server:
        conn = SharedConnection(server.url, name="bench-registry-restore")
        registry = Registry(conn, KeySpace("bench"), ttl=300)
        entries = [Entry(f"CP-{i:06d}", "bench-0", f"c{i}", "ocpp1.6",
                         1_764_000_000_000 + i, "127.0.0.1:50000") for i in range(args.entries)]
        sample = entries[:args.sequential]
        try:
            await conn.command(b"PING")
            out: dict[str, Any] = {}
            for name, batch in (("pipelined", entries), ("sequential", sample)):
                await conn.command(b"FLUSHALL")
                await conn.command(b"SCRIPT", b"FLUSH")     # as after a restart

                async def pipelined(batch: list[Entry] = batch) -> None:
                    missing = set(await registry.refresh(e.identity for e in batch))
                    written = await registry.restore_many(
                        e for e in batch if e.identity in missing)
                    assert written == len(batch), written

                async def sequential(batch: list[Entry] = batch) -> None:
                    missing = set(await registry.refresh(e.identity for e in batch))
                    for e in batch:
                        if e.identity in missing:
                            await registry.restore(e.identity, node=e.node, conn=e.conn,
                                                   proto=e.proto, since_ms=e.since_ms,
                                                   addr=e.addr)

                figures = await measure(pipelined if name == "pipelined" else sequential)
                figures["entries"] = len(batch)
                figures["per_entry_us"] = round(figures["wall_s"] / len(batch) * 1e6, 1)
                keys = await conn.command(b"DBSIZE")
                assert keys == len(batch), keys
                out[name] = figures
                log(f"registry restore, {name}: {figures}")
        finally:
            await conn.close()
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.registry_restore " + " ".join(sys.argv[1:]),
            "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg()}, **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.registry_restore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=50_000, help="chargers on the node")
    p.add_argument("--sequential", type=int, default=5_000,
                   help="entries restored one round trip each, for comparison")
    p.add_argument("--out", type=Path, default=RESULTS / "registry_restore.json")
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
