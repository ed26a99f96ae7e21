"""The reference CSMS answers every charger action of every version schema-validly."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.backend.message import Message
from router.backend.reference_csms import ReferenceCSMS
from router.ocppj import dialect
from router.streams.keys import KeySpace
from tests.backend import schema_instances
from tests.backend.helpers import publish, read_out
from tests.conftest import timeout

PROTOS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
CASES = [(proto, action) for proto in PROTOS for action in sorted(dialect(proto).charger_actions)]


@pytest.fixture
async def csms(redis: aioredis.Redis, key_prefix: str) -> AsyncIterator[ReferenceCSMS]:
    csms = ReferenceCSMS(redis, prefix=key_prefix, allow={"04A2B3", "GOOD"}, block=0.2)
    yield csms
    await csms.state.aclose()   # handlers called directly, without run()


_ids = itertools.count(1)


def entry(proto: str, action: str, payload: dict[str, Any], cs: str = "CP-1",
          msg_id: str = "42") -> Message:
    return Message("in", "1-1", {
        b"v": b"1", b"kind": b"call", b"cs": cs.encode(), b"proto": proto.encode(),
        b"node": b"node-a", b"conn": b"c1", b"ts": str(int(time.time() * 1000)).encode(),
        b"id": msg_id.encode(), b"action": action.encode(), b"payload": orjson.dumps(payload)})


async def answer(csms: ReferenceCSMS, proto: str, action: str, payload: dict[str, Any]) -> Any:
    msg = entry(proto, action, payload, msg_id=f"m{next(_ids)}")
    handler = csms.app.handler_for(msg)
    assert handler is not None, f"no handler for {proto} {action}"
    result = handler(msg)    # a plain def handler answers at once
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize(("proto", "action"), CASES)
@pytest.mark.parametrize("full", [False, True], ids=["minimal", "full"])
async def test_every_charger_action_gets_a_schema_valid_answer(
        csms: ReferenceCSMS, proto: str, action: str, full: bool) -> None:
    request = schema_instances.instance(proto, action, full=full)
    response = await answer(csms, proto, action, request)
    schema_instances.validator(proto, action, True).validate(response)
    # and router.ocppj, which the router applies to replies, agrees
    dialect(proto).validate_response(action, orjson.dumps(response))


def test_the_handled_actions_are_exactly_the_charger_actions(csms: ReferenceCSMS) -> None:
    handled = {action for kind, action in csms.app._handlers if kind == "call"}
    assert handled == set().union(*(dialect(p).charger_actions for p in PROTOS))


async def test_authorize_uses_the_allow_list(csms: ReferenceCSMS) -> None:
    assert await answer(csms, "ocpp1.6", "Authorize", {"idTag": "04A2B3"}) == {
        "idTagInfo": {"status": "Accepted"}}
    assert await answer(csms, "ocpp1.6", "Authorize", {"idTag": "STOLEN"}) == {
        "idTagInfo": {"status": "Invalid"}}
    token = {"idToken": "STOLEN", "type": "ISO14443"}
    assert await answer(csms, "ocpp2.0.1", "Authorize", {"idToken": token}) == {
        "idTokenInfo": {"status": "Invalid"}}
    free = {"idToken": "", "type": "NoAuthorization"}
    assert await answer(csms, "ocpp2.1", "Authorize", {"idToken": free}) == {
        "idTokenInfo": {"status": "Accepted"}}


async def test_accept_all_without_allow_list(redis: aioredis.Redis, key_prefix: str) -> None:
    csms = ReferenceCSMS(redis, prefix=key_prefix)
    assert await answer(csms, "ocpp1.6", "Authorize", {"idTag": "ANY"}) == {
        "idTagInfo": {"status": "Accepted"}}


async def test_1_6_transactions_get_ids_and_state_in_redis(
        csms: ReferenceCSMS, redis: aioredis.Redis, key_prefix: str) -> None:
    start = {"connectorId": 1, "idTag": "04A2B3", "meterStart": 100, "timestamp": "2026-11-21T12:00:00Z"}
    first = await answer(csms, "ocpp1.6", "StartTransaction", start)
    second = await answer(csms, "ocpp1.6", "StartTransaction", {**start, "connectorId": 2})
    assert first["idTagInfo"] == {"status": "Accepted"}
    assert second["transactionId"] == first["transactionId"] + 1
    stop = {"transactionId": first["transactionId"], "meterStop": 5100,
            "timestamp": "2026-11-21T13:00:00Z", "reason": "EVDisconnected"}
    assert await answer(csms, "ocpp1.6", "StopTransaction", stop) == {}
    tx = await redis.hgetall(f"{key_prefix}:csms:tx:CP-1:{first['transactionId']}")
    assert tx[b"state"] == b"ended" and tx[b"meterStop"] == b"5100"
    assert tx[b"reason"] == b"EVDisconnected"
    assert await redis.ttl(f"{key_prefix}:csms:tx:CP-1:{first['transactionId']}") > 0


async def test_status_is_kept_per_connector(csms: ReferenceCSMS, redis: aioredis.Redis,
                                            key_prefix: str) -> None:
    await answer(csms, "ocpp1.6", "StatusNotification",
                 {"connectorId": 1, "errorCode": "NoError", "status": "Charging"})
    await answer(csms, "ocpp2.0.1", "StatusNotification",
                 {"timestamp": "2026-11-21T12:00:00Z", "connectorStatus": "Occupied",
                  "evseId": 2, "connectorId": 1})
    status = await redis.hgetall(f"{key_prefix}:csms:status:CP-1")
    assert orjson.loads(status[b"1"])["status"] == "Charging"
    assert orjson.loads(status[b"2/1"])["status"] == "Occupied"


async def test_2_x_transaction_events_are_tracked(csms: ReferenceCSMS, redis: aioredis.Redis,
                                                 key_prefix: str) -> None:
    base = {"timestamp": "2026-11-21T12:00:00Z", "triggerReason": "Authorized",
            "transactionInfo": {"transactionId": "tx-9"}}
    started = await answer(csms, "ocpp2.0.1", "TransactionEvent", {
        **base, "eventType": "Started", "seqNo": 0, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "GOOD", "type": "ISO14443"}})
    assert started == {"idTokenInfo": {"status": "Accepted"}}
    ended = await answer(csms, "ocpp2.0.1", "TransactionEvent", {
        **base, "eventType": "Ended", "seqNo": 1, "triggerReason": "EVCommunicationLost"})
    assert ended == {}
    tx = await redis.hgetall(f"{key_prefix}:csms:tx:CP-1:tx-9")
    assert (tx[b"state"], tx[b"seqNo"], tx[b"evse"]) == (b"ended", b"1", b"1/1")


async def test_served_through_the_streams(csms: ReferenceCSMS, redis: aioredis.Redis,
                                          key_prefix: str) -> None:
    keys = KeySpace(prefix=key_prefix)
    task = asyncio.create_task(csms.run())
    await asyncio.wait_for(csms.app.wait_ready(), timeout(10))
    await publish(redis, keys, "call", "CP-9", id="b1", action="BootNotification",
                  payload={"chargePointVendor": "ACME", "chargePointModel": "X1"})
    [out] = await read_out(redis, keys)
    boot = orjson.loads(out[b"payload"])
    assert (out[b"id"], boot["status"], boot["interval"]) == (b"b1", "Accepted", 300)
    csms.stop()
    await asyncio.wait_for(task, timeout(20))


async def test_redelivered_start_transaction_keeps_its_id(csms: ReferenceCSMS) -> None:
    start = {"connectorId": 1, "idTag": "04A2B3", "meterStart": 0,
             "timestamp": "2026-11-21T12:00:00Z"}
    msg = entry("ocpp1.6", "StartTransaction", start)
    handler = csms.app.handler_for(msg)
    assert handler is not None
    first = await handler(msg)
    again = await handler(entry("ocpp1.6", "StartTransaction", start))  # same conn and id
    other = await handler(Message("in", "1-2", {**msg.fields, b"id": b"43"}))
    assert again["transactionId"] == first["transactionId"]
    assert other["transactionId"] == first["transactionId"] + 1
