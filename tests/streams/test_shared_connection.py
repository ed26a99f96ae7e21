"""SharedConnection: one pipelined connection for bursty light traffic,
reopened after Redis went away."""

from __future__ import annotations

import asyncio

import pytest

from router.embedded_redis import RedisServer
from router.streams.connection import SharedConnection
from router.streams.errors import StreamsError


async def test_burst_of_commands_on_one_connection(redis_server: RedisServer) -> None:
    shared = SharedConnection(redis_server.url, name="test")
    try:
        replies = await asyncio.gather(*(shared.command(b"INCR", b"n") for _ in range(2000)))
        assert sorted(replies) == list(range(1, 2001))
        clients = await shared.command(b"CLIENT", b"LIST")
        assert clients.count(b"name=test") == 1
    finally:
        await shared.close()


async def test_reopens_after_redis_restart() -> None:
    server = RedisServer().start()
    shared = SharedConnection(server.url)
    try:
        assert await shared.command(b"PING") in (b"PONG", "PONG")
        server.stop()
        with pytest.raises(StreamsError):
            await shared.command(b"PING", timeout=2)
        with pytest.raises(StreamsError):      # down: every call fails fast
            await shared.command(b"PING", timeout=2)
        server = RedisServer(port=server.port).start()
        assert await shared.command(b"PING") in (b"PONG", "PONG")
        assert shared.connected
    finally:
        await shared.close()
        server.stop()


def test_malformed_url_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        SharedConnection("http://nope")
