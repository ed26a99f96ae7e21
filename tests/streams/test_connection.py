"""RedisConnection: URL handling, commands, pipelines, lifecycle, against a real redis-server."""

from __future__ import annotations

import pytest

from router.embedded_redis import RedisServer
from router.streams import (
    ConnectionLostError,
    NotConnectedError,
    RedisConnection,
    RedisConnectionError,
    RedisReplyError,
    open_connection,
    parse_redis_url,
)
from router.streams.connection import Replies
from tests.streams.helpers import client, until


def test_address_parsing() -> None:
    a = parse_redis_url("redis://user:p%40ss@redis.example:6380/4")
    assert (a.host, a.port, a.db, a.username, a.password, a.tls) == (
        "redis.example", 6380, 4, "user", "p@ss", None)
    b = parse_redis_url("rediss://:secret@h")
    assert (b.host, b.port, b.db, b.username, b.password) == ("h", 6379, 0, None, "secret")
    assert b.tls is not None
    c = parse_redis_url("unix:///run/redis.sock?db=2")
    assert (c.unix_path, c.db, c.addresses) == ("/run/redis.sock", 2, ())
    assert "secret" not in repr(b) and "secret" not in str(b)


@pytest.mark.parametrize("url", ["http://h", "redis://h/x", "unix://", "tcp://h:1"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)


async def test_select_db_from_url(redis_server: RedisServer) -> None:
    conn = await open_connection(redis_server.url[:-1] + "3", name="t-select")
    try:
        assert await conn.command("SET", "k", "in-db-3") == b"OK"
        assert await conn.command("CLIENT", "GETNAME") == b"t-select"
    finally:
        conn.close()
        await conn.wait_closed()
    async with client(redis_server.url[:-1] + "3") as r3, client(redis_server.url) as r0:
        assert await r3.get("k") == b"in-db-3"
        assert await r0.get("k") is None


async def test_client_name_is_made_acceptable(redis_session: RedisServer) -> None:
    conn = await open_connection(redis_session.url, name="ocpp-router:node a/ü\n")
    try:
        assert await conn.command("CLIENT", "GETNAME") == b"ocpp-router:node_a/__"
    finally:
        conn.close()
        await conn.wait_closed()


async def test_acl_user_without_client_command(redis_server: RedisServer,
                                                key_prefix: str) -> None:
    """A locked-down ACL user (no CLIENT) can still publish: the name is optional."""
    async with client(redis_server.url) as r:
        await r.execute_command("ACL", "SETUSER", "router", "on", ">s3cret", "~*",
                                "+@all", "-client")
    url = f"redis://router:s3cret@127.0.0.1:{redis_server.port}/0"
    conn = await open_connection(url, name="ocpp-router:n1")
    try:
        assert await conn.command("ACL", "WHOAMI") == b"router"
        with pytest.raises(RedisReplyError, match="NOPERM"):
            await conn.command("CLIENT", "GETNAME")
    finally:
        conn.close()
        await conn.wait_closed()


async def test_auth_failure_is_a_connection_error(redis_session: RedisServer) -> None:
    with pytest.raises(RedisConnectionError, match="handshake"):
        await open_connection(f"redis://:wrong@127.0.0.1:{redis_session.port}/0")


async def test_refused(port: int) -> None:
    with pytest.raises(RedisConnectionError):
        await open_connection(f"redis://127.0.0.1:{port}/0", timeout=2)


async def test_commands_pipeline_and_errors(redis_session: RedisServer, key_prefix: str) -> None:
    conn = await open_connection(redis_session.url)
    try:
        key = f"{key_prefix}:h"
        assert await conn.command("HSET", key, "a", 1, "b", "ü") == 2
        assert await conn.command("HGET", key, "b") == "ü".encode()
        assert await conn.command("GET", f"{key_prefix}:nope") is None
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await conn.command("GET", key)
        with pytest.raises(RedisReplyError, match="unknown command"):
            await conn.command("NOSUCHCOMMAND")
        replies = await conn.pipeline([("INCR", f"{key_prefix}:n"), ("LPUSH", key, "x"),
                                       ("INCR", f"{key_prefix}:n")])
        assert replies[0] == 1 and replies[2] == 2
        assert isinstance(replies[1], RedisReplyError)
        assert await conn.pipeline([]) == []
        assert conn.in_flight == 0
    finally:
        conn.close()
        await conn.wait_closed()


async def test_callback_never_synchronous_and_close_fails_waiters(
        redis_session: RedisServer) -> None:
    conn = await open_connection(redis_session.url)
    results: list[Replies] = []
    conn.send_raw(b"*3\r\n$5\r\nBLPOP\r\n$9\r\nnever-set\r\n$1\r\n0\r\n", 1, results.append)
    assert results == []
    assert conn.in_flight == 1
    conn.close()
    await conn.wait_closed()
    assert len(results) == 1 and isinstance(results[0], ConnectionLostError)
    assert not conn.connected
    with pytest.raises(NotConnectedError):
        conn.send_raw(b"*1\r\n$4\r\nPING\r\n", 1, results.append)
    with pytest.raises(RuntimeError):
        await conn.connect(redis_session.url)


async def test_server_side_kill_calls_on_lost(redis_session: RedisServer) -> None:
    reasons: list[BaseException] = []
    conn = RedisConnection(on_lost=reasons.append)
    await conn.connect(redis_session.url, name="t-victim")
    async with client(redis_session.url) as r:
        await r.client_kill_filter(_id=await conn.command("CLIENT", "ID"))
    await until(lambda: bool(reasons), what="on_lost")
    assert isinstance(reasons[0], ConnectionLostError)
    assert not conn.connected
    await conn.wait_closed()
