"""Soak: ``python -m bench.soak`` (``make soak``; default one hour).

One router node (``--workers 1``), Redis, an SDK backend
(:mod:`bench.backends.sdk_backend`) and a fleet of chargers
(:mod:`bench.ledger`) that each send a CALL every ~2 s and close and reopen
their connection every ~20 s, for ``--seconds``. Every ``--sample`` seconds
(60) it records the router's RSS and open file descriptors (its process tree,
from /proc), the registry size (``ocpp:cs:*`` hashes in Redis), the
connections the router holds, and the mean publish latency over the interval
(from the router's ``ocpp_router_publish_latency_seconds`` histogram). After
the run the chargers stop and it samples once more (baseline check).

Goals: RSS growth < 5 % from the end of the warm-up (the first ``--warmup``
seconds) to the end; fds and registry back to their baseline after the
chargers left; no CALL without an answer (timeouts, CALLERRORs, duplicates).
Written to ``bench/results/soak.json`` and plotted to ``bench/results/soak.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as redis_sync

from bench.chaos import _wait_ready
from bench.ledger import Fleet
from bench.procstat import descendants, sample_tree
from bench.services import Service, python_module
from router.embedded_redis import RedisServer, free_port

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def fds(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, PermissionError):
            pass
    return total


def publish_histogram(admin: int) -> tuple[float, float]:
    """(sum, count) of the publish latency histogram on the admin endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("ocpp_router_publish_latency_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("ocpp_router_publish_latency_seconds_count"):
            count += float(line.split()[-1])
    return total, count


def registry_size(url: str) -> int:
    r = redis_sync.Redis.from_url(url)
    try:
        return sum(1 for _ in r.scan_iter(match="ocpp:cs:*", count=1000))
    finally:
        r.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    redis = RedisServer().start()
    backend = Service("backend", python_module(
        "bench.backends.sdk_backend", "--redis-url", redis.url, "--log",
        str(workdir / "backend.log")), None)
    port, admin = free_port(), free_port()
    router = Service("router", python_module(
        "router.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--admin-host", "127.0.0.1", "--admin-port", str(admin), "--redis-url", redis.url,
        "--node-id", "soak", "--auth", "none", "--workers", "1", "--heartbeat", "forward",
        "--log-level", "warning"), port,
        env={k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")})
    samples: list[dict[str, Any]] = []
    try:
        backend.start()
        router.start()
        await asyncio.to_thread(_wait_ready, admin)
        await asyncio.sleep(2)

        def sample(t0: float, prev: tuple[float, float]) -> tuple[float, float]:
            s, c = publish_histogram(admin)
            ds, dc = s - prev[0], c - prev[1]
            tree = sample_tree(router.pid)
            samples.append({
                "t_s": round(time.monotonic() - t0, 1), "rss_kib": tree.rss_kib,
                "fds": fds(router.pid), "registry": registry_size(redis.url),
                "connected": fleet.connected,
                "publish_ms_mean": round(ds / dc * 1000, 3) if dc else None,
                "publishes": int(dc)})
            log(f"sample {samples[-1]}")
            return s, c

        fleet = Fleet(f"ws://127.0.0.1:{port}/ocpp", args.chargers, prefix="SOAK",
                      interval=args.interval, cycle_every=args.cycle, call_timeout=35.0)
        t0 = time.monotonic()
        prev = sample(t0, (0.0, 0.0))
        baseline = dict(samples[0])
        fleet.start()
        end = t0 + args.seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            prev = sample(t0, prev)
        await fleet.stop()
        await asyncio.sleep(5)      # the router notices the last closes
        sample(t0, prev)
        final = samples[-1]
    finally:
        router.stop()
        backend.stop()
        router.cleanup()
        backend.cleanup()
        redis.stop()
    loaded = [s for s in samples[1:-1] if s["t_s"] >= args.warmup]
    growth = ((loaded[-1]["rss_kib"] - loaded[0]["rss_kib"]) / loaded[0]["rss_kib"] * 100
              if len(loaded) >= 2 else None)
    books = fleet.books.snapshot()
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
        "seconds": args.seconds, "chargers": args.chargers, "interval_s": args.interval,
        "reconnect_every_s": args.cycle, "warmup_s": args.warmup,
        "rss_growth_after_warmup_pct": round(growth, 2) if growth is not None else None,
        "baseline": baseline, "after": final, "chargers_saw": books, "samples": samples,
        "machine": {"cores": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
    }
    out["fds_back_to_baseline"] = final["fds"] <= baseline["fds"]
    out["registry_back_to_baseline"] = final["registry"] == baseline["registry"]
    out["no_error"] = not any(books[k] for k in ("callerror", "timeout", "duplicate", "unknown"))
    return out


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = out["samples"]
    t = [x["t_s"] / 60 for x in s]
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(t, [x["rss_kib"] / 1024 for x in s], marker="o")
    axes[0].set_ylabel("router RSS, MiB")
    axes[1].plot(t, [x["fds"] for x in s], marker="o", label="router fds")
    axes[1].plot(t, [x["connected"] for x in s], marker=".", label="chargers connected")
    axes[1].legend()
    axes[2].plot(t, [x["registry"] for x in s], marker="o")
    axes[2].set_ylabel("registry entries")
    axes[3].plot(t, [x["publish_ms_mean"] for x in s], marker="o")
    axes[3].set_ylabel("publish latency, ms (mean)")
    axes[3].set_xlabel("minutes")
    fig.suptitle(f"soak: {out['chargers']} chargers, CALL every {out['interval_s']} s, "
                 f"reconnect every {out['reconnect_every_s']} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--chargers", type=int, default=500)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--cycle", type=float, default=20.0, help="reconnect every, s")
    p.add_argument("--sample", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, args.out.with_suffix(".png"))
    ok = ((out["rss_growth_after_warmup_pct"] or 0) < 5 and out["fds_back_to_baseline"]
          and out["registry_back_to_baseline"] and out["no_error"])
    log(f"soak: RSS growth {out['rss_growth_after_warmup_pct']} %, fds "
        f"{out['baseline']['fds']} -> {out['after']['fds']}, registry "
        f"{out['baseline']['registry']} -> {out['after']['registry']}, chargers saw "
        f"{out['chargers_saw']} -> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
