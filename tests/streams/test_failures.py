"""Redis stopped, restarted, frozen: no false success, prompt failure, recovery
without recreating the Publisher / OutboundReader."""

from __future__ import annotations

import asyncio
import os
import signal

from router.embedded_redis import RedisServer
from router.streams import (
    ConnectionLostError,
    KeySpace,
    NotConnectedError,
    OutboundReader,
    Publisher,
    RedisReplyError,
    RedisTimeoutError,
    StreamsError,
)
from router.streams.reader import Entries
from tests.conftest import timeout
from tests.streams.helpers import client, until, until_async
from tests.streams.test_publisher import Outcomes


def publish(pub: Publisher, out: Outcomes, tag: int) -> None:
    pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(tag), "Heartbeat", b"{}",
                        on_done=out.ok(tag), on_error=out.err(tag))


async def test_publisher_holds_entries_while_redis_restarts(redis_server: RedisServer) -> None:
    ks = KeySpace("ocpp")
    pub = Publisher(redis_server.url, keys=ks, timeout=timeout(20), backoff_max=0.2)
    await pub.start()
    try:
        out = Outcomes()
        publish(pub, out, 0)
        await pub.wait_flushed()
        assert set(out.done) == {0}
        redis_server.stop()  # blocks until redis-server exited
        await until(lambda: not pub.connected, what="publisher to notice")

        # No Redis: entries are held (pending, not failed, not acknowledged)...
        for tag in range(1, 21):
            publish(pub, out, tag)
        await until(lambda: pub.stats.held >= 1, what="entries to be held")
        assert out.finished(1) and not out.errors
        assert pub.pending == 20

        # ... and published, in order, once Redis is back within the timeout.
        redis_server.start()
        await until(lambda: out.finished(21), seconds=20, what="held entries to be published")
        assert not out.errors
        async with client(redis_server.url) as r:
            entries = await r.xrange(ks.inbound(0))
        # The restart lost entry 0 (no persistence); the held ones are all there.
        assert [int(f[b"id"]) for _, f in entries] == list(range(1, 21))
        assert pub.stats.connects == 2 and pub.stats.resent >= 1
        assert pub.pending == 0
    finally:
        await pub.close()


async def test_held_entries_fail_once_the_publish_timeout_is_spent(
        redis_server: RedisServer) -> None:
    ks = KeySpace("ocpp")
    pub = Publisher(redis_server.url, keys=ks, timeout=0.5 * timeout(1), backoff_max=0.1)
    await pub.start()
    try:
        out = Outcomes()
        for tag in range(20):
            publish(pub, out, tag)
        redis_server.stop()
        # In flight when Redis went away, or held after: all fail, none succeeds.
        await until(lambda: out.finished(20), what="entries to fail")
        assert set(out.errors) == set(range(20)) or set(out.done) | set(out.errors) == set(
            range(20))
        assert all(isinstance(e, ConnectionLostError | NotConnectedError)
                   for e in out.errors.values())
        await until(lambda: not pub.connected, what="publisher to notice")
        publish(pub, out, 20)
        await until(lambda: 20 in out.errors, seconds=5, what="the held entry to expire")
        assert isinstance(out.errors[20], NotConnectedError)
        assert pub.pending == 0 and pub.stats.expired >= 1

        redis_server.start()
        await until(lambda: pub.connected, what="reconnect")
        publish(pub, out, 21)
        await pub.wait_flushed()
        assert 21 in out.done
    finally:
        await pub.close()


async def test_frozen_redis_times_out_and_recovers(redis_server: RedisServer) -> None:
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    pub = Publisher(redis_server.url, keys=KeySpace("ocpp"), timeout=0.3 * timeout(1),
                    connect_timeout=0.3 * timeout(1), backoff_max=0.1)
    await pub.start()
    out = Outcomes()
    os.kill(pid, signal.SIGSTOP)
    try:
        for tag in range(5):
            publish(pub, out, tag)
        await until(lambda: out.finished(5), what="timeouts")
        assert all(isinstance(e, RedisTimeoutError) for e in out.errors.values())
        assert pub.stats.timeouts == 1
        # Still frozen: reconnects time out, publishes keep failing fast.
        publish(pub, out, 5)
        await until(lambda: out.finished(6))
        assert isinstance(out.errors[5], StreamsError)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        await until(lambda: pub.connected, what="reconnect after SIGCONT")
        publish(pub, out, 6)
        await pub.wait_flushed()
        assert 6 in out.done
    finally:
        await pub.close()


async def test_reader_continues_after_redis_restart(redis_server: RedisServer) -> None:
    key = KeySpace("ocpp").out("node-1")
    got: list[bytes] = []

    def sink(entries: Entries) -> None:
        got.extend(f[b"n"] for _, f in entries)

    reader = OutboundReader(redis_server.url, key, sink, block_ms=100, backoff_max=0.2)
    await reader.start()
    try:
        async with client(redis_server.url) as r:
            await r.xadd(key, {b"n": b"1"})
            await until(lambda: got == [b"1"])
        redis_server.stop()
        await until(lambda: not reader.connected, what="reader to notice")
        redis_server.start()
        await until(lambda: reader.connected, what="reader reconnect")
        async with client(redis_server.url) as r:
            await r.xadd(key, {b"n": b"2"})
            await r.xadd(key, {b"n": b"3"})
            await until(lambda: got == [b"1", b"2", b"3"], what="entries after restart")
        assert reader.stats.connects == 2
    finally:
        await reader.stop()


async def test_reader_loses_nothing_across_its_own_reconnect(redis_session: RedisServer,
                                                             key_prefix: str) -> None:
    key = KeySpace(key_prefix).out("node-1")
    name = f"{key_prefix}-reader"
    got: list[bytes] = []

    def sink(entries: Entries) -> None:
        got.extend(f[b"n"] for _, f in entries)

    reader = OutboundReader(redis_session.url, key, sink, block_ms=5000, backoff_max=0.2,
                            client_name=name)
    await reader.start()
    try:
        async with client(redis_session.url) as r:
            await r.xadd(key, {b"n": b"0"})
            await until(lambda: got == [b"0"])
            victims: list[str] = []

            async def reader_client() -> bool:
                victims[:] = [c["id"] for c in await r.client_list() if c["name"] == name]
                return len(victims) == 1

            for rnd in range(3):
                # The previous round's reconnect may still be under way.
                await until_async(reader_client, what="the reader's connection")
                await r.client_kill_filter(_id=victims[0])
                # Written while the reader's connection is gone or being re-made.
                for i in range(10):
                    await r.xadd(key, {b"n": b"%d-%d" % (rnd, i)})
            want = [b"0"] + [b"%d-%d" % (rnd, i) for rnd in range(3) for i in range(10)]
            await until(lambda: len(got) >= len(want), what="all entries")
            assert got == want
            assert reader.stats.connects == 4
    finally:
        await reader.stop()


async def test_connection_killed_under_load_no_false_success(redis_session: RedisServer,
                                                             key_prefix: str) -> None:
    """Publish continuously while the connection is killed again and again:
    every entry gets exactly one outcome, a kill costs no entry (the batch in
    flight is written again on the next connection), and every entry reported
    done is in the stream with the id on_done reported (a batch written twice
    leaves an earlier copy: at least once, consumers drop it by (cs, conn, id))."""
    ks = KeySpace(key_prefix)
    name = f"{key_prefix}-pub"
    pub = Publisher(redis_session.url, keys=ks, backoff_min=0.01, backoff_max=0.05,
                    client_name=name)
    await pub.start()
    outcomes: dict[int, list[object]] = {}
    tag = 0

    def record(t: int):  # type: ignore[no-untyped-def]
        return lambda result: outcomes.setdefault(t, []).append(result)

    async with client(redis_session.url) as r:
        try:
            kills = 0
            while kills < 5:
                for _ in range(50):
                    cb = record(tag)
                    pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(tag),
                                        "Heartbeat", b"{}", on_done=cb, on_error=cb)
                    tag += 1
                await asyncio.sleep(0)
                if tag % 1000 == 0:
                    ids = [c["id"] for c in await r.client_list() if c["name"] == name]
                    if ids:  # else it is reconnecting right now
                        kills += bool(await r.client_kill_filter(_id=ids[0]))
            await pub.wait_flushed()
            await until(lambda: len(outcomes) == tag, what="every outcome")
            entries = await r.xrange(ks.inbound(0))
        finally:
            await pub.close()
    assert all(len(v) == 1 for v in outcomes.values())
    stored = {f[b"id"]: entry_id for entry_id, f in entries}
    done = {t: v[0] for t, v in outcomes.items() if isinstance(v[0], bytes)}
    failed = [v[0] for v in outcomes.values() if not isinstance(v[0], bytes)]
    assert failed == []
    assert len(done) == tag
    for t, entry_id in done.items():
        assert stored[str(t).encode()] == entry_id
    assert pub.stats.connects >= kills  # (the reconnect after the last kill may be pending)
    assert pub.stats.resent >= 1


async def test_reader_reads_a_rebuilt_stream_from_its_start(redis_server: RedisServer) -> None:
    """Redis restarted empty, and the new entries have ids below the last one
    delivered (a clock behind, a failover): they are still delivered."""
    key = KeySpace("ocpp").out("node-1")
    got: list[bytes] = []

    def sink(entries: Entries) -> None:
        got.extend(f[b"n"] for _, f in entries)

    reader = OutboundReader(redis_server.url, key, sink, block_ms=100, backoff_max=0.2)
    await reader.start()
    try:
        async with client(redis_server.url) as r:
            await r.xadd(key, {b"n": b"1"})
            await until(lambda: got == [b"1"])
        redis_server.stop()
        await until(lambda: not reader.connected, what="reader to notice")
        redis_server.start()
        async with client(redis_server.url) as r:
            await r.xadd(key, {b"n": b"2"}, id=b"5-0")  # far below the last id
            await until(lambda: got == [b"1", b"2"], what="the low-id entry")
            await r.xadd(key, {b"n": b"3"})
            await until(lambda: got == [b"1", b"2", b"3"])
    finally:
        await reader.stop()


async def test_redis_out_of_memory_fails_each_entry_then_recovers(
        redis_server: RedisServer) -> None:
    """maxmemory reached with noeviction: every XADD gets -OOM; the connection stays."""
    pub = Publisher(redis_server.url, keys=KeySpace("ocpp"))
    await pub.start()
    try:
        async with client(redis_server.url) as r:
            await r.config_set("maxmemory-policy", "noeviction")
            await r.config_set("maxmemory", 1)
            out = Outcomes()
            for tag in range(5):
                publish(pub, out, tag)
            await pub.wait_flushed()
            assert set(out.errors) == set(range(5))
            assert all(isinstance(e, RedisReplyError) and "OOM" in str(e)
                       for e in out.errors.values())
            assert pub.connected and pub.stats.connects == 1
            await r.config_set("maxmemory", 0)
            publish(pub, out, 5)
            await pub.wait_flushed()
            assert 5 in out.done
    finally:
        await pub.close()


async def test_reconnects_back_off_when_redis_refuses_clients(redis_server: RedisServer) -> None:
    """maxclients reached: Redis accepts the TCP connection, answers an error and
    closes it. The publisher and the reader must back off, not spin."""
    key = KeySpace("ocpp").out("node-1")
    reader = OutboundReader(redis_server.url, key, lambda _e: None, block_ms=100,
                            client_name="t-reader", backoff_max=2.0)
    await reader.start()
    async with client(redis_server.url) as r:
        # Clients already connected stay (this one and the reader); new ones are refused.
        await r.config_set("maxclients", 1)
        pub = Publisher(redis_server.url, keys=KeySpace("ocpp"), backoff_max=2.0)
        await pub.start(wait=False)
        try:
            victim = [c["id"] for c in await r.client_list() if c["name"] == "t-reader"]
            errors_before = reader.stats.errors
            await r.client_kill_filter(_id=victim[0])   # and it cannot come back
            await asyncio.sleep(0.5)
            # Exponential backoff from 50 ms: a handful of attempts, not thousands.
            assert 1 <= pub.stats.connect_failures <= 10
            assert pub.stats.connects == 0  # the refusal fails the handshake
            assert 1 <= reader.stats.errors - errors_before <= 10
            assert not pub.connected and not reader.connected
            await r.config_set("maxclients", 100)
            await until(lambda: pub.connected and reader.connected, seconds=10,
                        what="both back after the limit is lifted")
        finally:
            await pub.close()
            await reader.stop()
