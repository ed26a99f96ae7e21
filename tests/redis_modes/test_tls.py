"""TLS to Redis and least-privilege ACL users: a real TLS-only redis-server with
client certificates, a real router, the reference CSMS, the SDK and the CLI,
each logged in with exactly the ACL docs/deployment.md prescribes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from ocpp.v16 import call as call16
from redis.exceptions import NoPermissionError

from router.backend import Client
from router.backend.reference_csms import ReferenceCSMS
from router.streams import RedisConnectionError, open_connection, parse_redis_url
from tests.backend.test_e2e import Charger16
from tests.conftest import RouterNode, start_router, timeout
from tests.redis_modes.run_cli import cli
from tests.redis_modes.tls import TLSRedis


@pytest.fixture
def tls_redis(key_prefix: str) -> Iterator[TLSRedis]:
    with TLSRedis(prefix=key_prefix) as server:
        yield server


@pytest.fixture
async def backend(tls_redis: TLSRedis) -> AsyncIterator[aioredis.Redis]:
    client = parse_redis_url(tls_redis.url("ocpp-backend")).redis_py()
    try:
        yield client
    finally:
        await client.aclose()




async def test_router_sdk_and_cli_over_tls_with_the_documented_acls(
        tls_redis: TLSRedis, backend: aioredis.Redis, key_prefix: str) -> None:
    conn = ["--redis-url", tls_redis.url("ocpp-backend"), "--key-prefix", key_prefix]
    rc, _out, err = await cli("auth", "set", "CP-TLS", *conn, stdin=b"s3cret-passw0rd-16\n")
    assert rc == 0, err
    node: RouterNode = await asyncio.to_thread(
        start_router, tls_redis.url("ocpp-router"), key_prefix, "--auth", "basic")
    csms = ReferenceCSMS(backend, prefix=key_prefix, block=0.5)
    task = asyncio.create_task(csms.run())
    try:
        await asyncio.wait_for(csms.app.wait_ready(), timeout(10))
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
                async with Client(backend, prefix=key_prefix) as client:
                    async with asyncio.timeout(timeout(10)):
                        while await client.where("CP-TLS") is None:
                            await asyncio.sleep(0.05)
                rc, out, err = await cli("chargers", "--json", *conn)
                assert rc == 0, err
                assert [r["identity"] for r in orjson.loads(out)] == ["CP-TLS"]
                rc, out, err = await cli("call", "CP-TLS", "Reset", '{"type":"Soft"}', *conn)
                assert rc == 0, err
                assert orjson.loads(out) == {"status": "Accepted"}
                rc, out, err = await cli("tail", "--from-start", "--count", "2", *conn)
                assert rc == 0, err
                assert b"BootNotification" in out
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
        await asyncio.wait_for(task, timeout(20))
        node.stop()
    assert node.proc.returncode == 0


async def test_the_router_user_may_do_nothing_else(tls_redis: TLSRedis, key_prefix: str) -> None:
    router = parse_redis_url(tls_redis.url("ocpp-router")).redis_py()
    try:
        await router.xadd(f"{key_prefix}:in:0", {"k": "v"})
        with pytest.raises(NoPermissionError):
            await router.set("elsewhere", "1")
        with pytest.raises(NoPermissionError):
            await router.execute_command("CONFIG", "GET", "maxmemory")
        with pytest.raises(NoPermissionError):
            await router.xgroup_create(f"{key_prefix}:in:0", "g")
    finally:
        await router.aclose()


async def test_certificates_are_checked(tls_redis: TLSRedis) -> None:
    # The hot path's own connection: CA, name (also through ssl_server_name),
    # and the client certificate the server demands.
    good = await open_connection(tls_redis.url(host="localhost", extra="&ssl_server_name=redis.test"))
    assert await good.command("PING") == b"PONG"
    good.close()
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        # No ssl_ca_certs: the system trust store does not know the test CA.
        await open_connection(f"rediss://admin:x@127.0.0.1:{tls_redis.port}/0"
                              f"?ssl_certfile={tls_redis.ca.client_cert}"
                              f"&ssl_keyfile={tls_redis.ca.client_key}")
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await open_connection(tls_redis.url(extra="&ssl_server_name=other.test"))
    with pytest.raises(RedisConnectionError):
        await open_connection(tls_redis.url(client_cert=False))
    with pytest.raises(RedisConnectionError, match="WRONGPASS"):
        await open_connection(tls_redis.url("ocpp-router", "wrong"))
