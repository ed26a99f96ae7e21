"""The benchmark scenarios: ocpp-router side by side with its anchors.

    python -m bench.run --standard              # what `make bench` runs (<= 10 min)
    python -m bench.run --scenario e2e --chargers 200 --duration 10
    python -m bench.run --scenario idle --chargers 50000
    python -m bench.run --scenario storm --chargers 20000
    python -m bench.run --scenario echo
    python -m bench.run --scenario validation

Every scenario measures our system and the anchors with the same generator in
the same run, because absolute figures on a shared 2-core machine drift from
run to run; the ratios and the CPU time per message (from /proc) are what
count. A system that does not exist yet (or fails to start) is reported as
"not available" with the reason, and the other systems still run.

Results: ``bench/results/<scenario>.json``; ``--standard`` also draws the plots
(``bench.plots``) and rewrites the generated part of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.services import REPO, Service, ServiceError, python_module
from router.embedded_redis import RedisServer, RedisServerError, free_port
from router.sim.loadgen import LoadConfig, LoadgenError, run_load

RESULTS = REPO / "bench" / "results"
# Where this run writes (``--results``); bench/RESULTS.md is only rewritten
# from the default directory.
results_dir = RESULTS
SCENARIOS = ("e2e", "idle", "storm", "echo", "validation", "sdk")

# System names as they appear in the results, tables and plots.
OCPP_LIB = "ocpp-lib (websockets + ocpp)"
PICOWS = "picows responder"
ROUTER_FAST = "ocpp-router + fast backend"
ROUTER_CSMS = "ocpp-router + reference CSMS"
ROUTER_SDK = "ocpp-router + SDK backend (constant handlers)"
ROUTER_SDK_ASYNC = "ocpp-router + SDK backend (constant async def handlers)"
ROUTER_SDK_DEDUP = "ocpp-router + SDK backend (constant handlers, Deduplicator)"
ROUTER_SDK_BASELINE = "ocpp-router + baseline SDK backend (--sdk-baseline)"
OURS_ECHO = "ocpp-router codec echo"
PICOWS_ECHO = "picows echo"
WEBSOCKETS_ECHO = "websockets echo"


class NotAvailable(Exception):
    """A system of the scenario cannot run in this build (reported, not fatal)."""


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Systems under test                                                          #
# --------------------------------------------------------------------------- #

class System:
    """A running system: its URL, the processes to watch (name -> pid), and
    how many cores each part can use at most (its busy processes)."""

    def __init__(self, url: str, watch: dict[str, int], server_part: str,
                 parallelism: dict[str, int] | None = None) -> None:
        self.url = url
        self.watch = watch
        self.server_part = server_part   # which watched process is "the server"
        self.parallelism = parallelism or dict.fromkeys(watch, 1)


@contextlib.asynccontextmanager
async def _one_server(svc: Service, port: int) -> AsyncIterator[System]:
    """Start ``svc`` (one process listening on ``port``), yield it as the
    measured server, stop it."""
    try:
        await asyncio.to_thread(svc.start)
    except ServiceError as exc:
        svc.cleanup()
        raise NotAvailable(str(exc)) from exc
    try:
        yield System(f"ws://127.0.0.1:{port}/ocpp", {"server": svc.pid}, "server")
    finally:
        svc.stop()
        svc.cleanup()


@contextlib.asynccontextmanager
async def anchor(module: str, *extra: str) -> AsyncIterator[System]:
    """Run an anchor server (``python -m module --port P``) for the block.

    Raises:
        NotAvailable: it did not start listening.
    """
    port = free_port()
    svc = Service(module.rsplit(".", 1)[-1], python_module(module, "--port", str(port), *extra),
                  port)
    async with _one_server(svc, port) as system:
        yield system


def _wait_http_ok(url: str, proc: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ServiceError(f"exited early; stderr: {proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ServiceError(f"{url} not ready after {timeout:.0f}s; stderr: {proc.log_tail()}")


def _wait_consumer_group(url: str, proc: Service, timeout: float, shards: int = 1) -> None:
    """Wait until the backend has a consumer group on every inbound stream:
    before that, a BootNotification would be published to nobody (groups
    start at ``$``) and the charger would wait for the router's reply timeout."""
    import redis

    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ServiceError(f"backend exited early; stderr: {proc.log_tail()}")
            try:
                if all(r.xinfo_groups(f"ocpp:in:{{{n}}}") for n in range(shards)):
                    return
            except redis.ResponseError:
                pass  # the stream does not exist yet
            time.sleep(0.05)
    finally:
        r.close()
    raise ServiceError(f"backend made no consumer group in {timeout:.0f}s; "
                       f"stderr: {proc.log_tail()}")


def router_available() -> str | None:
    """None if ``ocpp-router serve`` exists in this build, else the reason."""
    for mod in ("router.cli.serve", "router.server.supervisor"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not in this build"
    return None


@contextlib.asynccontextmanager
async def router_stack(backend: str, workers: int, extra: tuple[str, ...] = ()
                       ) -> AsyncIterator[System]:
    """Redis + ``ocpp-router serve`` + a backend (``fast``, ``sdk`` or ``csms``)."""
    reason = router_available()
    if reason:
        raise NotAvailable(reason)
    if backend == "csms" and importlib.util.find_spec("router.cli.reference_csms") is None:
        raise NotAvailable("the reference CSMS (ocpp-router reference-csms) is not in this build")
    try:
        redis = await asyncio.to_thread(RedisServer().start)
    except RedisServerError as exc:
        raise NotAvailable(f"redis: {exc}") from exc
    services: list[Service] = []
    try:
        assert redis.proc is not None
        if backend == "fast":
            argv = python_module("bench.backends.fast_responder", "--redis-url", redis.url)
        elif backend == "sdk-baseline":
            # The SDK of another source tree (``--sdk-baseline``), first on sys.path.
            argv = [sys.executable, "-c",
                    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
                    "runpy.run_module('bench.backends.sdk_constant', run_name='__main__')",
                    str(sdk_baseline), "--redis-url", redis.url]
        elif backend in ("sdk", "sdk-async", "sdk-dedup"):
            argv = python_module("bench.backends.sdk_constant", "--redis-url", redis.url,
                                 *(["--async"] if backend == "sdk-async" else []),
                                 *(["--dedup"] if backend == "sdk-dedup" else []))
        else:
            argv = python_module("router.cli.main", "reference-csms", "--redis-url", redis.url)
        # The backend first, so its consumer group exists before any boot.
        back = Service(f"backend-{backend}", argv, None)
        services.append(back)
        back.start()
        await asyncio.to_thread(_wait_consumer_group, redis.url, back, 30)
        port, admin = free_port(), free_port()
        router = Service("router", python_module(
            "router.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--admin-host", "127.0.0.1", "--admin-port", str(admin), "--redis-url", redis.url,
            "--workers", str(workers), "--node-id", "bench", "--auth", "none",
            "--log-level", "warning", "--drain-seconds", "1",
            # Every CALL goes through Redis and the backend (the default
            # answers Heartbeat at the edge, which would flatter the figures).
            "--heartbeat", "forward",
            # Simulated chargers send as fast as answered: no per-connection
            # message-rate limit (its own cost: bench/fleet.py, "rate limiter").
            "--message-rate", "0",
            # 50,000 chargers over a few workers, storms of 20,000 handshakes.
            "--max-connections", "19000", "--max-handshakes", "5000", *extra), port,
            env={k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")})
        services.append(router)
        router.start()
        await asyncio.to_thread(_wait_http_ok, f"http://127.0.0.1:{admin}/readyz", router, 30)
        if not back.alive():
            raise ServiceError(f"backend exited: {back.log_tail()}")
        yield System(f"ws://127.0.0.1:{port}/ocpp",
                     {"router": router.pid, "redis": redis.proc.pid, "backend": back.pid},
                     "router", {"router": workers, "redis": 1, "backend": 1})
    except ServiceError as exc:
        raise NotAvailable(str(exc)) from exc
    finally:
        for svc in reversed(services):
            svc.stop()
            svc.cleanup()
        await asyncio.to_thread(redis.stop)


def echo_server_available() -> str | None:
    if not (REPO / "bench" / "echo_server.py").exists():
        return "bench/echo_server.py is not in this build"
    return None


@contextlib.asynccontextmanager
async def our_echo() -> AsyncIterator[System]:
    reason = echo_server_available()
    if reason:
        raise NotAvailable(reason)
    port = free_port()
    svc = Service("echo_server", [sys.executable, str(REPO / "bench" / "echo_server.py"),
                                  "--host", "127.0.0.1", "--port", str(port)], port)
    async with _one_server(svc, port) as system:
        yield system


# --------------------------------------------------------------------------- #
# One measurement                                                             #
# --------------------------------------------------------------------------- #

# ``--sdk-baseline``: a source tree whose SDK the sdk scenario compares with.
sdk_baseline: Path | None = None

# Seconds to wait for the other jobs on the machine to calm down before each
# measurement (``--settle``); 0 = do not wait.
settle = 0.0


def wait_for_quiet(limit: float, threshold: float = 0.3) -> dict[str, float]:
    """Wait (at most ``limit`` seconds) until the whole machine uses less than
    ``threshold`` cores, measured over one-second windows. The system under
    test is already started and idle, so what is busy is other work.

    Returns:
        ``{"waited_s": …, "busy_cores": …}`` (the last window's load).
    """
    from router.sim.procstat import machine_busy_seconds

    t0 = time.monotonic()
    busy = machine_busy_seconds()
    cores = 0.0
    while True:
        time.sleep(1.0)
        now = machine_busy_seconds()
        cores, busy = now - busy, now
        if cores < threshold or time.monotonic() - t0 >= limit:
            return {"waited_s": round(time.monotonic() - t0, 1), "busy_cores": round(cores, 2)}


# A load to run, made from the results of the loads before it on the same
# system (the 50 % open loop needs the closed loop's maximum); None skips it.
LoadStep = tuple[str, Callable[[dict[str, dict[str, Any]]], LoadConfig | None]]


async def measure_series(system_cm: Callable[[], Any], steps: list[LoadStep]
                         ) -> dict[str, dict[str, Any]]:
    """Start a system once, run the loads of ``steps`` one after the other on
    it, stop it. Never raises for a missing or failing system: the error
    becomes the result of every step."""
    results: dict[str, dict[str, Any]] = {}
    try:
        async with system_cm() as system:
            for name, make in steps:
                cfg = make(results)
                if cfg is None:
                    continue
                log(f"{name}: {cfg.mode}, {cfg.chargers} chargers"
                    + (f", rate {cfg.rate:.0f}/s" if cfg.mode == "open" else "")
                    + (", storm" if cfg.storm else ""))
                cfg.url = system.url
                cfg.watch = dict(system.watch)
                quiet = await asyncio.to_thread(wait_for_quiet, settle) if settle else None
                try:
                    result = await run_load(cfg)
                except LoadgenError as exc:
                    log(f"{name}: load generator failed: {exc}")
                    results[name] = {"available": False, "reason": f"load generator: {exc}"}
                    continue
                result["server_part"] = system.server_part
                result["parallelism"] = {**system.parallelism, "loadgen": result["procs"]}
                if quiet is not None:
                    result["settle"] = quiet
                result["available"] = True
                log(f"{name}: {_one_line(result)}")
                results[name] = result
    except NotAvailable as exc:
        for name, _ in steps:
            if name not in results:
                log(f"{name}: not available: {exc}")
                results[name] = {"available": False, "reason": str(exc)}
    return results


async def measure(name: str, system_cm: Callable[[], Any], cfg: LoadConfig) -> dict[str, Any]:
    """One load on a freshly started system (see :func:`measure_series`)."""
    return (await measure_series(system_cm, [(name, lambda _r: cfg)]))[name]


def _one_line(r: dict[str, Any]) -> str:
    parts = []
    if "msgs_per_s" in r:
        part = r["server_part"]
        cpu = r["cpu"].get(part, {}).get("us_per_msg")
        parts.append(f"{r['msgs_per_s']:,.0f} msg/s, p99 {r['latency_ms'].get('p99')} ms, "
                     f"{part} {cpu} us/msg")
    if "memory" in r:
        m = r["memory"].get(r["server_part"], {})
        parts.append(f"{m.get('connections')} conns, {m.get('rss_per_conn_kib')} KiB/conn RSS")
    if "storm" in r:
        s = r["storm"]
        parts.append(f"storm: {s.get('rebooted')} rebooted in {s.get('seconds_to_all_booted')} s,"
                     f" {s.get('handshake_failures')} failed handshakes")
    c = r["counters"]
    parts.append(f"booted {c['booted']}/{r['chargers']}, hs-fail {c['handshake_failures']}, "
                 f"disc {c['disconnects']}, callerrors {c['call_errors']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- #
# Scenarios                                                                   #
# --------------------------------------------------------------------------- #

async def scenario_e2e(a: argparse.Namespace) -> dict[str, Any]:
    """Chargers -> system -> (Redis -> backend ->) system -> chargers, closed
    loop; then our system in open loop at half its closed-loop maximum."""
    n, d, w = a.chargers or 200, a.duration or 8.0, a.warmup

    def closed(proto: str = "ocpp1.6") -> LoadConfig:
        return LoadConfig(url="", chargers=n, mode="closed", proto=proto, duration=d, warmup=w,
                          procs=1, progress=a.progress)

    systems: dict[str, Any] = {}
    systems.update(await measure_series(lambda: anchor("bench.anchors.ocpp_csms"), [
        (OCPP_LIB, lambda _r: closed()),
        # The library has no 2.1 support; 2.0.1 is its other documented version.
        (OCPP_LIB + " (ocpp2.0.1)", lambda _r: closed("ocpp2.0.1")),
    ]))
    systems.update(await measure_series(lambda: anchor("bench.anchors.picows_responder"), [
        (PICOWS, lambda _r: closed()),
        (PICOWS + " (mixed versions)", lambda _r: closed("mix")),
    ]))
    rw = a.router_workers or 1

    def half(prev: dict[str, dict[str, Any]]) -> LoadConfig | None:
        top = prev.get(ROUTER_FAST, {})
        if not top.get("msgs_per_s"):
            return None
        # Open loop at half the maximum just measured, on the same running
        # system (same processes, same warm caches, minutes apart at most).
        return LoadConfig(url="", chargers=n, mode="open", rate=top["msgs_per_s"] / 2,
                          duration=d, warmup=w, procs=1, progress=a.progress)

    systems.update(await measure_series(lambda: router_stack("fast", rw), [
        (ROUTER_FAST, lambda _r: closed()),
        (ROUTER_FAST + " @ 50% load", half),
        (ROUTER_FAST + " (mixed versions)", lambda _r: closed("mix")),
    ]))
    systems[ROUTER_CSMS] = await measure(ROUTER_CSMS, lambda: router_stack("csms", rw), closed())
    rounds = await paired_rounds(a.rounds, closed, rw, a.progress)
    return {"systems": systems, "chargers": n, "duration_s": d, "router_workers": rw,
            "rounds": rounds, "rounds_summary": summarize_rounds(rounds)}


def _open_at(cfg: LoadConfig, rate: float) -> LoadConfig:
    return LoadConfig(url="", chargers=cfg.chargers, mode="open", rate=rate,
                      duration=cfg.duration, warmup=cfg.warmup, procs=1, progress=cfg.progress)


async def paired_rounds(count: int, closed: Callable[[], LoadConfig], workers: int,
                        progress: bool) -> list[dict[str, Any]]:
    """The goal figures again in ``count`` alternating rounds, each on freshly
    started systems, one right after the other: the router in closed loop and
    at half that rate, then the picows responder in closed loop and in open
    loop at the router's closed-loop rate.

    One measurement of each system, minutes apart, is a lottery on a shared
    machine (the router's four-process stack drifts with the other jobs, and
    the responder switches between two states); the verdicts use the medians
    of these rounds. The responder at the router's rate shows what part of
    the ratio is the load point: a server's CPU per message falls as its load
    rises (more messages share each wake-up), and the responder, alone on the
    generator, runs at two to three times the router's rate in closed loop.
    """
    out: list[dict[str, Any]] = []
    for i in range(count):
        log(f"round {i + 1}/{count}")
        row: dict[str, Any] = {}

        def half(prev: dict[str, dict[str, Any]]) -> LoadConfig | None:
            rate = prev.get("router", {}).get("msgs_per_s")
            return _open_at(closed(), rate / 2) if rate else None

        mine = await measure_series(lambda: router_stack("fast", workers), [
            ("router", lambda _r: closed()), ("router @ 50% load", half)])
        rate = mine["router"].get("msgs_per_s")

        def matched(_prev: dict[str, dict[str, Any]], rate: float | None = rate
                    ) -> LoadConfig | None:
            return _open_at(closed(), rate) if rate else None

        theirs = await measure_series(lambda: anchor("bench.anchors.picows_responder"), [
            ("picows", lambda _r: closed()), ("picows @ router rate", matched)])
        skipped = {"available": False, "reason": "not run (no closed-loop rate)"}
        for key, r in (("router", mine["router"]),
                       ("router_half", mine.get("router @ 50% load", skipped)),
                       ("picows", theirs["picows"]),
                       ("picows_matched", theirs.get("picows @ router rate", skipped))):
            if not r.get("available"):
                row[key] = {"available": False, "reason": r.get("reason", "")}
                continue
            part = r["server_part"]
            target = {"router_half": rate / 2 if rate else None,
                      "picows_matched": rate}.get(key)
            row[key] = {"available": True, "msgs_per_s": r["msgs_per_s"],
                        "target_msgs_per_s": target,
                        "us_per_msg": r["cpu"][part]["us_per_msg"],
                        "p99_ms": r["latency_ms"].get("p99"),
                        "other_cores": _nested(r, "machine_cores_busy", "other_processes")}
        out.append(row)
    return out


def _nested(d: Any, *path: str) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds, and the ratios the goals use: router CPU per
    message over the responder's (closed loop, each at its own maximum), the
    same at equal rates, and p99 at half load."""
    def values(key: str, field: str) -> list[float]:
        return [r[key][field] for r in rounds
                if r.get(key, {}).get("available") and r[key].get(field) is not None]

    def med(key: str, field: str) -> float | None:
        v = values(key, field)
        return statistics.median(v) if v else None

    out: dict[str, Any] = {"rounds": len(rounds)}
    for key in ("router", "router_half", "picows", "picows_matched"):
        out[key] = {"us_per_msg": med(key, "us_per_msg"), "msgs_per_s": med(key, "msgs_per_s"),
                    "p99_ms": med(key, "p99_ms")}
    r, p, m = (out[k]["us_per_msg"] for k in ("router", "picows", "picows_matched"))
    out["cpu_ratio"] = r / p if r and p else None
    out["cpu_ratio_matched"] = r / m if r and m else None
    pairs = [(x["router"]["us_per_msg"], x["picows"]["us_per_msg"]) for x in rounds
             if x.get("router", {}).get("available") and x.get("picows", {}).get("available")]
    out["cpu_ratio_per_round"] = [a / b for a, b in pairs]
    out["p99_half_per_round"] = values("router_half", "p99_ms")
    return out


async def scenario_idle(a: argparse.Namespace) -> dict[str, Any]:
    """Booted, idle chargers held open: user-space RSS growth per connection."""
    n = a.chargers or 50000
    anchors_n = min(n, a.anchor_chargers or 15000)
    rw = a.router_workers or max(1, -(-n // 15000))

    def idle(count: int) -> LoadConfig:
        return LoadConfig(url="", chargers=count, mode="idle", hold=a.hold, progress=a.progress,
                          connect_concurrency=256)

    return await _router_and_anchors(idle, n, anchors_n, rw)


async def _router_and_anchors(load: Callable[[int], LoadConfig], n: int, anchors_n: int,
                              rw: int) -> dict[str, Any]:
    """The router (``rw`` workers, fast backend) with ``load(n)``, then both
    anchors with ``load(anchors_n)``."""
    systems: dict[str, Any] = {}
    systems[ROUTER_FAST] = await measure(ROUTER_FAST, lambda: router_stack("fast", rw), load(n))
    systems[OCPP_LIB] = await measure(OCPP_LIB, lambda: anchor("bench.anchors.ocpp_csms"),
                                      load(anchors_n))
    systems[PICOWS] = await measure(PICOWS, lambda: anchor("bench.anchors.picows_responder"),
                                    load(anchors_n))
    return {"systems": systems, "chargers": n, "anchor_chargers": anchors_n,
            "router_workers": rw}


async def scenario_storm(a: argparse.Namespace) -> dict[str, Any]:
    """All booted chargers drop at once (TCP reset) and reconnect at once."""
    n = a.chargers or 20000
    # The anchors reconnect a few hundred to a few thousand chargers per
    # second; 5,000 keeps the standard run within its ten minutes, and the
    # comparable figure is the reconnect rate.
    anchors_n = min(n, a.anchor_chargers or 5000)
    rw = a.router_workers or 2

    def storm(count: int) -> LoadConfig:
        return LoadConfig(url="", chargers=count, mode="idle", hold=1.0, storm=True,
                          storm_timeout=60.0, progress=a.progress, connect_concurrency=1000)

    return await _router_and_anchors(storm, n, anchors_n, rw)


async def scenario_echo(a: argparse.Namespace) -> dict[str, Any]:
    """The WebSocket codec alone: echo throughput with 200 connections (one
    message in flight each), then RSS growth per idle connection."""
    n, d, w = a.chargers or 200, a.duration or 8.0, a.warmup
    idle_n = a.anchor_chargers or 15000
    servers: dict[str, Callable[[], Any]] = {
        OURS_ECHO: our_echo,
        PICOWS_ECHO: lambda: anchor("bench.anchors.picows_echo"),
        WEBSOCKETS_ECHO: lambda: anchor("bench.anchors.websockets_echo"),
    }
    systems: dict[str, Any] = {}
    for name, cm in servers.items():
        systems[name] = await measure(name, cm, LoadConfig(
            url="", chargers=n, mode="echo", duration=d, warmup=w, procs=1,
            progress=a.progress))
    for name, cm in servers.items():
        systems[name + " (idle)"] = await measure(name + " (idle)", cm, LoadConfig(
            url="", chargers=idle_n, mode="idle", proto="none", hold=a.hold,
            progress=a.progress))
    return {"systems": systems, "chargers": n, "idle_connections": idle_n}


async def scenario_validation(a: argparse.Namespace) -> dict[str, Any]:
    """Validation alone: runs the OCPP-J engineer's ``bench/bench_validation.py``."""
    script = REPO / "bench" / "bench_validation.py"
    if not script.exists():
        return {"available": False, "reason": "bench/bench_validation.py is not in this build"}
    out = results_dir / "validation.raw.json"
    argv = [sys.executable, str(script.relative_to(REPO)), "--json",
            os.path.relpath(out, REPO)]
    log("validation: " + shlex.join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    stdout, stderr = await proc.communicate()
    result: dict[str, Any] = {"command": shlex.join(["python", *argv[1:]]),
                              "status": proc.returncode,
                              "stdout": stdout.decode(errors="replace")[-4000:]}
    if proc.returncode != 0:
        result.update(available=False, reason=stderr.decode(errors="replace")[-600:])
        return result
    result["available"] = True
    if out.exists():
        result["data"] = orjson.loads(out.read_bytes())
    return result


async def scenario_sdk(a: argparse.Namespace) -> dict[str, Any]:
    """The backend SDK (issue 14): router + one backend process, 200 chargers,
    closed loop, with the compiled fast responder, an SDK app with constant
    handlers (``bench.backends.sdk_constant``) and the reference CSMS as the
    backend, one after the other in one run; then the SDK app in open loop at
    25 % and 50 % of its closed-loop maximum (batching makes its CPU per
    message depend on the load), and with ``async def`` handlers (a task
    each). The figure of each is the backend process's
    CPU per message (``cpu.backend.us_per_msg``) and the system's rate."""
    n, d, w = a.chargers or 200, a.duration or 8.0, a.warmup
    rw = a.router_workers or 1

    def closed() -> LoadConfig:
        return LoadConfig(url="", chargers=n, mode="closed", duration=d, warmup=w, procs=1,
                          progress=a.progress)

    def share(name: str, part: float) -> Callable[[dict[str, dict[str, Any]]], LoadConfig | None]:
        def make(prev: dict[str, dict[str, Any]]) -> LoadConfig | None:
            top = prev.get(name, {}).get("msgs_per_s")
            return _open_at(closed(), top * part) if top else None
        return make

    systems: dict[str, Any] = {}
    systems.update(await measure_series(lambda: router_stack("fast", rw), [
        (ROUTER_FAST, lambda _r: closed())]))
    systems.update(await measure_series(lambda: router_stack("sdk", rw), [
        (ROUTER_SDK, lambda _r: closed()),
        (ROUTER_SDK + " @ 25% load", share(ROUTER_SDK, 0.25)),
        (ROUTER_SDK + " @ 50% load", share(ROUTER_SDK, 0.5)),
    ]))
    systems.update(await measure_series(lambda: router_stack("sdk-async", rw), [
        (ROUTER_SDK_ASYNC, lambda _r: closed())]))
    systems.update(await measure_series(lambda: router_stack("sdk-dedup", rw), [
        (ROUTER_SDK_DEDUP, lambda _r: closed())]))
    systems.update(await measure_series(lambda: router_stack("csms", rw), [
        (ROUTER_CSMS, lambda _r: closed())]))
    # Alternating rounds, each system freshly started, one right after the
    # other: the throughput ratios use their medians (a single pair minutes
    # apart is a lottery on a shared machine).
    lineup = [("fast", ROUTER_FAST), ("sdk", ROUTER_SDK)]
    if sdk_baseline is not None:
        lineup.append(("sdk-baseline", ROUTER_SDK_BASELINE))
    rounds: list[dict[str, Any]] = []
    for i in range(a.rounds):
        log(f"round {i + 1}/{a.rounds}")
        row: dict[str, Any] = {}
        for backend, name in lineup:
            r = await measure(name, lambda b=backend: router_stack(b, rw), closed())
            row[name] = ({"msgs_per_s": r["msgs_per_s"],
                          "backend_us_per_msg": _nested(r, "cpu", "backend", "us_per_msg"),
                          "other_cores": _nested(r, "machine_cores_busy", "other_processes")}
                         if r.get("available") else {"reason": r.get("reason")})
        rounds.append(row)
    medians: dict[str, Any] = {}
    for _backend, name in lineup:
        rates = [r[name]["msgs_per_s"] for r in rounds if "msgs_per_s" in r.get(name, {})]
        cpus = [r[name]["backend_us_per_msg"] for r in rounds
                if r.get(name, {}).get("backend_us_per_msg") is not None]
        medians[name] = {"msgs_per_s": statistics.median(rates) if rates else None,
                         "backend_us_per_msg": statistics.median(cpus) if cpus else None}
    summary: dict[str, Any] = {"rounds_median": medians}
    fast_rate = medians[ROUTER_FAST]["msgs_per_s"]
    sdk_rate = medians[ROUTER_SDK]["msgs_per_s"]
    if fast_rate and sdk_rate:
        summary["rounds_sdk_rate_over_fast"] = round(sdk_rate / fast_rate, 3)
    if sdk_baseline is not None and sdk_rate and medians[ROUTER_SDK_BASELINE]["msgs_per_s"]:
        summary["rounds_sdk_rate_over_baseline"] = round(
            sdk_rate / medians[ROUTER_SDK_BASELINE]["msgs_per_s"], 3)
    for name, r in systems.items():
        if r.get("available"):
            summary[name] = {"msgs_per_s": r["msgs_per_s"],
                             "backend_us_per_msg": _nested(r, "cpu", "backend", "us_per_msg"),
                             "router_us_per_msg": _nested(r, "cpu", "router", "us_per_msg"),
                             "other_cores": _nested(r, "machine_cores_busy", "other_processes")}
    fast, sdk = summary.get(ROUTER_FAST, {}), summary.get(ROUTER_SDK, {})
    if fast.get("msgs_per_s") and sdk.get("msgs_per_s"):
        summary["sdk_rate_over_fast"] = round(sdk["msgs_per_s"] / fast["msgs_per_s"], 3)
    for name, s in summary.items():
        log(f"{name}: {s}")
    return {"systems": systems, "summary": summary, "rounds": rounds, "chargers": n,
            "duration_s": d, "router_workers": rw,
            "sdk_baseline": str(sdk_baseline) if sdk_baseline else None}


RUNNERS = {"e2e": scenario_e2e, "idle": scenario_idle, "storm": scenario_storm,
           "echo": scenario_echo, "validation": scenario_validation, "sdk": scenario_sdk}


# --------------------------------------------------------------------------- #
# Machine, files                                                              #
# --------------------------------------------------------------------------- #

def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "nofile_limit": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE),
        "load_avg_at_start": os.getloadavg(), "git_commit": commit,
    }


_NUMBER_LIST = re.compile(rb"\[\s*((?:-?[0-9.eE+]+,\s*)*-?[0-9.eE+]+)\s*\]")


def compact_json(data: Any) -> bytes:
    """Indented JSON, but a list of numbers (a histogram bucket, a timeline
    point) on one line, so results files stay readable and diffable."""
    raw = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    return _NUMBER_LIST.sub(lambda m: b"[" + re.sub(rb",\s+", b", ", m.group(1)) + b"]", raw)


def save(scenario: str, data: dict[str, Any], argv: list[str]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{scenario}.json"
    data = {"scenario": scenario, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.run " + shlex.join(argv), "machine": machine(), **data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(compact_json(data))
    tmp.replace(path)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--standard", action="store_true",
                   help="every scenario with the standard sizes, plots, RESULTS.md")
    g.add_argument("--scenario", choices=SCENARIOS, action="append",
                   help="run this scenario (repeat for several)")
    p.add_argument("--chargers", type=int, default=0,
                   help="chargers (e2e 200, idle 50000, storm 20000, echo 200)")
    p.add_argument("--anchor-chargers", type=int, default=0,
                   help="idle and echo-idle size of the single-process anchors (15000), "
                   "storm size (5000)")
    p.add_argument("--duration", type=float, default=0.0, help="measurement window, s (8)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--hold", type=float, default=3.0, help="idle: hold before measuring, s")
    p.add_argument("--router-workers", type=int, default=0,
                   help="router worker processes (e2e 1, idle chargers/15000, storm 2)")
    p.add_argument("--rounds", type=int, default=3,
                   help="e2e: alternating rounds of router and picows responder after the "
                   "main series; the goal verdicts use their medians (0 = none)")
    p.add_argument("--sdk-baseline", metavar="DIR",
                   help="sdk: also run the SDK of this source tree (e.g. a worktree of an "
                   "older commit, extensions built in place) in the rounds")
    p.add_argument("--settle", type=float, default=0.0, metavar="S",
                   help="before each measurement wait up to S seconds until other jobs use "
                   "< 0.3 cores (shared machines)")
    p.add_argument("--results", default=str(RESULTS), metavar="DIR",
                   help="write results and plots here (default bench/results; only that "
                   "one updates bench/RESULTS.md)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", dest="progress", action="store_false",
                   help="no per-second progress of the generator")
    return p


async def _main(args: argparse.Namespace, argv: list[str]) -> int:
    global settle, results_dir, sdk_baseline
    settle = args.settle
    sdk_baseline = Path(args.sdk_baseline).resolve() if args.sdk_baseline else None
    results_dir = Path(args.results).resolve()
    scenarios = list(SCENARIOS) if args.standard else args.scenario
    t0 = time.monotonic()
    for scenario in scenarios:
        log(f"=== scenario {scenario}")
        data = await RUNNERS[scenario](args)
        path = save(scenario, data, argv)
        log(f"=== {scenario} done, {os.path.relpath(path, REPO)} "
            f"({time.monotonic() - t0:.0f} s so far)")
    if not args.no_plots:
        from bench import plots, report

        for png in plots.draw_all(results_dir):
            log(f"plot {os.path.relpath(png, REPO)}")
        if args.standard and results_dir == RESULTS:
            report.update_results_md(RESULTS, REPO / "bench" / "RESULTS.md")
            log("bench/RESULTS.md updated")
    log(f"all done in {time.monotonic() - t0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return uvloop.run(_main(args, argv))


if __name__ == "__main__":
    sys.exit(main())
