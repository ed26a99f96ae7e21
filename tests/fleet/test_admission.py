"""Admission control (issue 13, parts 2 and 3): storms get 503 with a spread
Retry-After while /readyz stays true; a flapping identity gets 429, counted
across nodes, while its neighbours are unaffected.

Real router processes, haproxy, redis-server and chargers (bench.loadgen's
picows chargers, websockets clients). The make-test storm is 2,000 chargers;
the 20,000-charger figures come from ``make bench-fleet``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

import websockets

from bench.loadgen import LoadConfig, run_load
from bench.services import HAProxy
from router.embedded_redis import RedisServer
from tests.conftest import RouterNode, timeout
from tests.fleet.helpers import responder, wait_until


def _upgrade(port: int, identity: str) -> bytes:
    req = (f"GET /ocpp/{identity} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout(5)) as s:
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


class ReadyWatch:
    """Polls /readyz in a thread for as long as it runs; every status seen."""

    def __init__(self, node: RouterNode) -> None:
        self.node = node
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.statuses.append(self.node.admin("/readyz")[0])
            time.sleep(0.1)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_503_retry_after_is_jittered_and_readyz_stays_true(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--max-handshakes", "1", "--retry-after", "2",
                          "--retry-after-jitter", "8")
    # Two connections that never send their request hold two handshakes open.
    holders = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
    try:
        deadline = time.monotonic() + timeout(5)
        while node.metric("ocpp_router_handshakes_in_progress") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        values = []
        for i in range(40):
            response = _upgrade(node.port, f"CP-J{i}")
            assert response.startswith(b"HTTP/1.1 503 ")
            m = re.search(rb"\r\nRetry-After: (\d+)\r\n", response)
            assert m is not None
            values.append(int(m.group(1)))
        assert all(2 <= v <= 10 for v in values)
        assert len(set(values)) >= 4                      # spread, not one instant
        assert node.admin("/readyz")[0] == 200            # refusing a storm is healthy
    finally:
        for s in holders:
            s.close()
    assert node.metric("ocpp_router_admission_refusals_total", status="503",
                       reason="overloaded") == 40


async def test_reconnect_storm_through_haproxy_gets_503s_and_everyone_boots(
        router_factory: Callable[..., RouterNode], redis_server: RedisServer,
        key_prefix: str) -> None:
    chargers = 2000
    node = router_factory("--max-handshakes", "20", "--max-handshake-rate", "500",
                          "--retry-after", "1", "--retry-after-jitter", "2")
    with responder(redis_server.url, key_prefix), \
            HAProxy([("127.0.0.1", node.port)]) as lb, ReadyWatch(node) as ready:
        result = await run_load(LoadConfig(
            url=f"ws://127.0.0.1:{lb.listen_port}/ocpp", chargers=chargers, mode="idle",
            id_prefix="ST", hold=0.5, storm=True, storm_timeout=timeout(120), retry_after=True,
            connect_timeout=timeout(120), progress=False))
    storm = result["storm"]
    assert storm["completed"] and storm["rebooted"] == chargers
    refused = node.metric("ocpp_router_admission_refusals_total", status="503")
    assert refused > 0                                   # admission control did act …
    assert result["counters"]["failure_kinds"].get("http_503", 0) > 0
    assert set(result["counters"]["failure_kinds"]) <= {"http_503"}   # … and nothing else failed
    assert ready.statuses and set(ready.statuses) == {200}            # never unready for it


async def test_a_flapping_charger_gets_429_across_nodes_its_neighbours_do_not(
        router_factory: Callable[..., RouterNode], redis_server: RedisServer,
        key_prefix: str) -> None:
    nodes = [router_factory("--flap-window", "60", "--flap-cooldown", "30")
             for _ in range(2)]
    statuses: list[int] = []
    retry_after: list[int] = []

    async def flap(counters: Callable[[], dict[str, int]]) -> None:
        # 30 reconnects in a few seconds: well over 100 a minute.
        for _ in range(30):
            try:
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{lb.listen_port}/ocpp/FLAPPY",
                    subprotocols=["ocpp1.6"], open_timeout=timeout(5))  # type: ignore[list-item]
            except websockets.InvalidStatus as exc:
                statuses.append(exc.response.status_code)
                retry_after.append(int(exc.response.headers["Retry-After"]))
                continue
            statuses.append(101)
            await ws.close()
        assert counters()["connected"] == 1000

    with responder(redis_server.url, key_prefix), \
            HAProxy([("127.0.0.1", n.port) for n in nodes]) as lb:
        result = await run_load(LoadConfig(
            url=f"ws://127.0.0.1:{lb.listen_port}/ocpp", chargers=1000, mode="idle",
            id_prefix="NB", connect_timeout=timeout(120), progress=False), hold=flap)
    # The default --flap-limit (10) counts across both nodes: the 11th
    # connection is refused although each node saw only about half of them.
    assert statuses == [101] * 10 + [429] * 20
    assert all(0 < r <= 30 for r in retry_after)
    assert all(n.metric("ocpp_router_admission_refusals_total", status="429",
                        reason="flapping") > 0 for n in nodes)
    c = result["counters"]
    assert c["booted"] == 1000 and c["handshake_failures"] == 0 and c["disconnects"] == 0


async def test_flap_counting_survives_without_redis_answers(
        router_factory: Callable[..., RouterNode]) -> None:
    # Flap control protects, it does not gate: with Redis stopped the
    # handshake still completes (after a short wait) and is not refused.
    import os
    import signal

    import redis.asyncio as aioredis

    node = router_factory()
    r = aioredis.from_url(node.redis_url)
    pid = int((await r.info("server"))["process_id"])
    await r.aclose()
    os.kill(pid, signal.SIGSTOP)
    try:
        ws = await websockets.connect(node.url("CP-NOREDIS"), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      open_timeout=timeout(5))
        await ws.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_until(lambda: node.metric("ocpp_router_redis_errors_total", op="flap_slow") >= 1,
                     5, "the slow flap check counted")
