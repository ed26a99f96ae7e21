"""Client.call against a real redis-server, the test playing the router node(s)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import orjson
import pytest
import redis.asyncio as aioredis

from router.backend import (
    CallTimeout,
    ChargerError,
    Client,
    DeliveryFailed,
    InvalidPayload,
    NotConnected,
)
from router.streams.keys import KeySpace
from tests.backend.helpers import FakeRouter
from tests.conftest import timeout


@pytest.fixture
def keys(key_prefix: str) -> KeySpace:
    return KeySpace(prefix=key_prefix, shards=2)


def accept(fields: dict[bytes, bytes]) -> dict[str, Any]:
    return {"kind": "result", "payload": b'{"status":"Accepted"}'}


async def test_call_reaches_the_node_in_the_registry_and_returns_the_answer(
        redis: aioredis.Redis, keys: KeySpace, key_prefix: str) -> None:
    # Two router nodes; the charger is on node B, the caller knows nothing about it.
    async with FakeRouter(redis, keys, "node-a", accept) as a, \
            FakeRouter(redis, keys, "node-b", accept) as b:
        await b.register("CP-1")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False) as client:
            answer = await client.call("CP-1", "RemoteStartTransaction", {"idTag": "04A2B3"},
                                       timeout=timeout(10))
            reply_key = client.reply_key
        assert answer == {"status": "Accepted"}
        assert a.seen == []
        [sent] = b.seen
        assert sent[b"kind"] == b"call"
        assert sent[b"cs"] == b"CP-1"
        assert sent[b"conn"] == b.conn.encode()
        assert sent[b"action"] == b"RemoteStartTransaction"
        assert orjson.loads(sent[b"payload"]) == {"idTag": "04A2B3"}
        assert sent[b"reply_to"] == reply_key.encode()
        assert int(sent[b"timeout"]) >= 10
    # close() removed the reply stream
    assert await redis.exists(reply_key) == 0


async def test_concurrent_calls_beyond_the_pool_size_get_their_own_answers(
        redis: aioredis.Redis, keys: KeySpace, key_prefix: str) -> None:
    def echo(fields: dict[bytes, bytes]) -> dict[str, Any]:
        return {"kind": "result", "payload": fields[b"payload"]}

    async with FakeRouter(redis, keys, "node-a", echo) as node:
        for n in range(300):
            await node.register(f"CP-{n}")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False) as client:
            answers = await asyncio.gather(*(
                client.call(f"CP-{n}", "DataTransfer", {"vendorId": str(n)}, timeout=timeout(10))
                for n in range(300)))
    assert [a["vendorId"] for a in answers] == [str(n) for n in range(300)]


async def test_typed_answer(redis: aioredis.Redis, keys: KeySpace, key_prefix: str) -> None:
    class Answer(msgspec.Struct):
        status: str

    async with FakeRouter(redis, keys, "node-a", accept) as node:
        await node.register("CP-1")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False) as client:
            answer = await client.call("CP-1", "Reset", {"type": "Soft"}, response_type=Answer)
    assert answer == Answer(status="Accepted")


async def test_charger_callerror_raises_charger_error(
        redis: aioredis.Redis, keys: KeySpace, key_prefix: str) -> None:
    def refuse(fields: dict[bytes, bytes]) -> dict[str, Any]:
        return {"kind": "error", "code": "NotSupported", "description": "no reset here",
                "details": b'{"why":"firmware"}'}

    async with FakeRouter(redis, keys, "node-a", refuse) as node:
        await node.register("CP-1")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False) as client:
            with pytest.raises(ChargerError) as info:
                await client.call("CP-1", "Reset", {"type": "Soft"})
    assert info.value.code == "NotSupported"
    assert info.value.description == "no reset here"
    assert info.value.details == {"why": "firmware"}


@pytest.mark.parametrize(("code", "exc"), [
    ("NotConnected", NotConnected),
    ("Timeout", CallTimeout),
    ("InvalidPayload", InvalidPayload),
    ("UnknownAction", InvalidPayload),
    ("QueueFull", DeliveryFailed),
    ("Closed", DeliveryFailed),
])
async def test_router_failures_raise_clear_exceptions(
        redis: aioredis.Redis, keys: KeySpace, key_prefix: str, code: str,
        exc: type[Exception]) -> None:
    def fail(fields: dict[bytes, bytes]) -> dict[str, Any]:
        return {"kind": "failed", "code": code, "description": f"router says {code}"}

    async with FakeRouter(redis, keys, "node-a", fail) as node:
        await node.register("CP-1")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False) as client:
            with pytest.raises(exc) as info:
                await client.call("CP-1", "Reset", {"type": "Soft"})
    assert getattr(info.value, "code") == code  # noqa: B009


async def test_not_in_registry_is_not_connected(redis: aioredis.Redis, key_prefix: str) -> None:
    async with Client(redis, prefix=key_prefix) as client:
        with pytest.raises(NotConnected):
            await client.call("nobody", "Reset", {"type": "Soft"})
        assert await client.where("nobody") is None
        assert await client.disconnect("nobody") is False


async def test_no_answer_at_all_times_out(redis: aioredis.Redis, keys: KeySpace,
                                          key_prefix: str) -> None:
    async with FakeRouter(redis, keys, "node-a", lambda fields: None) as node:
        await node.register("CP-1")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False) as client:
            client.timeout_grace = 0.05
            with pytest.raises(CallTimeout):
                await client.call("CP-1", "Reset", {"type": "Soft"}, timeout=0.2)
            assert client._waiting == {}


async def test_chargers_lists_the_registry(redis: aioredis.Redis, keys: KeySpace,
                                           key_prefix: str) -> None:
    node = FakeRouter(redis, keys, "node-a", accept)
    await node.register("CP-2", proto="ocpp2.0.1")
    await node.register("CP-1")
    async with Client(redis, prefix=key_prefix) as client:
        found = await client.chargers()
    assert [(r.identity, r.proto, r.node, r.conn) for r in found] == [
        ("CP-1", "ocpp1.6", "node-a", node.conn), ("CP-2", "ocpp2.0.1", "node-a", node.conn)]
    assert all(r.since > 0 for r in found)


async def test_send_and_disconnect_write_out_entries(redis: aioredis.Redis, keys: KeySpace,
                                                     key_prefix: str) -> None:
    node = FakeRouter(redis, keys, "node-a", accept)
    await node.register("CP-1", proto="ocpp2.1")
    async with Client(redis, prefix=key_prefix, validate=False) as client:
        await client.send("CP-1", "NotifyPeriodicEventStream", {"id": 1, "pending": 0,
                                                                "basetime": "x", "data": []})
        assert await client.disconnect("CP-1") is True
    entries = await redis.xrange(keys.out("node-a"))
    assert [e[b"kind"] for _id, e in entries] == [b"send", b"close"]
    assert entries[1][1][b"conn"] == node.conn.encode()


async def test_payload_must_be_a_json_object(redis: aioredis.Redis, key_prefix: str) -> None:
    async with Client(redis, prefix=key_prefix) as client:
        with pytest.raises(TypeError):
            await client.call("CP-1", "Reset", [1, 2])


@pytest.mark.parametrize(("action", "payload", "code"), [
    ("Reset", {"type": "Sideways"}, "PropertyConstraintViolation"),
    ("Reset", {}, "OccurenceConstraintViolation"),
    ("Teleport", {}, "NotImplemented"),
    ("BootNotification", {"chargePointVendor": "A", "chargePointModel": "B"}, "NotSupported"),
])
async def test_invalid_payload_is_refused_before_sending(
        redis: aioredis.Redis, keys: KeySpace, key_prefix: str, action: str,
        payload: dict[str, Any], code: str) -> None:
    async with FakeRouter(redis, keys, "node-a", accept) as node:
        await node.register("CP-1", proto="ocpp1.6")
        async with Client(redis, prefix=key_prefix, shards=2) as client:
            with pytest.raises(InvalidPayload) as info:
                await client.call("CP-1", action, payload)
            assert info.value.code == code
            assert await client.call("CP-1", "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    assert [f[b"action"] for f in node.seen] == [b"Reset"]


async def test_reply_stream_always_has_a_ttl(redis: aioredis.Redis, keys: KeySpace,
                                             key_prefix: str) -> None:
    async with FakeRouter(redis, keys, "node-a", accept) as node:
        await node.register("CP-1")
        async with Client(redis, prefix=key_prefix, shards=2, validate=False,
                          reply_ttl=120) as client:
            await client.call("CP-1", "Reset", {"type": "Soft"}, timeout=200)
            assert 200 < await redis.ttl(client.reply_key) <= 262
