"""BackendApp against a real redis-server, the test playing the router (docs/streams.md)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.backend import (
    BackendApp,
    FormatViolation,
    Message,
    OccurrenceConstraintViolation,
    SecurityError,
)
from router.streams.keys import KeySpace
from tests.backend.helpers import pending_count, publish, read_out, read_stream, wait_acked
from tests.conftest import timeout

GROUP = "csms"


@pytest.fixture
def keys(key_prefix: str) -> KeySpace:
    return KeySpace(prefix=key_prefix, shards=3)


async def started(app: BackendApp) -> asyncio.Task[None]:
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.wait_ready(), timeout(10))
    return task


async def stopped(app: BackendApp, task: asyncio.Task[None]) -> None:
    app.stop()
    await asyncio.wait_for(task, timeout(20))


@pytest.fixture
async def app(redis: aioredis.Redis, key_prefix: str) -> AsyncIterator[BackendApp]:
    backend = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, block=0.2)
    yield backend
    backend.stop()


async def test_call_is_answered_into_the_nodes_out_stream_then_acked(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    seen: list[Message] = []

    @app.on_call("BootNotification")
    async def boot(msg: Message) -> dict[str, Any]:
        seen.append(msg)
        return {"status": "Accepted", "currentTime": "2026-11-21T12:00:00Z", "interval": 300}

    task = await started(app)
    eid = await publish(redis, keys, "call", "CP-1", node="router-b-0", conn="c0ffee", id="19223201",
                  action="BootNotification",
                  payload={"chargePointVendor": "ACME", "chargePointModel": "X1"})
    [out] = await read_out(redis, keys, node="router-b-0")
    assert out[b"kind"] == b"result"
    assert out[b"cs"] == b"CP-1"
    assert out[b"conn"] == b"c0ffee"
    assert out[b"id"] == b"19223201"
    assert orjson.loads(out[b"payload"])["status"] == "Accepted"
    await wait_acked(redis, keys.inbound_for("CP-1"), GROUP, eid)
    assert seen[0].json == {"chargePointVendor": "ACME", "chargePointModel": "X1"}
    assert seen[0].proto == "ocpp1.6"
    await stopped(app, task)


@pytest.mark.parametrize(("proto", "error", "wire"), [
    ("ocpp1.6", FormatViolation, b"FormationViolation"),
    ("ocpp2.0.1", FormatViolation, b"FormatViolation"),
    ("ocpp1.6", OccurrenceConstraintViolation, b"OccurenceConstraintViolation"),
    ("ocpp2.1", OccurrenceConstraintViolation, b"OccurrenceConstraintViolation"),
    ("ocpp2.0.1", SecurityError, b"SecurityError"),
])
async def test_ocpp_error_becomes_a_callerror_spelled_for_the_version(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace, proto: str,
        error: type[Exception], wire: bytes) -> None:
    @app.on_call("DataTransfer")
    async def data_transfer(msg: Message) -> dict[str, Any]:
        raise error("vendorId is not one we know", {"vendorId": msg.json["vendorId"]})

    task = await started(app)
    eid = await publish(redis, keys, "call", "CP-2", proto=proto, id="m1", action="DataTransfer",
                  payload={"vendorId": "X"})
    [out] = await read_out(redis, keys)
    assert out[b"kind"] == b"error"
    assert out[b"code"] == wire
    assert out[b"description"] == b"vendorId is not one we know"
    assert orjson.loads(out[b"details"]) == {"vendorId": "X"}
    await wait_acked(redis, keys.inbound_for("CP-2"), GROUP, eid)
    await stopped(app, task)


async def test_unhandled_call_gets_not_implemented(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    task = await started(app)
    await publish(redis, keys, "call", "CP-3", id="m9", action="Heartbeat", payload={})
    [out] = await read_out(redis, keys)
    assert (out[b"kind"], out[b"code"], out[b"id"]) == (b"error", b"NotImplemented", b"m9")
    await stopped(app, task)


async def test_observer_group_sees_calls_without_answering(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    observer = BackendApp(redis, group="analytics", prefix=key_prefix, shards=3, block=0.2,
                          answer_calls=False)
    seen: list[str] = []

    @observer.on("call")
    async def count(msg: Message) -> None:
        seen.append(msg.action)

    task = await started(observer)
    await publish(redis, keys, "call", "CP-4", action="Heartbeat", payload={})
    eid = await publish(redis, keys, "call", "CP-4", action="Authorize", payload={"idTag": "A"})
    await wait_acked(redis, keys.inbound_for("CP-4"), "analytics", eid)
    await stopped(observer, task)
    assert seen == ["Heartbeat", "Authorize"]
    assert await redis.exists(keys.out("node-a")) == 0


async def test_one_chargers_messages_in_order_different_chargers_concurrently(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    order: list[tuple[str, int]] = []
    b_started = asyncio.Event()

    @app.on_call("MeterValues")
    async def meter(msg: Message) -> dict[str, Any]:
        n = msg.json["connectorId"]
        if msg.cs == "CP-A" and n == 0:
            # CP-A's first message can only finish once CP-B's handler runs:
            # this deadlocks unless chargers are handled concurrently.
            await b_started.wait()
        if msg.cs == "CP-B":
            b_started.set()
        order.append((msg.cs, n))
        return {}

    task = await started(app)
    for n in range(5):
        await publish(redis, keys, "call", "CP-A", action="MeterValues",
                      payload={"connectorId": n, "meterValue": []})
    await publish(redis, keys, "call", "CP-B", action="MeterValues",
                  payload={"connectorId": 0, "meterValue": []})
    await read_out(redis, keys, count=6)
    assert [n for cs, n in order if cs == "CP-A"] == [0, 1, 2, 3, 4]
    assert order.index(("CP-B", 0)) < order.index(("CP-A", 0))
    await stopped(app, task)


async def test_failing_handler_leaves_the_entry_pending_and_unanswered(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, block=0.2,
                     claim_idle=3600)
    failed = asyncio.Event()

    @app.on("connected")
    async def connected(msg: Message) -> None:
        failed.set()
        raise RuntimeError("database down")

    task = await started(app)
    await publish(redis, keys, "connected", "CP-5", addr="10.0.0.1:4242")
    await asyncio.wait_for(failed.wait(), timeout(10))
    await stopped(app, task)
    assert await pending_count(redis, keys.inbound_for("CP-5"), GROUP) == 1
    assert app.stats["failed"] == 1


async def test_poison_entry_reaches_the_dead_letter_stream(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, block=0.2,
                     claim_idle=0.05, claim_interval=0.05, max_deliveries=3)
    attempts = 0

    @app.on_call("StatusNotification")
    async def status(msg: Message) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        raise KeyError("connector 7 unknown")

    task = await started(app)
    eid = await publish(redis, keys, "call", "CP-6", action="StatusNotification", id="p1",
                        payload={"connectorId": 7, "errorCode": "NoError",
                                 "status": "Available"})
    [dead] = await read_stream(redis, app.dead_stream, timeout=timeout(20))
    assert dead[b"dead_entry"] == eid.encode()
    assert dead[b"dead_stream"] == keys.inbound_for("CP-6")
    assert dead[b"dead_group"] == GROUP.encode()
    assert dead[b"dead_deliveries"] == b"4"
    assert b"KeyError" in dead[b"dead_error"] and b"connector 7 unknown" in dead[b"dead_error"]
    assert dead[b"action"] == b"StatusNotification" and dead[b"id"] == b"p1"
    await wait_acked(redis, keys.inbound_for("CP-6"), GROUP, eid)
    await stopped(app, task)
    assert attempts == 3
    assert await redis.exists(keys.out("node-a")) == 0


async def test_malformed_entry_is_dead_lettered_at_once(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    task = await started(app)
    eid = await redis.xadd(keys.inbound(0), {"v": 1, "kind": "teleport", "cs": "CP-7"})
    [dead] = await read_stream(redis, app.dead_stream)
    assert dead[b"dead_entry"] == eid
    assert b"unknown kind" in dead[b"dead_error"]
    await wait_acked(redis, keys.inbound(0), GROUP, eid.decode())
    await stopped(app, task)


async def test_stop_finishes_in_flight_handlers(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"currentTime": "2026-11-21T12:00:00Z"}

    task = await started(app)
    eid = await publish(redis, keys, "call", "CP-8", action="Heartbeat", payload={})
    await asyncio.wait_for(entered.wait(), timeout(10))
    app.stop()
    await asyncio.sleep(0)
    assert not task.done()
    release.set()
    await asyncio.wait_for(task, timeout(20))
    [out] = await read_out(redis, keys)
    assert out[b"kind"] == b"result"
    await wait_acked(redis, keys.inbound_for("CP-8"), GROUP, eid)


async def test_typed_access_to_payloads(app: BackendApp, redis: aioredis.Redis,
                                        keys: KeySpace) -> None:
    import msgspec

    class Boot(msgspec.Struct):
        chargePointVendor: str
        chargePointModel: str

    class BootConf(msgspec.Struct, omit_defaults=True):
        status: str
        currentTime: str
        interval: int
        note: str | None = None

    @app.on_call("BootNotification")
    async def boot(msg: Message) -> BootConf:
        req = msg.decode(Boot)
        return BootConf(status="Accepted" if req.chargePointVendor == "ACME" else "Rejected",
                        currentTime="2026-11-21T12:00:00Z", interval=60)

    task = await started(app)
    await publish(redis, keys, "call", "CP-9", action="BootNotification",
                  payload={"chargePointVendor": "ACME", "chargePointModel": "X"})
    [out] = await read_out(redis, keys)
    assert orjson.loads(out[b"payload"]) == {
        "status": "Accepted", "currentTime": "2026-11-21T12:00:00Z", "interval": 60}
    await stopped(app, task)


CRASHING_CONSUMER = textwrap.dedent("""
    import asyncio, sys
    import redis.asyncio as aioredis
    from router.backend import BackendApp

    async def main(url, prefix):
        app = BackendApp(aioredis.Redis.from_url(url), group="csms", prefix=prefix,
                         shards=3, consumer="doomed", block=0.2, claim_idle=3600)

        @app.on_call("Authorize")
        async def authorize(msg):
            print("working", flush=True)
            await asyncio.Event().wait()   # never answers: killed mid-work

        task = asyncio.create_task(app.run())
        await app.wait_ready()
        print("ready", flush=True)
        await task

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


async def test_killed_consumers_entries_are_claimed_by_another(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    url = redis.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/0"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_CONSUMER, redis_url, key_prefix],
                            stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), timeout(30))
        assert line == b"ready\n"
        eid = await publish(redis, keys, "call", "CP-10", action="Authorize", id="k1",
                            payload={"idTag": "04A2B3"})
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), timeout(30))
        assert line == b"working\n"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    pending = await redis.xpending_range(keys.inbound_for("CP-10"), GROUP, "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(eid.encode(), b"doomed")]

    survivor = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, block=0.2,
                          claim_idle=0.05, claim_interval=0.05)

    @survivor.on_call("Authorize")
    async def authorize(msg: Message) -> dict[str, Any]:
        return {"idTagInfo": {"status": "Accepted"}}

    task = await started(survivor)
    [out] = await read_out(redis, keys)
    assert (out[b"kind"], out[b"id"]) == (b"result", b"k1")
    await wait_acked(redis, keys.inbound_for("CP-10"), GROUP, eid)
    await stopped(survivor, task)
    assert survivor.stats["claimed"] == 1


async def test_typed_access_with_the_generated_ocppj_types(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    from router.ocppj import v16

    got: list[object] = []

    @app.on_call("Authorize")
    async def authorize(msg: Message) -> dict[str, Any]:
        got.append(msg.typed())
        return {"idTagInfo": {"status": "Accepted"}}

    task = await started(app)
    await publish(redis, keys, "call", "CP-11", action="Authorize", payload={"idTag": "04A2B3"})
    await read_out(redis, keys)
    await stopped(app, task)
    assert isinstance(got[0], v16.AuthorizeRequest)
    assert got[0].idTag == "04A2B3"


async def test_call_without_node_is_dead_lettered_at_once(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    task = await started(app)
    eid = await redis.xadd(keys.inbound_for("CP-12"), {
        "v": 1, "kind": "call", "cs": "CP-12", "proto": "ocpp1.6", "conn": "c", "ts": 1,
        "id": "x", "action": "Heartbeat", "payload": "{}"})
    [dead] = await read_stream(redis, app.dead_stream)
    assert dead[b"dead_entry"] == eid and b"lacks node" in dead[b"dead_error"]
    await wait_acked(redis, keys.inbound_for("CP-12"), GROUP, eid.decode())
    await stopped(app, task)


async def test_read_ahead_is_bounded_by_max_in_flight(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    # One shard: with S shards, S readers may each overshoot by one batch.
    keys = KeySpace(prefix=key_prefix, shards=1)
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=1, block=0.2,
                     max_in_flight=2, batch=1)
    release = asyncio.Event()
    entered: list[str] = []

    @app.on("connected")
    async def hold(msg: Message) -> None:
        entered.append(msg.cs)
        await release.wait()

    task = await started(app)
    for n in range(5):
        await publish(redis, keys, "connected", f"CP-H{n}")
    async with asyncio.timeout(timeout(10)):
        while len(entered) < 2:
            await asyncio.sleep(0.01)
    # Two held, so the reader must not have taken a third entry from Redis.
    groups = {stream: await redis.xinfo_groups(stream) for stream in keys.all_inbound()}
    delivered = sum(int(g["pending"]) for infos in groups.values() for g in infos)
    assert delivered == 2
    release.set()
    async with asyncio.timeout(timeout(10)):
        while len(entered) < 5:
            await asyncio.sleep(0.01)
    await stopped(app, task)


async def test_pool_too_small_for_the_concurrency_is_refused(key_prefix: str) -> None:
    small = aioredis.Redis(host="127.0.0.1", port=1, max_connections=20)
    with pytest.raises(ValueError, match="concurrency"):
        BackendApp(small, group=GROUP, prefix=key_prefix, concurrency=50)
    BackendApp(small, group=GROUP, prefix=key_prefix, concurrency=10)
    await small.aclose()


async def test_many_chargers_at_once_share_a_few_connections(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, block=0.2,
                     concurrency=8)

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, Any]:
        return {"currentTime": "2026-11-21T12:00:00Z"}

    async with redis.pipeline(transaction=False) as pipe:
        for n in range(600):
            pipe.xadd(keys.inbound_for(f"CP-M{n}"), {
                "v": 1, "kind": "call", "cs": f"CP-M{n}", "proto": "ocpp1.6", "node": "node-a",
                "conn": "c", "ts": 1, "id": str(n), "action": "Heartbeat", "payload": "{}"})
        await pipe.execute()
    app.start_id = "0"
    task = await started(app)
    out = await read_out(redis, keys, count=600, timeout=timeout(60))
    assert sorted(int(f[b"id"]) for f in out) == list(range(600))
    await stopped(app, task)
    assert app.stats["handled"] == 600 and app.stats["failed"] == 0
    for stream in keys.all_inbound():
        assert await pending_count(redis, stream, GROUP) == 0


async def test_slow_handler_is_kept_alive_not_claimed_by_others(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    # Keep-alive (every claim_interval) ten times as often as claim_idle: a
    # loaded event loop that is late by a few intervals still keeps the entry.
    claim_idle = 1.0
    fast = {"claim_idle": claim_idle, "claim_interval": 0.1, "block": 0.2, "max_deliveries": 1}
    worker = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, consumer="worker",
                        **fast)  # type: ignore[arg-type]
    thief = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, consumer="thief",
                       **fast)  # type: ignore[arg-type]
    entered, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    @worker.on_call("GetCertificateStatus")
    async def slow(msg: Message) -> dict[str, Any]:
        runs.append("worker")
        entered.set()
        await release.wait()
        return {"status": "Failed"}

    @thief.on_call("GetCertificateStatus")
    async def steal(msg: Message) -> dict[str, Any]:
        runs.append("thief")
        return {"status": "Failed"}

    worker_task = await started(worker)
    eid = await publish(redis, keys, "call", "CP-13", action="GetCertificateStatus",
                        payload={"ocspRequestData": {}})
    await asyncio.wait_for(entered.wait(), timeout(10))
    thief_task = await started(thief)
    since = asyncio.get_running_loop().time()
    # Many sweeps of both, for far longer than claim_idle would allow.
    async with asyncio.timeout(timeout(30)):
        while (thief.stats["sweeps"] < 10 or worker.stats["sweeps"] < 10
               or asyncio.get_running_loop().time() - since < 3 * claim_idle):
            await asyncio.sleep(0.05)
    [pending] = await redis.xpending_range(keys.inbound_for("CP-13"), GROUP, "-", "+", 10)
    assert (pending["consumer"], pending["times_delivered"]) == (b"worker", 1)
    release.set()
    await wait_acked(redis, keys.inbound_for("CP-13"), GROUP, eid)
    await stopped(thief, thief_task)
    await stopped(worker, worker_task)
    assert runs == ["worker"]
    assert await redis.exists(thief.dead_stream) == 0


async def test_results_errors_and_failures_reach_their_handlers(
        app: BackendApp, redis: aioredis.Redis, keys: KeySpace) -> None:
    seen: list[tuple[str, str, str]] = []

    @app.on_result("Reset")
    async def reset_done(msg: Message) -> None:
        seen.append(("reset", msg.id, msg.json["status"]))

    @app.on_result()
    async def any_result(msg: Message) -> None:
        seen.append(("result", msg.id, msg.action))

    @app.on_error()
    async def refused(msg: Message) -> None:
        seen.append(("error", msg.id, f"{msg.code}/{msg.error_details()}"))

    @app.on_failed()
    async def failed(msg: Message) -> None:
        seen.append(("failed", msg.id, msg.code))

    task = await started(app)
    await publish(redis, keys, "result", "CP-14", id="r1", action="Reset",
                  payload={"status": "Accepted"})
    await publish(redis, keys, "result", "CP-14", id="r2", action="UnlockConnector",
                  payload={"status": "Unlocked"})
    await publish(redis, keys, "error", "CP-14", id="r3", action="Reset", code="NotSupported",
                  description="no", details={"a": 1})
    last = await publish(redis, keys, "failed", "CP-14", id="r4", action="Reset",
                         code="QueueFull", description="too many")
    await wait_acked(redis, keys.inbound_for("CP-14"), GROUP, last)
    await stopped(app, task)
    assert seen == [("reset", "r1", "Accepted"), ("result", "r2", "UnlockConnector"),
                    ("error", "r3", "NotSupported/{'a': 1}"), ("failed", "r4", "QueueFull")]
    assert await redis.exists(keys.out("node-a")) == 0


def test_handler_registration_errors(app: BackendApp) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        app.on("teleport")

    @app.on_call("Heartbeat")
    async def first(msg: Message) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="already registered"):
        app.on_call("Heartbeat")(first)


async def test_idle_consumers_without_pending_entries_are_forgotten(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, block=0.2,
                     forget_consumers_after=0.05, consumer="alive")
    await app.ensure_groups()
    stream = keys.inbound(0)
    for _ in range(3):
        await redis.xadd(stream, {"v": 1, "kind": "connected", "cs": "x"})

    async def read(consumer: str, ack: bool) -> None:
        [(_s, [(eid, _f)])] = await redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
        if ack:
            await redis.xack(stream, GROUP, eid)

    await read("ghost", ack=True)      # holds nothing: forgotten
    await read("holder", ack=False)    # holds an entry: kept
    await read("alive", ack=True)      # this app's own name: kept
    await asyncio.sleep(0.1)  # let the idle times pass the (tiny) threshold
    await app.forget_idle_consumers()
    names = {c["name"] for s in keys.all_inbound() for c in await redis.xinfo_consumers(s, GROUP)}
    assert b"ghost" not in names
    assert {b"holder", b"alive"} <= names


async def test_claimed_entries_that_were_trimmed_leave_the_pending_list(
        redis: aioredis.Redis, key_prefix: str, keys: KeySpace) -> None:
    app = BackendApp(redis, group=GROUP, prefix=key_prefix, shards=3, claim_idle=0.01)
    await app.ensure_groups()
    stream = keys.inbound(0)
    gone = await redis.xadd(stream, {"v": 1, "kind": "connected", "cs": "x", "node": "n",
                                     "conn": "c"})
    await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=1)
    await redis.xdel(stream, gone)  # as XADD … MAXLEN ~ does to old entries
    await asyncio.sleep(0.05)       # past claim_idle
    await app.claim_once()
    assert await pending_count(redis, stream, GROUP) == 0
