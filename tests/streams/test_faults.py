"""Fault injection through a TCP proxy: fragmented replies, a frozen network."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from router.embedded_redis import RedisServer
from router.streams import KeySpace, Publisher, RedisTimeoutError, open_connection
from tests.conftest import timeout
from tests.streams.helpers import client, until
from tests.streams.proxy import TCPProxy
from tests.streams.test_publisher import Outcomes


@pytest.fixture
async def proxy(redis_session: RedisServer) -> AsyncIterator[TCPProxy]:
    p = await TCPProxy(redis_session.host, redis_session.port).start()
    try:
        yield p
    finally:
        await p.stop()


async def test_replies_split_byte_by_byte(proxy: TCPProxy, redis_session: RedisServer,
                                          key_prefix: str) -> None:
    proxy.mode = "bytewise"
    ks = KeySpace(key_prefix)
    pub = Publisher(proxy.url, keys=ks)
    await pub.start()
    try:
        out = Outcomes()
        for i in range(40):
            pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(i), "Heartbeat",
                                b"{}", on_done=out.ok(i), on_error=out.err(i))
        await pub.wait_flushed()
        assert out.errors == {}
        async with client(redis_session.url) as r:
            entries = await r.xrange(ks.inbound(0))
        # Each entry got the id of its own XADD, in order.
        assert [out.done[i] for i in range(40)] == [e[0] for e in entries]
        assert [e[1][b"id"] for e in entries] == [str(i).encode() for i in range(40)]
    finally:
        await pub.close()


async def test_pipeline_with_error_and_nil_replies_split(proxy: TCPProxy,
                                                         key_prefix: str) -> None:
    proxy.mode = "bytewise"
    conn = await open_connection(proxy.url)
    try:
        replies = await conn.pipeline([
            (b"SET", f"{key_prefix}:s", b"v"),
            (b"GET", f"{key_prefix}:missing"),
            (b"XADD", f"{key_prefix}:s", b"*", b"f", b"v"),
            (b"HGETALL", f"{key_prefix}:missing"),
            (b"ECHO", "ü" * 1000),
        ])
        assert replies[0] == b"OK"
        assert replies[1] is None
        assert "WRONGTYPE" in str(replies[2])
        assert replies[3] == []
        assert replies[4] == ("ü" * 1000).encode()
    finally:
        conn.close()
        await conn.wait_closed()


async def test_frozen_network_times_out_then_recovers(proxy: TCPProxy, key_prefix: str) -> None:
    pub = Publisher(proxy.url, keys=KeySpace(key_prefix), timeout=0.3 * timeout(1),
                    connect_timeout=0.3 * timeout(1), backoff_max=0.1)
    await pub.start()
    try:
        out = Outcomes()
        proxy.mode = "blackhole"
        for i in range(3):
            pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(i), "Heartbeat",
                                b"{}", on_done=out.ok(i), on_error=out.err(i))
        await until(lambda: out.finished(3), what="timeouts")
        assert all(isinstance(e, RedisTimeoutError) for e in out.errors.values())
        proxy.mode = "pass"
        await until(lambda: pub.connected and pub.stats.connects >= 2, what="reconnect")
        pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, "3", "Heartbeat", b"{}",
                            on_done=out.ok(3), on_error=out.err(3))
        await pub.wait_flushed()
        assert 3 in out.done
    finally:
        await pub.close()


async def test_close_during_handshake_closes_the_socket(proxy: TCPProxy, key_prefix: str) -> None:
    """close() cancels a reconnect stuck in the handshake; its socket must be
    closed, not left to the garbage collector."""
    proxy.mode = "blackhole"
    pub = Publisher(proxy.url, keys=KeySpace(key_prefix), connect_timeout=30)
    await pub.start(wait=False)
    await until(lambda: proxy.accepted == 1, what="the connection attempt")
    await pub.close()
    await until(lambda: proxy.open_clients == 0, what="the socket to close")
