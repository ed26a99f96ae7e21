"""Fleet figures (issue 13): rebalancing after scale-out, reconnect storms with
and without admission control, the CPU cost of the message-rate limiter.

Scenarios (``python -m bench.fleet SCENARIO --help``):

``flood``     the neighbours' latency (500 chargers, open loop at 500 CALLs/s
              through Redis and the backend) alone, beside a charger sending
              StatusNotifications as fast as they are answered with the
              limiter on (default rate), and with it off.
``limiter``   the compiled per-message path (``ChargerCore.text_event`` → decode
              → rate check → the edge-answered Heartbeat) driven in-process,
              rounds alternating limiter off / on (never limiting), CPU time per
              message from ``time.process_time``; the difference is the
              limiter's cost.
``scaleout``  N chargers (bench.loadgen, idle) through real haproxy processes on
              one router node; a second node starts and haproxy reloads with
              both, then a third: the seconds until every node is within
              ± tolerance of the mean and every charger is connected again, and
              the connections shed per second.
``storm``     N chargers through haproxy on one router node; every connection
              drops at once and all reconnect and boot again: with admission
              control (``--max-handshakes``, ``--max-handshake-rate``, chargers
              honouring Retry-After) and without; seconds to all booted and the
              p99 of the successful handshakes.

haproxy holds at most 9,000 connections here (its descriptor limit), so large
fleets go through several haproxy processes, each balancing over every node,
as the several frontends of a cloud load balancer do. Results are printed as
JSON and written to ``bench/results/fleet.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.loadgen import LoadConfig, merge_hists, percentiles, run_load
from bench.services import REPO, HAProxy, Service, ServiceError, metric_sum, python_module
from router.embedded_redis import RedisServer, free_port

PER_LB = 5000          # chargers per haproxy process (its maxconn is 9000)


# --------------------------------------------------------------------------- #
# limiter                                                                     #
# --------------------------------------------------------------------------- #

def limiter(rounds: int, messages: int) -> dict[str, Any]:
    """CPU µs per message of the compiled charger path, limiter off vs on."""
    from router.ocppj import dialect
    from router.server._charger import ChargerCore
    from router.ws import WSSettings

    class Conn(ChargerCore):
        answered = 0

        def edge_answer(self, msg: Any) -> None:
            self.answered += 1

        def rate_limited(self, msg: Any) -> None:     # never reached: the rate is huge
            raise AssertionError("limited")

    def conn(rate: float) -> Conn:
        c = Conn(WSSettings())
        node = SimpleNamespace(
            publisher=None, metrics=SimpleNamespace(calls_in={}, results_out={},
                                                    reply_latency=None),
            timed=set(), node_b=b"bench", reply_timeout=30.0, edge_heartbeat=True,
            config=SimpleNamespace(message_rate=rate, message_burst=1_000_000))
        c.bind(node)
        c.dialect = dialect("ocpp1.6")
        c.call_id = None
        return c

    data = b'[2,"19223201","Heartbeat",{}]'
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        # "on": a rate the loop cannot reach within the burst (10 µs per
        # token, a million tokens), so every message takes the full check.
        for name, rate in (("off", 0.0), ("on", 1e5)):
            c = conn(rate)
            on_text = c.on_text
            t0 = time.process_time()
            for _ in range(messages):
                on_text(data)
            spent = time.process_time() - t0
            assert c.answered == messages
            results[name].append(spent * 1e6 / messages)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    diffs = [b - a for a, b in zip(results["off"], results["on"], strict=True)]
    return {"scenario": "limiter", "rounds": rounds, "messages_per_round": messages,
            "us_per_msg_off": results["off"], "us_per_msg_on": results["on"],
            "median_off_us": round(off, 4), "median_on_us": round(on, 4),
            "limiter_cost_us": round(statistics.median(diffs), 4),
            "goal_us": 0.3}


# --------------------------------------------------------------------------- #
# fleets                                                                      #
# --------------------------------------------------------------------------- #

class Fleet:
    """A Redis, a fast responder, router nodes and haproxy processes."""

    def __init__(self, router_args: list[str], lbs: int, balance: str,
                 max_nodes: int = 1) -> None:
        self.router_args = router_args
        # Every node's port is in haproxy's configuration from the start; the
        # ones not started yet fail their health checks and get no traffic,
        # and come up by health check when started, as new pods do behind a
        # load balancer: no reload, so haproxy keeps its connection counts
        # (which leastconn balances on).
        self.ports = [(free_port(), free_port()) for _ in range(max_nodes)]
        self.redis = RedisServer()
        self.services: list[Service] = []
        self.nodes: list[tuple[Service, int]] = []     # (service, admin port)
        self.lbs: list[HAProxy] = []
        self.nlbs = lbs
        self.balance = balance

    def __enter__(self) -> Fleet:
        self.redis.__enter__()
        back = Service("responder", python_module(
            "bench.backends.fast_responder", "--redis-url", self.redis.url, "--from-start"),
            None)
        self.services.append(back)
        back.start()
        return self

    def add_node(self) -> Service:
        port, admin = self.ports[len(self.nodes)]
        name = f"node{len(self.nodes)}"
        svc = Service(name, python_module(
            "router.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--admin-host", "127.0.0.1", "--admin-port", str(admin),
            "--redis-url", self.redis.url, "--node-id", name, "--log-level", "warning",
            "--max-connections", "19000", *self.router_args), port,
            env={k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")})
        svc.admin_port = admin  # type: ignore[attr-defined]
        self.services.append(svc)
        svc.start()
        _wait_ready(admin)
        self.nodes.append((svc, admin))
        if not self.lbs:
            backends = [("127.0.0.1", p) for p, _ in self.ports]
            for _ in range(self.nlbs):
                lb = HAProxy(backends, balance=self.balance)
                lb.start()
                self.lbs.append(lb)
            time.sleep(2.0)      # health checks mark the nodes not started yet down
        return svc

    def counts(self) -> list[int]:
        return [int(_metric(admin, "ocpp_router_connections")) for _, admin in self.nodes]

    def metric(self, name: str, **labels: str) -> list[float]:
        return [_metric(admin, name, **labels) for _, admin in self.nodes]

    def __exit__(self, *exc: object) -> None:
        for lb in self.lbs:
            with contextlib.suppress(Exception):
                lb.stop()
                lb.cleanup()
        for svc in reversed(self.services):
            with contextlib.suppress(Exception):
                svc.stop()
                svc.cleanup()
        self.redis.__exit__(None, None, None)


def _wait_ready(admin: int, seconds: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.1)
    raise ServiceError(f"router on admin port {admin} not ready")


def _metric(admin: int, name: str, **labels: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return metric_sum(r.read().decode(), name, **labels)


def _loads(fleet: Fleet, chargers: int, prefix: str, **kw: Any) -> list[LoadConfig]:
    """One load generator run per haproxy, the chargers split between them."""
    per, extra = divmod(chargers, len(fleet.lbs))
    cfgs = []
    for i, lb in enumerate(fleet.lbs):
        n = per + (1 if i < extra else 0)
        cfgs.append(LoadConfig(url=f"ws://127.0.0.1:{lb.listen_port}/ocpp", chargers=n,
                               mode="idle", id_prefix=f"{prefix}{i}-", progress=False,
                               source_addrs=[f"127.0.{i + 1}.{10 + j}" for j in range(4)],
                               connect_timeout=600, **kw))
    return cfgs


async def _all_held(cfgs: list[LoadConfig], step: Callable[[Callable[[], int]], Any]
                    ) -> list[dict[str, Any]]:
    """Run the load generators; once all are holding, run ``step(connected)``."""
    counters: list[Callable[[], dict[str, int]]] = []
    arrived = asyncio.Event()
    released = asyncio.Event()

    async def hold(c: Callable[[], dict[str, int]]) -> None:
        counters.append(c)
        if len(counters) == len(cfgs):
            arrived.set()
        await released.wait()

    async def driver() -> None:
        await arrived.wait()
        try:
            await step(lambda: sum(c()["connected"] for c in counters))
        finally:
            released.set()

    results = await asyncio.gather(*(run_load(c, hold=hold) for c in cfgs), driver())
    return list(results[:-1])


def scaleout(chargers: int, nodes: int, rate: float, tolerance: float,
             balance: str) -> dict[str, Any]:
    args = ["--rebalance-rate", str(rate), "--rebalance-tolerance", str(tolerance),
            "--rebalance-interval", "1", "--max-handshakes", "5000"]
    lbs = max(1, -(-chargers // PER_LB))
    steps: list[dict[str, Any]] = []
    with Fleet(args, lbs, balance, max_nodes=nodes) as fleet:
        fleet.add_node()

        async def step(connected: Callable[[], int]) -> None:
            for n in range(2, nodes + 1):
                shed0 = sum(fleet.metric("ocpp_router_rebalance_shed_total"))
                t0 = time.monotonic()
                fleet.add_node()
                while True:
                    counts = await asyncio.to_thread(fleet.counts)
                    mean = chargers / n
                    if (sum(counts) == chargers and connected() == chargers
                            and all(c <= (1 + tolerance) * mean + 1 for c in counts)):
                        break
                    if time.monotonic() - t0 > 900:
                        raise ServiceError(f"not balanced after 900 s: {counts}")
                    await asyncio.sleep(0.5)
                took = time.monotonic() - t0
                shed = sum(fleet.metric("ocpp_router_rebalance_shed_total")) - shed0
                steps.append({"nodes": f"{n - 1}->{n}", "seconds_to_balance": round(took, 1),
                              "counts": counts, "shed": int(shed),
                              "shed_per_s": round(shed / took, 1),
                              "net_moved": int(counts[-1]),
                              "net_moved_per_s": round(counts[-1] / took, 1)})
                print(json.dumps(steps[-1]), file=sys.stderr, flush=True)
                await asyncio.sleep(3)

        results = asyncio.run(_all_held(_loads(fleet, chargers, "SO"), step))
    # Over all steps: each step is its own shedding episode, so a charger may
    # move once per step (never twice within one: tests/fleet/test_rebalance.py).
    twice = sum(r["counters"]["sent_away_twice"] for r in results)
    return {"scenario": "scaleout", "chargers": chargers, "balance": balance,
            "rebalance_rate": rate, "tolerance": tolerance, "steps": steps,
            "chargers_moved_in_more_than_one_step": twice}


def storm(chargers: int, admission: bool, workers: int) -> dict[str, Any]:
    if admission:
        args = ["--max-handshakes", "200", "--max-handshake-rate", "1000",
                "--retry-after", "1", "--retry-after-jitter", "4"]
    else:
        args = ["--max-handshakes", "100000", "--max-handshake-rate", "0"]
    args += ["--workers", str(workers), "--flap-limit", "0"]
    lbs = max(1, -(-chargers // PER_LB))
    with Fleet(args, lbs, "roundrobin") as fleet:
        fleet.add_node()
        cfgs = _loads(fleet, chargers, "ST", storm=True, storm_timeout=600, hold=1.0,
                      retry_after=admission, handshake_timeout=30)

        async def run() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(run_load(c) for c in cfgs)))

        results = asyncio.run(run())
        refused = sum(fleet.metric("ocpp_router_admission_refusals_total", status="503"))
    storms = [r.get("storm") or {} for r in results]
    # The storm resets the handshake latencies: these are the storm's (each
    # successful upgrade, not counting the 503s before it).
    hs = merge_hists(r.get("handshake_hist_us", []) for r in results)
    return {"scenario": "storm", "chargers": chargers, "admission": admission,
            "router_args": args,
            "completed": all(s.get("completed") for s in storms),
            "seconds_to_all_booted": max((s.get("seconds_to_all_booted") or 0) for s in storms),
            "rebooted": sum(s.get("rebooted", 0) for s in storms),
            "handshake_failures": sum(s.get("handshake_failures", 0) for s in storms),
            "refused_503": int(refused),
            "handshake_ms": percentiles(hs, hs[-1][0]) if hs else None,
            "failure_kinds": [r["counters"]["failure_kinds"] for r in results]}


async def _flood_case(port: int, flooding: bool, cfg: LoadConfig
                      ) -> tuple[dict[str, Any], list[int]]:
    """Run the neighbours' load, with a flooding charger beside them if asked:
    it sends StatusNotifications one after the other as fast as they are
    answered (through Redis and the backend, or refused at the edge).
    (load result, [flood CALLs sent, CALLERRORs they got])."""
    import websockets

    stop = asyncio.Event()
    sent = [0, 0]
    body = ('"StatusNotification",{"connectorId":1,"errorCode":"NoError",'
            '"status":"Available"}]')

    async def flooder() -> None:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/FLOODER",
                                      subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      max_queue=None)
        while not stop.is_set():
            sent[0] += 1
            await ws.send(f'[2,"f{sent[0]}",' + body)
            answer = await ws.recv()
            if isinstance(answer, str) and answer.startswith("[4"):
                sent[1] += 1
        await ws.close()

    task = asyncio.create_task(flooder()) if flooding else None
    try:
        return await run_load(cfg), sent
    finally:
        stop.set()
        if task is not None:
            await task


def flood(neighbours: int, rate: float, duration: float) -> list[dict[str, Any]]:
    """Neighbours' latency (open loop, the standard mix through a backend)
    with no flooder, with a flooder and the limiter on, and with a flooder and
    the limiter off (each case a fresh router process)."""
    out = []
    for case, flooding, limit in (("no flooder", False, True),
                                  ("flooder, limiter on", True, True),
                                  ("flooder, limiter off", True, False)):
        args = ["--flap-limit", "0"] + ([] if limit else ["--message-rate", "0"])
        with Fleet(args, 1, "roundrobin") as fleet:
            svc = fleet.add_node()
            cfg = LoadConfig(url=f"ws://127.0.0.1:{svc.port}/ocpp", chargers=neighbours,
                             mode="open", rate=rate, duration=duration, warmup=2.0,
                             id_prefix="NB", progress=False)
            t0 = time.monotonic()
            r, sent = asyncio.run(_flood_case(svc.port or 0, flooding, cfg))
            wall = time.monotonic() - t0
        out.append({"case": case, "neighbours": neighbours, "rate": rate,
                    "flood_sent": sent[0], "flood_limited": sent[1],
                    "flood_per_s": round(sent[0] / wall), "flood_published_per_s":
                    round((sent[0] - sent[1]) / wall),
                    "neighbour_latency_ms": r["latency_ms"],
                    "neighbour_callerrors": r["counters"]["call_errors"]})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------- #

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="scenario", required=True)
    lim = sub.add_parser("limiter")
    lim.add_argument("--rounds", type=int, default=9)
    lim.add_argument("--messages", type=int, default=300_000)
    so = sub.add_parser("scaleout")
    so.add_argument("--chargers", type=int, default=10_000)
    so.add_argument("--nodes", type=int, default=3)
    so.add_argument("--rate", type=float, default=500.0, help="--rebalance-rate per node")
    so.add_argument("--tolerance", type=float, default=0.1)
    so.add_argument("--balance", choices=("roundrobin", "leastconn"), default="roundrobin")
    fl = sub.add_parser("flood")
    fl.add_argument("--neighbours", type=int, default=500)
    fl.add_argument("--rate", type=float, default=500.0, help="neighbours' CALLs/s in total")
    fl.add_argument("--duration", type=float, default=20.0)
    st = sub.add_parser("storm")
    st.add_argument("--chargers", type=int, default=20_000)
    st.add_argument("--admission", choices=("on", "off", "both"), default="both")
    st.add_argument("--workers", type=int, default=2)
    for sp in (lim, so, fl, st):
        sp.add_argument("--out", default=str(REPO / "bench" / "results" / "fleet.json"))
    args = p.parse_args(argv)
    if args.scenario == "limiter":
        out: Any = limiter(args.rounds, args.messages)
    elif args.scenario == "flood":
        out = flood(args.neighbours, args.rate, args.duration)
    elif args.scenario == "scaleout":
        out = scaleout(args.chargers, args.nodes, args.rate, args.tolerance, args.balance)
    else:
        modes = {"on": [True], "off": [False], "both": [False, True]}[args.admission]
        out = [storm(args.chargers, m, args.workers) for m in modes]
    out = {"command": "python -m bench.fleet " + " ".join(argv or sys.argv[1:]),
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "result": out}
    text = json.dumps(out, indent=1)
    print(text)
    path = Path(args.out)
    old = json.loads(path.read_text()) if path.exists() else {}
    key = args.scenario + (f"-{args.balance}" if args.scenario == "scaleout" else "")
    old[key] = out
    path.write_text(json.dumps(old, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
