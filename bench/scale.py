"""100,000 booted chargers on one machine: ``python -m bench.scale``.

The router (several workers sharing the port with ``SO_REUSEPORT``), Redis
and the fast backend; the load generator's worker processes, each bound to its
own 127.0.0.N source address (~28,000 ephemeral ports per address and at most
20,000 file descriptors per process), connect and boot every charger, then
hold the connections open (keepalive: the router's WebSocket pings) for
``--hold`` seconds. Written to ``bench/results/scale.json``:

- user-space memory: growth of the router's process tree RSS (all workers)
  over its idle baseline, divided by the booted chargers;
- the kernel's share: ``/proc/meminfo`` ``Slab`` and ``/proc/net/sockstat``
  (TCP sockets in use, TCP buffer pages) before the connect and at the end of
  the hold — both ends of every connection live on this machine, so the
  kernel figure covers two sockets per charger;
- drops: every disconnect the chargers saw during the hold (goal 0), and a
  sample of the above every minute of the hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadgen import LoadConfig, run_load
from bench.procstat import sample_tree
from bench.run import RESULTS, log, router_stack


def kernel_sample() -> dict[str, int]:
    """Slab memory and TCP socket counters, now (proc(5), ``sockstat``)."""
    out: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("Slab", "SUnreclaim", "MemAvailable"):
                out[f"{key.lower()}_kib"] = int(value.split()[0])
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                stats = dict(zip(fields[::2], (int(v) for v in fields[1::2]), strict=True))
                out["tcp_inuse"] = stats["inuse"]
                out["tcp_mem_pages"] = stats["mem"]
                out["tcp_orphan"] = stats["orphan"]
                out["tcp_tw"] = stats["tw"]
    return out


async def sample_every(seconds: float, router_pid: int, samples: list[dict[str, Any]],
                       t0: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        tree = sample_tree(router_pid)
        samples.append({"t_s": round(time.monotonic() - t0, 1), "router_rss_kib": tree.rss_kib,
                        **kernel_sample()})
        log(f"scale sample: {samples[-1]}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # router_stack allows 19,000 connections per worker (fd limit 20,000).
    # --handshake-timeout: on a machine whose two cores also run the load
    # generators (and other jobs), an accepted connection can wait longer
    # than the default 10 s for its worker to read the upgrade request; the
    # router then closes it, which measures the shared CPU, not the router.
    extra = ("--handshake-timeout", str(args.handshake_timeout))
    async with router_stack("fast", args.router_workers, extra) as system:
        await asyncio.sleep(2.0)
        router_pid = system.watch["router"]
        kernel_before = kernel_sample()
        load_before = os.getloadavg()
        router_before = sample_tree(router_pid)
        cfg = LoadConfig(url=system.url, chargers=args.chargers, mode="idle", hold=args.hold,
                         procs=args.procs, connect_concurrency=args.connect_concurrency,
                         connect_timeout=args.connect_timeout,
                         handshake_timeout=max(30.0, args.handshake_timeout + 5),
                         watch=dict(system.watch), progress=True, reconnect=False)
        samples: list[dict[str, Any]] = []
        sampler = asyncio.create_task(sample_every(60.0, router_pid, samples, time.monotonic()))
        try:
            result = await run_load(cfg)
        finally:
            sampler.cancel()
        # The kernel at the end of the hold: the last sample taken before the
        # load generator closed the connections.
        held_until = (result.get("connect_seconds") or 0) + args.hold
        during = [s for s in samples if s["t_s"] <= held_until]
        kernel_after = during[-1] if during else kernel_sample()
    booted = result["counters"]["booted"]
    mem = result["memory"]["router"]
    slab = kernel_after["slab_kib"] - kernel_before["slab_kib"]
    tcp_pages = kernel_after["tcp_mem_pages"] - kernel_before["tcp_mem_pages"]
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.scale " + " ".join(sys.argv[1:]),
        "chargers": args.chargers, "booted": booted, "router_workers": args.router_workers,
        "loadgen_procs": result["procs"], "source_addrs": result["source_addrs"],
        "connect_seconds": result.get("connect_seconds"), "hold_s": args.hold,
        "disconnects": result["counters"]["disconnects"],
        "handshake_failures": result["counters"]["handshake_failures"],
        "failure_kinds": result["counters"]["failure_kinds"],
        "close_codes": result["counters"].get("close_codes", {}),
        "handshake_timeout_s": args.handshake_timeout,
        "connect_timeout_s": args.connect_timeout,
        "loadavg_before": load_before,
        "router_rss_before_kib": router_before.rss_kib,
        "router_rss_per_charger_kib": mem["rss_per_conn_kib"],
        "router_anon_per_charger_kib": mem["anon_per_conn_kib"],
        "loadgen_rss_kib": result["memory"]["loadgen"]["rss_kib"],
        "kernel_before": kernel_before, "kernel_after": kernel_after,
        "kernel_slab_per_charger_kib": round(slab / booted, 2) if booted else None,
        "kernel_tcp_buffers_per_charger_kib": round(tcp_pages * 4 / booted, 2) if booted else None,
        "samples": samples,
        "machine": {"cores": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=100_000)
    p.add_argument("--router-workers", type=int, default=8)
    p.add_argument("--procs", type=int, default=0, help="load generator processes (0: by fd limit)")
    p.add_argument("--hold", type=float, default=600.0, help="keepalive hold, s")
    p.add_argument("--connect-concurrency", type=int, default=256)
    p.add_argument("--connect-timeout", type=float, default=300.0,
                   help="seconds each generator process keeps connecting (and retrying)")
    p.add_argument("--handshake-timeout", type=float, default=60.0,
                   help="the router's --handshake-timeout (the router's own default is "
                        "10 s; see run())")
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log(f"scale: {out['booted']}/{out['chargers']} booted, {out['disconnects']} disconnects, "
        f"router {out['router_rss_per_charger_kib']} KiB/charger, kernel slab "
        f"{out['kernel_slab_per_charger_kib']} KiB/charger -> {args.out}")
    return 0 if out["booted"] == out["chargers"] and out["disconnects"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
