"""OCPP 1.6 over SOAP end to end: a SOAP charge point (real HTTP both ways) and
a backend on the streams, through a real router process and a real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.backend.client import Client
from router.backend.errors import ChargerError, NotConnected
from tests.conftest import RouterNode
from tests.server.helpers import Backend
from tests.soap.chargepoint import Fault, SoapChargePoint

NOW = "2026-12-04T10:00:00Z"


async def answer(backend: Backend, action: str, payload: dict[str, Any],
                 cs: str = "SOAP-1") -> dict[str, str]:
    """Wait for the charger's ``action`` call and answer it with ``payload``."""
    call = await backend.next("call", cs=cs, action=action)
    await backend.reply(call, payload)
    return call


async def test_a_16_soap_charger_runs_a_session(router_node: RouterNode,
                                                backend: Backend) -> None:
    async with SoapChargePoint(router_node.port, "SOAP-1") as cp:
        boot = {"chargePointVendor": "ACME", "chargePointModel": "S1",
                "firmwareVersion": "2.1"}
        task = asyncio.create_task(cp.call("BootNotification", boot))
        connected = await backend.next("connected", cs="SOAP-1")
        assert connected["proto"] == "ocpp1.6" and connected["transport"] == "soap"
        assert connected["endpoint"] == cp.address
        call = await answer(backend, "BootNotification",
                            {"status": "Accepted", "currentTime": NOW, "interval": 300})
        # The payload is exactly the 1.6 JSON payload, in schema order.
        assert json.loads(call["payload"]) == boot
        assert call["transport"] == "soap" and call["conn"] == connected["conn"]
        assert await task == {"status": "Accepted", "currentTime": NOW, "interval": "300"}
        reg = await backend.registry("SOAP-1")
        assert reg["transport"] == "soap" and reg["endpoint"] == cp.address
        assert reg["node"] == router_node.node_id and reg["proto"] == "ocpp1.6"

        # Heartbeat is answered at the edge (default --heartbeat edge).
        hb = await cp.call("Heartbeat", {})
        assert hb["currentTime"].endswith("Z")

        task = asyncio.create_task(cp.call("Authorize", {"idTag": "TAG1"}))
        await answer(backend, "Authorize", {"idTagInfo": {"status": "Accepted"}})
        assert await task == {"idTagInfo": {"status": "Accepted"}}

        task = asyncio.create_task(cp.call("StartTransaction", {
            "connectorId": 1, "idTag": "TAG1", "timestamp": NOW, "meterStart": 0}))
        call = await answer(backend, "StartTransaction",
                            {"transactionId": 42, "idTagInfo": {"status": "Accepted"}})
        assert json.loads(call["payload"])["meterStart"] == 0
        assert (await task)["transactionId"] == "42"

        mv = {"connectorId": 1, "transactionId": 42, "meterValue": [
            {"timestamp": NOW, "sampledValue": [
                {"value": "1200", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "16.2", "measurand": "Current.Import", "unit": "A", "phase": "L1"}]},
            {"timestamp": NOW, "sampledValue": [{"value": "1300"}]}]}
        task = asyncio.create_task(cp.call("MeterValues", mv, gzip_body=True))
        call = await answer(backend, "MeterValues", {})
        assert json.loads(call["payload"]) == mv        # lists from maxOccurs, ints typed
        assert await task == {}

        task = asyncio.create_task(cp.call("StopTransaction", {
            "transactionId": 42, "timestamp": NOW, "meterStop": 1300, "reason": "Local"}))
        call = await answer(backend, "StopTransaction", {"idTagInfo": {"status": "Accepted"}})
        assert json.loads(call["payload"])["reason"] == "Local"
        await task


async def test_backend_calls_reach_the_soap_charger(router_node: RouterNode,
                                                    backend: Backend) -> None:
    redis = aioredis.from_url(router_node.redis_url)
    async with SoapChargePoint(router_node.port, "SOAP-1") as cp, \
            Client(redis, prefix=router_node.key_prefix) as client:
        cp.handlers["RemoteStartTransaction"] = lambda p: {"status": "Accepted"}
        cp.handlers["Reset"] = lambda p: {"status": "Accepted"}
        cp.handlers["ChangeConfiguration"] = lambda p: {"status": "RebootRequired"}
        task = asyncio.create_task(cp.call("BootNotification", {
            "chargePointVendor": "ACME", "chargePointModel": "S1"}))
        await answer(backend, "BootNotification",
                     {"status": "Accepted", "currentTime": NOW, "interval": 300})
        await task

        assert await client.call("SOAP-1", "RemoteStartTransaction",
                                 {"idTag": "TAG1", "connectorId": 1}) == {"status": "Accepted"}
        action, headers, payload = cp.received[-1]
        assert action == "RemoteStartTransaction"
        assert payload == {"connectorId": "1", "idTag": "TAG1"}   # schema order
        assert headers["chargeBoxIdentity"] == "SOAP-1"
        assert headers["Action"] == "/RemoteStartTransaction"
        assert headers["To"] == cp.address and headers["MessageID"].startswith("urn:uuid:")

        assert await client.call("SOAP-1", "Reset", {"type": "Soft"}) == {"status": "Accepted"}
        assert await client.call("SOAP-1", "ChangeConfiguration",
                                 {"key": "HeartbeatInterval", "value": "600"}) == {
            "status": "RebootRequired"}
        # The charger's fault ends as an error entry.
        with pytest.raises(ChargerError) as err:
            await client.call("SOAP-1", "ClearCache", {})
        assert err.value.code == "NotSupported"
        # One call in flight per charger; the others queue (OCPP: one at a time).
        cp.delay = 0.2
        results = await asyncio.gather(*(client.call("SOAP-1", "Reset", {"type": "Hard"})
                                         for _ in range(3)))
        assert results == [{"status": "Accepted"}] * 3 and cp.max_active == 1
        # Every outcome is on the inbound stream too.
        result = await backend.next("result", cs="SOAP-1", action="RemoteStartTransaction")
        assert result["transport"] == "soap"
        assert json.loads(result["payload"]) == {"status": "Accepted"}
    await redis.aclose()


async def test_unreachable_soap_charger_ends_as_failed(router_node: RouterNode,
                                                       backend: Backend) -> None:
    redis = aioredis.from_url(router_node.redis_url)
    async with SoapChargePoint(router_node.port, "SOAP-2") as cp, \
            Client(redis, prefix=router_node.key_prefix) as client:
        task = asyncio.create_task(cp.call("BootNotification", {
            "chargePointVendor": "ACME", "chargePointModel": "S1"}))
        await answer(backend, "BootNotification",
                     {"status": "Accepted", "currentTime": NOW, "interval": 300}, cs="SOAP-2")
        await task
        await cp.stop_server()
        with pytest.raises(NotConnected):
            await client.call("SOAP-2", "Reset", {"type": "Hard"}, timeout=10)
        failed = await backend.next("failed", cs="SOAP-2")
        assert failed["code"] == "NotConnected" and failed["transport"] == "soap"
    await redis.aclose()


async def test_backend_error_and_timeout_become_faults(router_factory: Any) -> None:
    node = router_factory("--reply-timeout", "3", "--publish-timeout", "1")
    backend = Backend(node)
    async with SoapChargePoint(node.port, "SOAP-3") as cp:
        task = asyncio.create_task(cp.call("Authorize", {"idTag": "T"}))
        call = await backend.next("call", cs="SOAP-3")
        await backend.out(call["node"], kind="error", cs="SOAP-3", conn=call["conn"],
                          id=call["id"], code="SecurityError", description="who are you")
        with pytest.raises(Fault) as fault:
            await task
        assert (fault.value.status, fault.value.code, fault.value.subcode) == (
            400, "Sender", "SecurityError")
        assert fault.value.reason == "who are you"
        # No answer at all: a Receiver fault after --reply-timeout.
        with pytest.raises(Fault) as fault:
            await cp.call("Authorize", {"idTag": "T"})
        assert (fault.value.status, fault.value.code, fault.value.subcode) == (
            500, "Receiver", "InternalError")
        late = await backend.next("call", cs="SOAP-3")
        await backend.reply(late, {"idTagInfo": {"status": "Accepted"}})
        failed = await backend.next("failed", cs="SOAP-3")
        assert failed["code"] == "NoPendingCall" and failed["id"] == late["id"]
        # A backend result that breaks the response schema: InternalError to
        # the charger, failed InvalidPayload to the backend.
        task = asyncio.create_task(cp.call("Authorize", {"idTag": "T"}))
        call = await backend.next("call", cs="SOAP-3")
        await backend.reply(call, {"idTagInfo": {"status": "Maybe"}})
        with pytest.raises(Fault) as fault:
            await task
        assert fault.value.code == "Receiver"
        failed = await backend.next("failed", cs="SOAP-3")
        assert failed["code"] == "InvalidPayload" and "status" in failed["description"]
    await backend.close()


async def test_request_fed_one_byte_at_a_time(router_node: RouterNode) -> None:
    # The HTTP side and the POST hand-over cope with any segmentation.
    async with SoapChargePoint(router_node.port, "SLOW-1") as cp:
        body = cp.request("Heartbeat", {})
        data = (b"POST /ocpp/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/soap+xml\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        reader, writer = await asyncio.open_connection("127.0.0.1", router_node.port)
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
        resp = await reader.read()
        writer.close()
        assert resp.startswith(b"HTTP/1.1 200 ") and b"heartbeatResponse" in resp


async def test_pipelined_requests_are_answered_in_order(router_node: RouterNode) -> None:
    async with SoapChargePoint(router_node.port, "PIPE-1") as cp:
        one = cp.request("Heartbeat", {}, message_id="urn:uuid:one")
        two = cp.request("Heartbeat", {}, message_id="urn:uuid:two")
        head = b"POST /ocpp/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", router_node.port)
        writer.write(head % len(one) + one + head % len(two) + two)
        first = await reader.readuntil(b"</s:Envelope>")
        second = await reader.readuntil(b"</s:Envelope>")
        writer.close()
        assert b"urn:uuid:one" in first and b"urn:uuid:two" in second
        assert first.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 200 " in second
