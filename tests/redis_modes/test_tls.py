"""TLS to Redis and least-privilege ACL users: a real TLS-only redis-server with
client certificates, a real router, the reference CSMS, the SDK and the CLI,
each logged in with exactly the ACL docs/deployment.md prescribes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.exceptions import NoPermissionError

from router.streams import RedisConnectionError, open_connection, parse_redis_url
from tests.redis_modes.tls import TLSRedis, documented_users_end_to_end


@pytest.fixture
def tls_redis(key_prefix: str) -> Iterator[TLSRedis]:
    with TLSRedis(prefix=key_prefix) as server:
        yield server


async def test_router_sdk_and_cli_over_tls_with_the_documented_acls(
        tls_redis: TLSRedis, key_prefix: str) -> None:
    await documented_users_end_to_end(tls_redis.url("ocpp-router"),
                                      tls_redis.url("ocpp-backend"), key_prefix)


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
