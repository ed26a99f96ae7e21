"""A backend process's Prometheus metrics (router/backend/metrics.py), scraped over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from router.backend import BackendApp, Message
from router.backend.metrics import serve_metrics
from router.embedded_redis import RedisServer, free_port
from router.streams.keys import KeySpace
from tests.backend.helpers import publish, read_out, started, stopped, wait_until_pending
from tests.conftest import timeout

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics: {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_counters_follow_what_the_consumer_did(redis: aioredis.Redis,
                                                     key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix, shards=2)
    app = BackendApp(redis, group="csms", prefix=key_prefix, shards=2, block=0.2,
                     consumer="backend-7", claim_idle=3600)

    @app.on_call("Heartbeat")
    def heartbeat(msg: Message) -> dict[str, Any]:
        return {"currentTime": "2026-12-04T12:00:00Z"}

    @app.on_call("Authorize")
    def authorize(msg: Message) -> dict[str, Any]:
        raise RuntimeError("the token service is down")

    port = free_port()
    stop_metrics = serve_metrics(app, port, "127.0.0.1")
    task = await started(app)
    try:
        for i in range(3):
            await publish(redis, keys, "call", f"CP-{i}", action="Heartbeat", payload={})
        await publish(redis, keys, "call", "CP-9", action="Authorize",
                      payload={"idTag": "04A2B3"})
        await read_out(redis, keys, count=3)
        await wait_until_pending(redis, keys.inbound_for("CP-9"), "csms", 1)
        me = frozenset({("group", "csms"), ("consumer", "backend-7")})
        want = {"handled": 3.0, "failed": 1.0, "dead_lettered": 0.0, "claimed": 0.0,
                "duplicate": 0.0}
        async with asyncio.timeout(timeout(10)):
            while True:  # the acks of the answers ride with the next write
                got = await asyncio.to_thread(scrape, port)
                outcomes = {o: got[("ocpp_backend_entries_total", me | {("outcome", o)})]
                            for o in want}
                if outcomes == want:
                    break
                await asyncio.sleep(0.05)
        # The failed entry is pending in Redis (claimed after claim_idle), not
        # held by this process any more.
        assert got[("ocpp_backend_in_flight", me)] == 0.0
        assert got[("ocpp_backend_max_in_flight", me)] == app.max_in_flight
        assert got[("ocpp_backend_async_handlers", me)] == 0.0
    finally:
        await stopped(app, task)
        stop_metrics()
    with pytest.raises(OSError):  # closed: nothing answers any more
        await asyncio.to_thread(scrape, port)


async def test_reference_csms_serves_metrics_and_refuses_a_taken_port(
        redis_server: RedisServer, key_prefix: str) -> None:
    conn = ["--redis-url", redis_server.url, "--key-prefix", key_prefix]
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "reference-csms", *conn,
        "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--consumer", "ref-1",
        env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout(30)):
            while True:
                try:
                    got = await asyncio.to_thread(scrape, port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        me = frozenset({("group", "reference-csms"), ("consumer", "ref-1")})
        assert got[("ocpp_backend_entries_total", me | {("outcome", "handled")})] == 0.0

        # A second process on the same port: one line, usage exit status.
        with socket.create_server(("127.0.0.1", 0)) as taken:
            busy = taken.getsockname()[1]
            other = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router.cli.main", "reference-csms", *conn,
                "--metrics-port", str(busy), "--metrics-addr", "127.0.0.1",
                env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(other.communicate(), timeout(30))
        assert other.returncode == 2, err
        assert len(err.decode().strip().splitlines()) == 1 and f"{busy}".encode() in err
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout(30))
    assert proc.returncode == 0, err
