"""End to end through a real router process and a real Redis: the routing rules
of the router issue and the stream contract v1 (docs/streams.md)."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
import websockets

from tests.conftest import RouterNode
from tests.server.helpers import BOOT, BOOT_REPLY, Backend, Charger

PROTOS = ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]


@pytest.fixture
async def backend(router_node: RouterNode) -> AsyncIterator[Backend]:
    b = Backend(router_node)
    yield b
    await b.close()


@pytest.mark.parametrize("proto", PROTOS)
async def test_call_is_published_and_backend_reply_reaches_charger(
        router_node: RouterNode, backend: Backend, proto: str) -> None:
    cp = await Charger.connect(router_node, "CP-1", proto)
    connected = await backend.next("connected", cs="CP-1")
    assert connected["proto"] == proto and connected["node"] == router_node.node_id
    msg_id = await cp.call("BootNotification", BOOT[proto])
    call = await backend.next("call", cs="CP-1")
    assert call["v"] == "1"
    assert call["id"] == msg_id and call["action"] == "BootNotification"
    assert json.loads(call["payload"]) == BOOT[proto]
    assert call["conn"] == connected["conn"] and call["proto"] == proto
    assert abs(int(call["ts"]) - time.time() * 1000) < 60_000
    await backend.reply(call, BOOT_REPLY[proto])
    assert await cp.recv() == [3, msg_id, BOOT_REPLY[proto]]
    await cp.close()
    gone = await backend.next("disconnected", cs="CP-1")
    assert gone["conn"] == connected["conn"] and gone["code"] == "1000"


async def test_payload_bytes_are_published_exactly_as_sent(router_node: RouterNode,
                                                           backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-raw")
    raw = '{ "chargePointModel" : "X1",\n "chargePointVendor":"ACME\\u00e9" }'
    await cp.send(f'[2, "m1", "BootNotification", {raw}]')
    call = await backend.next("call", cs="CP-raw")
    assert call["payload"] == raw
    await cp.close()


async def test_shards_follow_crc32_of_identity(router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--shards", "4")
    b = Backend(node, shards=4)
    try:
        for identity in ("A", "B", "CP-7", "charger.x"):
            cp = await Charger.connect(node, identity)
            await cp.call("BootNotification", BOOT["ocpp1.6"])
            shard = zlib.crc32(identity.encode()) % 4
            e = await b.next("call", cs=identity)
            entries = await b.redis.xrange(f"{node.key_prefix}:in:{{{shard}}}".encode())
            assert any(fields[b"cs"] == identity.encode() and fields[b"kind"] == b"call"
                       for _, fields in entries), (identity, e)
            await cp.close()
    finally:
        await b.close()


async def test_heartbeat_answered_at_the_edge(router_node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-hb")
    msg_id = await cp.call("Heartbeat", {})
    answer = await cp.recv()
    assert answer[0] == 3 and answer[1] == msg_id
    assert answer[2]["currentTime"].endswith("Z")
    await backend.nothing()
    await cp.close()


async def test_heartbeat_forwarded_when_configured(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--heartbeat", "forward")
    b = Backend(node)
    try:
        cp = await Charger.connect(node, "CP-hbf")
        msg_id = await cp.call("Heartbeat", {})
        call = await b.next("call", cs="CP-hbf")
        assert call["action"] == "Heartbeat" and call["id"] == msg_id
        await b.reply(call, {"currentTime": "2026-11-21T12:00:00Z"})
        assert await cp.recv() == [3, msg_id, {"currentTime": "2026-11-21T12:00:00Z"}]
        await cp.close()
    finally:
        await b.close()


@pytest.mark.parametrize(("proto", "message", "code"), [
    ("ocpp1.6", [2, "b1", "BootNotification", {"chargePointVendor": "A"}],
     "OccurenceConstraintViolation"),
    ("ocpp2.0.1", [2, "b1", "BootNotification", {"reason": "PowerUp"}],
     "OccurrenceConstraintViolation"),
    ("ocpp1.6", [2, "b1", "BootNotification", {"chargePointVendor": 1, "chargePointModel": "X"}],
     "TypeConstraintViolation"),
    ("ocpp1.6", [2, "b1", "NoSuchAction", {}], "NotImplemented"),
    ("ocpp1.6", "[2, \"b1\", \"BootNotification\", {", "FormationViolation"),
    ("ocpp2.0.1", "not json", "FormatViolation"),
])
async def test_invalid_input_answered_by_router_not_published(
        router_node: RouterNode, backend: Backend, proto: str, message: object,
        code: str) -> None:
    cp = await Charger.connect(router_node, "CP-bad", proto)
    await cp.send(message)  # type: ignore[arg-type]
    answer = await cp.recv()
    assert answer[0] == 4 and answer[2] == code, answer
    assert answer[1] in ("b1", "-1")
    assert len(answer[3]) <= 255 and answer[4] == {}
    await backend.nothing()
    # The connection's other traffic is unaffected.
    msg_id = await cp.call("BootNotification", BOOT[proto])
    call = await backend.next("call", cs="CP-bad")
    await backend.reply(call, BOOT_REPLY[proto])
    assert await cp.recv() == [3, msg_id, BOOT_REPLY[proto]]
    await cp.close()


@pytest.mark.parametrize(("proto", "code"), [("ocpp1.6", "GenericError"),
                                             ("ocpp2.0.1", "RpcFrameworkError")])
async def test_second_call_while_first_pending(router_node: RouterNode, backend: Backend,
                                               proto: str, code: str) -> None:
    cp = await Charger.connect(router_node, "CP-2nd", proto)
    first = await cp.call("BootNotification", BOOT[proto])
    call = await backend.next("call", cs="CP-2nd")
    second = await cp.call("BootNotification", BOOT[proto])
    answer = await cp.recv()
    assert answer[:3] == [4, second, code]
    await backend.reply(call, BOOT_REPLY[proto])
    assert await cp.recv() == [3, first, BOOT_REPLY[proto]]
    await cp.close()


async def test_invalid_backend_reply_not_sent(router_node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-ir")
    msg_id = await cp.call("BootNotification", BOOT["ocpp1.6"])
    call = await backend.next("call", cs="CP-ir")
    await backend.reply(call, {"status": "Maybe", "currentTime": "x", "interval": 1})
    answer = await cp.recv()
    assert answer[:3] == [4, msg_id, "InternalError"]
    failed = await backend.next("failed", cs="CP-ir")
    assert failed["code"] == "InvalidPayload" and failed["id"] == msg_id
    assert "status" in failed["description"]
    await cp.close()


async def test_reply_for_old_connection_is_dropped(router_node: RouterNode,
                                                   backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-old")
    await cp.call("BootNotification", BOOT["ocpp1.6"])
    call = await backend.next("call", cs="CP-old")
    await backend.out(router_node.node_id, kind="result", cs="CP-old", conn="0123456789abcdef",
                      id=call["id"], payload=BOOT_REPLY["ocpp1.6"])
    failed = await backend.next("failed", cs="CP-old")
    assert failed["code"] == "NotConnected"
    with pytest.raises(TimeoutError):
        await cp.recv(wait=0.3)
    await cp.close()


async def test_reply_timeout_gives_internal_error(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--reply-timeout", "0.5", "--publish-timeout", "0.25")
    b = Backend(node)
    try:
        cp = await Charger.connect(node, "CP-rt")
        msg_id = await cp.call("BootNotification", BOOT["ocpp1.6"])
        call = await b.next("call", cs="CP-rt")
        answer = await cp.recv(wait=5)
        assert answer[:3] == [4, msg_id, "InternalError"]
        await b.reply(call, BOOT_REPLY["ocpp1.6"])     # too late
        failed = await b.next("failed", cs="CP-rt")
        assert failed["code"] == "NoPendingCall"
        await cp.close()
    finally:
        await b.close()


async def test_backend_calls_are_queued_and_sent_one_at_a_time(router_node: RouterNode,
                                                                backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-q")
    conn = (await backend.next("connected", cs="CP-q"))["conn"]
    reply_to = f"{router_node.key_prefix}:reply:test"
    for i in range(3):
        await backend.out(router_node.node_id, kind="call", cs="CP-q", id=f"c{i}",
                          action="ChangeAvailability",
                          payload={"connectorId": i, "type": "Operative"}, reply_to=reply_to)
    for i in range(3):
        msg = await cp.recv()
        assert msg == [2, f"c{i}", "ChangeAvailability", {"connectorId": i, "type": "Operative"}]
        with pytest.raises(TimeoutError):   # the next one waits for this answer
            await cp.recv(wait=0.2)
        await cp.send([3, f"c{i}", {"status": "Accepted"}])
        result = await backend.next("result", cs="CP-q", id=f"c{i}")
        assert result["action"] == "ChangeAvailability" and result["conn"] == conn
        assert json.loads(result["payload"]) == {"status": "Accepted"}
    replies = await backend.redis.xrange(reply_to)
    assert [f[b"id"] for _, f in replies] == [b"c0", b"c1", b"c2"]
    await cp.close()


async def test_charger_callerror_becomes_error_entry(router_node: RouterNode,
                                                     backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-ce", "ocpp2.0.1")
    await backend.out(router_node.node_id, kind="call", cs="CP-ce", id="r1", action="Reset",
                      payload={"type": "Immediate"})
    assert (await cp.recv())[:3] == [2, "r1", "Reset"]
    await cp.send([4, "r1", "NotSupported", "no reset here", {"why": "test"}])
    err = await backend.next("error", cs="CP-ce")
    assert err["id"] == "r1" and err["action"] == "Reset" and err["code"] == "NotSupported"
    assert err["description"] == "no reset here" and json.loads(err["details"]) == {"why": "test"}
    await cp.close()


@pytest.mark.parametrize(("fields", "code"), [
    ({"action": "ChangeAvailability", "payload": {"connectorId": "x", "type": "Operative"}},
     "InvalidPayload"),
    ({"action": "BootNotification", "payload": {}}, "UnknownAction"),
    ({"action": "NoSuch", "payload": {}}, "UnknownAction"),
    ({"payload": {}}, "Malformed"),
])
async def test_bad_backend_calls_fail(router_node: RouterNode, backend: Backend,
                                      fields: dict[str, object], code: str) -> None:
    cp = await Charger.connect(router_node, "CP-bc")
    ref = await backend.out(router_node.node_id, kind="call", cs="CP-bc", id="x1", **fields)
    failed = await backend.next("failed", cs="CP-bc")
    assert failed["code"] == code and failed["id"] == "x1" and failed["ref"] == ref.decode()
    with pytest.raises(TimeoutError):
        await cp.recv(wait=0.2)
    await cp.close()


async def test_call_to_unknown_charger_fails(router_node: RouterNode, backend: Backend) -> None:
    await backend.out(router_node.node_id, kind="call", cs="nobody", id="n1",
                      action="Reset", payload={"type": "Hard"})
    failed = await backend.next("failed", cs="nobody")
    assert failed["code"] == "NotConnected"


async def test_backend_call_timeout_and_queue_full(
        router_factory: Callable[..., RouterNode]) -> None:
    node = router_factory("--max-queued-calls", "1")
    b = Backend(node)
    try:
        cp = await Charger.connect(node, "CP-t")
        for i in range(3):
            await b.out(node.node_id, kind="call", cs="CP-t", id=f"t{i}", action="Reset",
                        payload={"type": "Hard"}, timeout="0.5")
        full = await b.next("failed", cs="CP-t")
        assert full["id"] == "t2" and full["code"] == "QueueFull"
        assert (await cp.recv())[1] == "t0"
        first = await b.next("failed", cs="CP-t", id="t0")
        assert first["code"] == "Timeout"
        assert (await cp.recv())[1] == "t1"     # the queued one goes out next
        await cp.close()
        closed = await b.next("failed", cs="CP-t", id="t1")
        assert closed["code"] in ("Closed", "Timeout")
    finally:
        await b.close()


async def test_registry_lifecycle(router_node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-reg", "ocpp2.0.1")
    connected = await backend.next("connected", cs="CP-reg")
    for _ in range(100):
        reg = await backend.registry("CP-reg")
        if reg:
            break
        await asyncio.sleep(0.02)
    assert reg["node"] == router_node.node_id and reg["conn"] == connected["conn"]
    assert reg["proto"] == "ocpp2.0.1" and int(reg["since"]) > 0 and reg["addr"]
    ttl = await backend.redis.ttl(f"{router_node.key_prefix}:cs:CP-reg")
    assert 0 < ttl <= 300
    await cp.close()
    await backend.next("disconnected", cs="CP-reg")
    for _ in range(100):
        if not await backend.registry("CP-reg"):
            break
        await asyncio.sleep(0.02)
    assert not await backend.registry("CP-reg")


async def test_takeover_across_two_router_processes(
        router_factory: Callable[..., RouterNode]) -> None:
    a = router_factory()
    b = router_factory()
    backend = Backend(a)
    try:
        old = await Charger.connect(a, "CP-move")
        first = await backend.next("connected", cs="CP-move")
        new = await Charger.connect(b, "CP-move")
        second = await backend.next("connected", cs="CP-move", node=b.node_id)
        # Node A closes the old socket when B tells it to.
        await asyncio.wait_for(old.ws.wait_closed(), 10)
        gone = await backend.next("disconnected", conn=first["conn"])
        assert gone["node"] == a.node_id
        await asyncio.sleep(0.3)    # A's cleanup has run by now
        reg = await backend.registry("CP-move")
        assert reg["node"] == b.node_id and reg["conn"] == second["conn"]
        # A reply addressed to the stale connection is not delivered.
        msg_id = await new.call("BootNotification", BOOT["ocpp1.6"])
        call = await backend.next("call", cs="CP-move")
        assert call["node"] == b.node_id
        await backend.out(a.node_id, kind="result", cs="CP-move", conn=first["conn"], id=msg_id,
                          payload=BOOT_REPLY["ocpp1.6"])
        assert (await backend.next("failed", cs="CP-move"))["code"] == "NotConnected"
        await backend.reply(call, BOOT_REPLY["ocpp1.6"])
        assert await new.recv() == [3, msg_id, BOOT_REPLY["ocpp1.6"]]
        await new.close()
    finally:
        await backend.close()


async def test_takeover_on_one_node(router_node: RouterNode, backend: Backend) -> None:
    old = await Charger.connect(router_node, "CP-same")
    first = await backend.next("connected", cs="CP-same")
    new = await Charger.connect(router_node, "CP-same")
    second = await backend.next("connected", cs="CP-same")
    await asyncio.wait_for(old.ws.wait_closed(), 10)
    await backend.next("disconnected", conn=first["conn"])
    await asyncio.sleep(0.3)
    assert (await backend.registry("CP-same"))["conn"] == second["conn"]
    await new.close()


async def test_metrics_and_health(router_node: RouterNode, backend: Backend) -> None:
    assert router_node.admin("/healthz")[0] == 200
    assert router_node.admin("/readyz")[0] == 200
    cp = await Charger.connect(router_node, "CP-m", "ocpp2.0.1")
    await cp.call("BootNotification", BOOT["ocpp2.0.1"])
    call = await backend.next("call", cs="CP-m")
    await backend.reply(call, BOOT_REPLY["ocpp2.0.1"])
    await cp.recv()
    assert router_node.metric("ocpp_router_connections", protocol="ocpp2.0.1") == 1
    assert router_node.metric("ocpp_router_messages_total", direction="in", kind="call",
                              action="BootNotification") == 1
    assert router_node.metric("ocpp_router_messages_total", direction="out", kind="result",
                              action="BootNotification") == 1
    assert router_node.metric("ocpp_router_backend_reply_latency_seconds_count") == 1
    assert router_node.metric("ocpp_router_handshakes_total", outcome="accepted") == 1
    assert router_node.metric("ocpp_router_out_entries_total") >= 1   # the reply
    assert router_node.metric("ocpp_router_out_reads_total") >= 1
    _, text = router_node.admin("/metrics")
    assert "CP-m" not in text       # no per-charger labels
    await cp.close()


async def test_close_entry_closes_the_connection(router_node: RouterNode,
                                                 backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-cl")
    conn = (await backend.next("connected", cs="CP-cl"))["conn"]
    await backend.out(router_node.node_id, kind="close", cs="CP-cl", conn=conn)
    await asyncio.wait_for(cp.ws.wait_closed(), 10)
    assert cp.ws.close_code == 1000


async def test_binary_frames_are_refused(router_node: RouterNode) -> None:
    cp = await Charger.connect(router_node, "CP-bin")
    await cp.ws.send(b"[2,\"1\",\"Heartbeat\",{}]")
    await asyncio.wait_for(cp.ws.wait_closed(), 10)
    assert cp.ws.close_code == 1003


async def test_permessage_deflate_charger(router_node: RouterNode, backend: Backend) -> None:
    ws = await websockets.connect(router_node.url("CP-z"), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                  compression="deflate")
    assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
    cp = Charger(ws)
    msg_id = await cp.call("BootNotification", BOOT["ocpp1.6"])
    call = await backend.next("call", cs="CP-z")
    await backend.reply(call, BOOT_REPLY["ocpp1.6"])
    assert await cp.recv() == [3, msg_id, BOOT_REPLY["ocpp1.6"]]
    await cp.close()


async def test_ocpp21_send_both_ways(router_node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-send", "ocpp2.1")
    conn = (await backend.next("connected", cs="CP-send"))["conn"]
    await cp.send([6, "s1", "NotifyPeriodicEventStream", {"bad": 1}])
    await backend.nothing(kinds=("send",))             # an invalid SEND is dropped,
    with pytest.raises(TimeoutError):                  # and not answered (SEND is unconfirmed)
        await cp.recv(wait=0.2)
    await cp.send([6, "s2", "NotifyPeriodicEventStream",
                   {"id": 1, "pending": 0, "basetime": "2026-11-21T12:00:00Z",
                    "data": [{"t": 0.5, "v": "1"}]}])
    sent = await backend.next("send", cs="CP-send")
    assert sent["id"] == "s2" and sent["action"] == "NotifyPeriodicEventStream"
    # OCPP 2.1 defines SEND only from the charger (NotifyPeriodicEventStream):
    # a backend SEND, or a CALL action sent as SEND, is refused.
    for action, payload in (("NotifyPeriodicEventStream", {"id": 1, "pending": 0,
                              "basetime": "2026-11-21T12:00:00Z", "data": []}),
                            ("NotifyWebPaymentStarted", {"evseId": 1, "timeout": 60})):
        await backend.out(router_node.node_id, kind="send", cs="CP-send", conn=conn,
                          id="b1", action=action, payload=payload)
        failed = await backend.next("failed", cs="CP-send", action=action)
        assert failed["code"] == "UnknownAction"
    with pytest.raises(TimeoutError):
        await cp.recv(wait=0.2)
    await cp.close()


async def test_send_to_a_16_charger_fails(router_node: RouterNode, backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-s16")
    await backend.out(router_node.node_id, kind="send", cs="CP-s16", id="b1",
                      action="Reset", payload={"type": "Hard"})
    assert (await backend.next("failed", cs="CP-s16"))["code"] == "UnknownAction"
    await cp.close()


async def test_invalid_charger_result_fails_the_backend_call(router_node: RouterNode,
                                                             backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-icr")
    await backend.out(router_node.node_id, kind="call", cs="CP-icr", id="r1", action="Reset",
                      payload={"type": "Hard"})
    assert (await cp.recv())[:3] == [2, "r1", "Reset"]
    await cp.send([3, "r1", {"status": "Perhaps"}])
    failed = await backend.next("failed", cs="CP-icr")
    assert failed["code"] == "InvalidPayload" and failed["action"] == "Reset"
    await cp.close()


async def test_backend_error_reply_codes_are_checked(router_node: RouterNode,
                                                     backend: Backend) -> None:
    cp = await Charger.connect(router_node, "CP-ec")
    msg_id = await cp.call("BootNotification", BOOT["ocpp1.6"])
    call = await backend.next("call", cs="CP-ec")
    await backend.out(router_node.node_id, kind="error", cs="CP-ec", conn=call["conn"],
                      id=msg_id, code="NotSupported", description="nope",
                      details={"reason": "test"})
    assert await cp.recv() == [4, msg_id, "NotSupported", "nope", {"reason": "test"}]
    msg_id = await cp.call("BootNotification", BOOT["ocpp1.6"])
    call = await backend.next("call", cs="CP-ec")
    await backend.out(router_node.node_id, kind="error", cs="CP-ec", conn=call["conn"],
                      id=msg_id, code="MadeUpError", description="x")
    assert (await cp.recv())[:3] == [4, msg_id, "InternalError"]
    assert (await backend.next("failed", cs="CP-ec"))["code"] == "Malformed"
    await cp.close()


async def test_a_burst_of_connections_is_registered(router_node: RouterNode,
                                                    backend: Backend) -> None:
    # 300 handshakes at once: registry writes queue on a bounded pool instead
    # of failing (redis-py's default pool refuses past 100 connections).
    chargers = await asyncio.gather(*(Charger.connect(router_node, f"CP-burst{i}")
                                      for i in range(300)))
    deadline = time.monotonic() + 20
    while True:
        n = len([k async for k in backend.redis.scan_iter(
            f"{router_node.key_prefix}:cs:CP-burst*", count=1000)])
        if n == 300 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert n == 300
    assert router_node.metric("ocpp_router_redis_errors_total") == 0
    await asyncio.gather(*(cp.close() for cp in chargers))
