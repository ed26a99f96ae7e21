"""``rediss+cluster://``: a TLS-only Redis Cluster (three masters; client
certificates required; the bus and replication over TLS too) whose only users
are the ACL users docs/deployment.md prescribes, with the rules its "Redis
Cluster" section adds. A real router, the reference CSMS on the SDK and the
CLI, each logged in as its documented user."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets
from ocpp.v16 import call as call16

from router.backend import Client
from router.backend.reference_csms import ReferenceCSMS
from router.streams import parse_redis_url
from tests.backend.test_e2e import Charger16
from tests.conftest import RouterNode, start_router, timeout
from tests.redis_modes.cluster import RedisCluster
from tests.redis_modes.run_cli import cli
from tests.redis_modes.tls import BACKEND_PASSWORD, ROUTER_PASSWORD, TestCA, documented_acl

SHARDS = 8


@pytest.fixture
def tls_cluster(key_prefix: str) -> Iterator[RedisCluster]:
    with tempfile.TemporaryDirectory(prefix="ocpp-cluster-ca-") as d:
        ca = TestCA(Path(d))
        acl = [documented_acl(user, key_prefix, cluster=True)
               for user in ("ocpp-router", "ocpp-backend")]
        with RedisCluster(masters=3, replicas=0, tls=ca, acl=acl) as cluster:
            yield cluster


async def test_router_sdk_and_cli_on_a_tls_cluster_with_the_documented_acls(
        tls_cluster: RedisCluster, key_prefix: str) -> None:
    router_url = tls_cluster.url_for("ocpp-router", ROUTER_PASSWORD)
    backend_url = tls_cluster.url_for("ocpp-backend", BACKEND_PASSWORD, seeds=2)
    conn = ["--redis-url", backend_url, "--key-prefix", key_prefix]
    rc, _out, err = await cli("auth", "set", "CP-TLS", *conn, stdin=b"s3cret-passw0rd-16\n")
    assert rc == 0, err
    node: RouterNode = await asyncio.to_thread(
        start_router, router_url, key_prefix, "--auth", "basic", "--shards", str(SHARDS))
    backend = parse_redis_url(backend_url).redis_py()
    csms = ReferenceCSMS(backend, prefix=key_prefix, shards=SHARDS, block=0.5)
    task = asyncio.create_task(csms.run())
    try:
        await asyncio.wait_for(csms.app.wait_ready(), timeout(20))
        header = {"Authorization": "Basic " + base64.b64encode(
            b"CP-TLS:s3cret-passw0rd-16").decode()}
        async with websockets.connect(node.url("CP-TLS"), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                      additional_headers=header) as ws:
            cp = Charger16("CP-TLS", ws)
            runner = asyncio.create_task(cp.start())
            try:
                boot = await asyncio.wait_for(cp.call(call16.BootNotification(
                    charge_point_vendor="ACME", charge_point_model="X1")), timeout(20))
                assert boot.status == "Accepted"
                auth = await asyncio.wait_for(cp.call(call16.Authorize(id_tag="04A2B3")),
                                              timeout(20))
                assert auth.id_tag_info["status"] == "Accepted"
                async with Client(backend, prefix=key_prefix, shards=SHARDS) as client:
                    async with asyncio.timeout(timeout(10)):
                        while await client.where("CP-TLS") is None:
                            await asyncio.sleep(0.05)
                rc, out, err = await cli("chargers", "--json", *conn)
                assert rc == 0, err
                assert [r["identity"] for r in orjson.loads(out)] == ["CP-TLS"]
                # client.call's reply stream, on whichever master its slot is.
                rc, out, err = await cli("call", "CP-TLS", "Reset", '{"type":"Soft"}', *conn)
                assert rc == 0, err
                assert orjson.loads(out) == {"status": "Accepted"}
                rc, out, err = await cli("tail", "--from-start", "--count", "3", "--shards", str(SHARDS),
                                         *conn)
                assert rc == 0, err
                assert b"BootNotification" in out and b"Authorize" in out
            finally:
                runner.cancel()
        status, _ = node.admin("/readyz")
        assert status == 200
        # Nothing the router tried was refused (a NOPERM would be counted here).
        _, metrics = node.admin("/metrics")
        errors = [line for line in metrics.splitlines()
                  if line.startswith("ocpp_router_redis_errors_total{")
                  and float(line.rsplit(" ", 1)[1]) > 0]
        assert errors == []
    finally:
        csms.stop()
        await asyncio.wait_for(task, timeout(30))
        await backend.aclose()
        node.stop()
    assert node.proc.returncode == 0
