"""Publisher against a real redis-server: batching, per-entry errors, backpressure."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from router.embedded_redis import RedisServer
from router.streams import (
    KeySpace,
    NotConnectedError,
    Publisher,
    PublishOverloadError,
    RedisReplyError,
    StreamsError,
)
from tests.streams.helpers import client, until


class Outcomes:
    """Collects on_done / on_error per entry tag."""

    def __init__(self) -> None:
        self.done: dict[int, bytes] = {}
        self.errors: dict[int, StreamsError] = {}

    def ok(self, tag: int):  # type: ignore[no-untyped-def]
        return lambda entry_id: self.done.__setitem__(tag, entry_id)

    def err(self, tag: int):  # type: ignore[no-untyped-def]
        return lambda exc: self.errors.__setitem__(tag, exc)

    def finished(self, n: int) -> bool:
        return len(self.done) + len(self.errors) == n


async def test_one_iteration_is_one_write(redis_session: RedisServer, key_prefix: str) -> None:
    ks = KeySpace(key_prefix, shards=4)
    pub = Publisher(redis_session.url, keys=ks)
    await pub.start()
    try:
        out = Outcomes()
        n = 500
        for i in range(n):
            cs = f"CP-{i % 37}"
            pub.publish_inbound(cs, "call", "ocpp1.6", "node-1", f"conn-{i}", 1_700_000_000_000 + i,
                                str(i), "Heartbeat", b"{}", on_done=out.ok(i),
                                on_error=out.err(i))
        assert pub.pending == n
        assert pub.stats.batches == 0  # nothing written from inside publish_inbound
        await pub.wait_flushed()
        assert pub.stats.batches == 1
        assert pub.stats.entries == n
        assert out.errors == {}
        assert len(out.done) == n
        assert pub.stats.recent[-1][0] == n
        async with client(redis_session.url) as r:
            lengths = [await r.xlen(k) for k in ks.all_inbound()]
            assert sum(lengths) == n
            # Per-charger order is kept inside its shard.
            entries = await r.xrange(ks.inbound_for("CP-5"))
        ids = [int(f[b"id"]) for _, f in entries if f[b"cs"] == b"CP-5"]
        assert ids == sorted(ids) and len(ids) == len(range(5, n, 37))
        # on_done got the ids Redis assigned.
        assert {e[0] for e in entries} <= set(out.done.values())
    finally:
        await pub.close()


async def test_batches_follow_iterations(redis_session: RedisServer, key_prefix: str) -> None:
    pub = Publisher(redis_session.url, keys=KeySpace(key_prefix))
    await pub.start()
    try:
        for batch in range(3):
            for i in range(10):
                pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, f"{batch}-{i}",
                                    "Heartbeat", b"{}")
            await pub.wait_flushed()
        assert pub.stats.batches == 3
        assert [size for size, _ in pub.stats.recent] == [10, 10, 10]
    finally:
        await pub.close()


async def test_one_batch_in_flight(redis_server: RedisServer, key_prefix: str) -> None:
    """Entries appended while a batch awaits its replies leave together, in one
    write, as soon as those replies are in (adaptive batching)."""
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    pub = Publisher(redis_server.url, keys=KeySpace(key_prefix), timeout=30)
    await pub.start()
    out = Outcomes()
    try:
        os.kill(pid, signal.SIGSTOP)        # the first batch's replies cannot come
        try:
            pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, "0", "Heartbeat", b"{}",
                                on_done=out.ok(0))
            await asyncio.sleep(0.05)
            assert pub.stats.batches == 1           # written, unanswered
            for i in range(1, 4):
                for j in range(5):
                    tag = 5 * i + j
                    pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(tag),
                                        "Heartbeat", b"{}", on_done=out.ok(tag))
                await asyncio.sleep(0.02)           # more iterations go by
            assert pub.stats.batches == 1 and pub.pending == 16
        finally:
            os.kill(pid, signal.SIGCONT)
        await pub.wait_flushed()
        assert pub.stats.batches == 2
        assert [size for size, _ in pub.stats.recent] == [1, 15]
        assert len(out.done) == 16
        async with client(redis_server.url) as r:
            ids = [f[b"id"] for _, f in await r.xrange(KeySpace(key_prefix).inbound_for("CP-1"))]
        assert ids == [str(t).encode() for t in [0, *range(5, 20)]]   # order kept
    finally:
        await pub.close()


async def test_error_reply_fails_only_that_entry(redis_session: RedisServer,
                                                 key_prefix: str) -> None:
    ks = KeySpace(key_prefix)
    wrong = f"{key_prefix}:not-a-stream".encode()
    async with client(redis_session.url) as r:
        await r.set(wrong, b"string value")
    pub = Publisher(redis_session.url, keys=ks)
    await pub.start()
    try:
        out = Outcomes()
        pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, "a", "Heartbeat", b"{}",
                            on_done=out.ok(0), on_error=out.err(0))
        pub.xadd(wrong, [b"kind", b"failed"], 100, on_done=out.ok(1), on_error=out.err(1))
        pub.xadd(f"{key_prefix}:reply".encode(), [b"kind", b"result"], 10_000,
                 on_done=out.ok(2), on_error=out.err(2))
        await pub.wait_flushed()
        assert set(out.done) == {0, 2}
        assert set(out.errors) == {1}
        assert isinstance(out.errors[1], RedisReplyError)
        assert "WRONGTYPE" in str(out.errors[1])
        assert pub.stats.batches == 1
        assert pub.stats.reply_errors == 1
        assert pub.connected
    finally:
        await pub.close()


async def test_backpressure_pause_resume_and_hard_limit(redis_session: RedisServer,
                                                         key_prefix: str) -> None:
    events: list[str] = []
    pub = Publisher(redis_session.url, keys=KeySpace(key_prefix), max_pending=10,
                    on_pause=lambda: events.append("pause"),
                    on_resume=lambda: events.append("resume"))
    await pub.start()
    try:
        out = Outcomes()
        for i in range(25):
            pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(i), "Heartbeat",
                                b"{}", on_done=out.ok(i), on_error=out.err(i))
            if i == 8:
                assert events == []
            if i == 9:
                assert events == ["pause"] and pub.paused  # synchronously at the limit
        assert pub.pending == 20  # twice the limit: the rest were refused
        await pub.wait_flushed()
        await until(lambda: out.finished(25), what="all outcomes")
        assert events == ["pause", "resume"]
        assert not pub.paused
        assert set(out.done) == set(range(20))
        assert set(out.errors) == set(range(20, 25))
        assert all(isinstance(e, PublishOverloadError) for e in out.errors.values())
    finally:
        await pub.close()


async def test_byte_limit_pauses(redis_session: RedisServer, key_prefix: str) -> None:
    events: list[str] = []
    pub = Publisher(redis_session.url, keys=KeySpace(key_prefix), max_pending_bytes=10_000,
                    on_pause=lambda: events.append("pause"),
                    on_resume=lambda: events.append("resume"))
    await pub.start()
    try:
        pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, "1", "DataTransfer",
                            b'"' + b"x" * 20_000 + b'"')
        assert events == ["pause"]
        await pub.wait_flushed()
        assert events == ["pause", "resume"]
    finally:
        await pub.close()


async def test_byte_hard_limit_refuses(redis_session: RedisServer, key_prefix: str) -> None:
    pub = Publisher(redis_session.url, keys=KeySpace(key_prefix), max_pending_bytes=10_000)
    await pub.start()
    try:
        out = Outcomes()
        big = b'"' + b"x" * 12_000 + b'"'
        for i in range(3):
            pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, str(i), "DataTransfer",
                                big, on_done=out.ok(i), on_error=out.err(i))
        # The first two fit under twice the byte limit; the third is refused.
        assert pub.pending == 2
        await pub.wait_flushed()
        await until(lambda: out.finished(3))
        assert set(out.done) == {0, 1}
        assert isinstance(out.errors[2], PublishOverloadError)
    finally:
        await pub.close()


async def test_not_started_and_closed(redis_session: RedisServer, key_prefix: str) -> None:
    pub = Publisher(redis_session.url, keys=KeySpace(key_prefix))
    with pytest.raises(RuntimeError):
        pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1)
    await pub.start()
    await pub.close()
    errors: list[StreamsError] = []
    pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, on_error=errors.append)
    assert errors == []  # never called from inside publish_inbound
    await until(lambda: bool(errors), what="on_error after close")
    assert isinstance(errors[0], NotConnectedError)


async def test_bad_field_raises_and_queues_nothing(redis_session: RedisServer,
                                                   key_prefix: str) -> None:
    pub = Publisher(redis_session.url, keys=KeySpace(key_prefix))
    await pub.start()
    try:
        with pytest.raises(TypeError):
            pub.publish_inbound("CP-1", "call", "ocpp1.6", "n", "c", 1, payload=1.5)  # type: ignore[arg-type]
        assert pub.pending == 0
        await asyncio.sleep(0)
        assert pub.stats.batches == 0
    finally:
        await pub.close()


async def test_start_fails_without_redis(key_prefix: str, port: int) -> None:
    pub = Publisher(f"redis://127.0.0.1:{port}/0", keys=KeySpace(key_prefix),
                    connect_timeout=1.0)
    with pytest.raises(StreamsError):
        await pub.start()
    await pub.close()


def test_bad_url() -> None:
    with pytest.raises(ValueError):
        Publisher("http://localhost", keys=KeySpace())
