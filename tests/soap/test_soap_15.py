"""OCPP 1.5 (and 1.2) over SOAP end to end: converted to the 1.6 shapes where
exact (docs/soap.md), published in 1.5 names otherwise."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from router.backend.client import Client
from router.backend.errors import InvalidPayload
from tests.conftest import RouterNode, timeout
from tests.server.helpers import Backend
from tests.soap.chargepoint import SoapChargePoint

NOW = "2026-12-04T10:00:00Z"


async def test_a_15_soap_charger_through_the_streams(router_node: RouterNode,
                                                     backend: Backend) -> None:
    redis = aioredis.from_url(router_node.redis_url)
    async with SoapChargePoint(router_node.port, "S15", "1.5") as cp, \
            Client(redis, prefix=router_node.key_prefix) as client:
        task = asyncio.create_task(cp.call("BootNotification", {
            "chargePointVendor": "OLD", "chargePointModel": "M15"}))
        connected = await backend.next("connected", cs="S15")
        assert connected["proto"] == "ocpp1.5" and connected["transport"] == "soap"
        call = await backend.next("call", cs="S15", action="BootNotification")
        # The backend answers in the 1.6 shape; the charger gets heartbeatInterval.
        await backend.reply(call, {"status": "Accepted", "currentTime": NOW, "interval": 900})
        assert await task == {"status": "Accepted", "currentTime": NOW,
                              "heartbeatInterval": "900"}

        hb = await cp.call("Heartbeat", {})           # answered at the edge, 1.5 namespace
        assert hb["currentTime"].endswith("Z")
        task = asyncio.create_task(cp.call("Authorize", {"idTag": "T15"}))
        call = await backend.next("call", cs="S15", action="Authorize")
        await backend.reply(call, {"idTagInfo": {"status": "Accepted"}})
        assert await task == {"idTagInfo": {"status": "Accepted"}}
        task = asyncio.create_task(cp.call("StartTransaction", {
            "connectorId": 2, "idTag": "T15", "timestamp": NOW, "meterStart": 10}))
        call = await backend.next("call", cs="S15", action="StartTransaction")
        assert json.loads(call["payload"]) == {"connectorId": 2, "idTag": "T15",
                                               "timestamp": NOW, "meterStart": 10}
        await backend.reply(call, {"transactionId": 7, "idTagInfo": {"status": "Accepted"}})
        assert (await task)["transactionId"] == "7"

        # StatusNotification keeps its 1.5 names and values (Occupied has no 1.6 equal).
        task = asyncio.create_task(cp.call("StatusNotification", {
            "connectorId": 1, "status": "Occupied", "errorCode": "Mode3Error"}))
        call = await backend.next("call", cs="S15", action="StatusNotification")
        assert json.loads(call["payload"]) == {"connectorId": 1, "status": "Occupied",
                                               "errorCode": "Mode3Error"}
        await backend.reply(call, {})
        assert await task == {}

        # MeterValues: values/value with attributes → meterValue/sampledValue, Amp → A.
        task = asyncio.create_task(cp.call("MeterValues", {
            "connectorId": 2, "transactionId": 7, "values": [{"timestamp": "2026-12-04T10:00:00",
             "value": [{"_text": "16", "_attrs": {"unit": "Amp", "measurand": "Current.Import"}},
                       {"_text": "5000"}]}]}))
        call = await backend.next("call", cs="S15", action="MeterValues")
        assert json.loads(call["payload"]) == {"connectorId": 2, "transactionId": 7,
                                               "meterValue": [{"timestamp": NOW, "sampledValue": [
                                                   {"value": "16", "unit": "A",
                                                    "measurand": "Current.Import"},
                                                   {"value": "5000"}]}]}
        await backend.reply(call, {})
        await task

        # StopTransaction: transactionData[].values[] flattened to the 1.6 list.
        task = asyncio.create_task(cp.call("StopTransaction", {
            "transactionId": 7, "timestamp": NOW, "meterStop": 5000,
            "transactionData": [{"values": {"timestamp": NOW, "value": {"_text": "5000"}}}]}))
        call = await backend.next("call", cs="S15", action="StopTransaction")
        assert json.loads(call["payload"])["transactionData"] == [
            {"timestamp": NOW, "sampledValue": [{"value": "5000"}]}]
        await backend.reply(call, {"idTagInfo": {"status": "Accepted"}})
        await task

        # Backend → charger: 1.6 shapes, converted; answers converted back.
        cp.handlers["UnlockConnector"] = lambda p: {"status": "Accepted"}
        cp.handlers["SendLocalList"] = lambda p: {"status": "HashError", "hash": "abc"}
        cp.handlers["RemoteStartTransaction"] = lambda p: {"status": "Accepted"}
        assert await client.call("S15", "UnlockConnector", {"connectorId": 1}) == {
            "status": "Unlocked"}
        assert await client.call("S15", "SendLocalList", {
            "listVersion": 3, "updateType": "Full",
            "localAuthorizationList": [{"idTag": "T1"}]}) == {"status": "HashError",
                                                              "hash": "abc"}
        action, _, payload = cp.received[-1]
        assert action == "SendLocalList"
        assert payload == {"updateType": "Full", "listVersion": "3",
                           "localAuthorisationList": {"idTag": "T1"}}
        assert await client.call("S15", "RemoteStartTransaction", {"idTag": "T1"}) == {
            "status": "Accepted"}
        cp.handlers["Reset"] = lambda p: {"status": "Accepted"}
        cp.handlers["ChangeConfiguration"] = lambda p: {"status": "NotSupported"}
        assert await client.call("S15", "Reset", {"type": "Hard"}) == {"status": "Accepted"}
        assert await client.call("S15", "ChangeConfiguration", {
            "key": "HeartbeatInterval", "value": "900"}) == {"status": "NotSupported"}
        assert cp.received[-1][2] == {"key": "HeartbeatInterval", "value": "900"}
        # A 1.6-only field cannot be sent to a 1.5 charger: failed InvalidPayload.
        with pytest.raises(InvalidPayload):
            await client.call("S15", "RemoteStartTransaction", {
                "idTag": "T1", "chargingProfile": {"chargingProfileId": 1}})
        # … nor a 1.6-only operation.
        with pytest.raises(InvalidPayload):
            await client.call("S15", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    await redis.aclose()


async def test_a_12_soap_charger_meter_values(router_node: RouterNode,
                                              backend: Backend) -> None:
    async with SoapChargePoint(router_node.port, "S12", "1.2") as cp:
        task = asyncio.create_task(cp.call("MeterValues", {
            "connectorId": 1, "values": [{"timestamp": NOW, "value": 1234}]}))
        call = await backend.next("call", cs="S12", action="MeterValues")
        assert call["proto"] == "ocpp1.2"
        assert json.loads(call["payload"]) == {"connectorId": 1, "meterValue": [
            {"timestamp": NOW, "sampledValue": [{"value": "1234"}]}]}
        await backend.reply(call, {})
        await task


async def test_reference_csms_serves_a_15_soap_charger(router_node: RouterNode) -> None:
    # A migration in small: the reference CSMS, written against the 1.6
    # shapes, runs a 1.5 SOAP charger's session without knowing about SOAP.
    from router.backend.reference_csms import ReferenceCSMS

    redis = aioredis.from_url(router_node.redis_url)
    csms = ReferenceCSMS(redis, prefix=router_node.key_prefix, block=0.2)
    task = asyncio.create_task(csms.run())
    await asyncio.wait_for(csms.app.wait_ready(), timeout(10))
    try:
        async with SoapChargePoint(router_node.port, "REF15", "1.5") as cp:
            boot = await cp.call("BootNotification", {"chargePointVendor": "OLD",
                                                      "chargePointModel": "M15"})
            assert boot["status"] == "Accepted" and int(boot["heartbeatInterval"]) > 0
            assert (await cp.call("Authorize", {"idTag": "T"}))["idTagInfo"]["status"] \
                == "Accepted"
            await cp.call("StatusNotification", {"connectorId": 1, "status": "Occupied",
                                                 "errorCode": "NoError"})
            start = await cp.call("StartTransaction", {
                "connectorId": 1, "idTag": "T", "timestamp": NOW, "meterStart": 0})
            tx = int(start["transactionId"])
            assert await cp.call("MeterValues", {"connectorId": 1, "transactionId": tx,
                                                 "values": [{"timestamp": NOW, "value": [
                                                     {"_text": "100"}]}]}) == {}
            await cp.call("StopTransaction", {"transactionId": tx, "timestamp": NOW,
                                              "meterStop": 100})
            assert await cp.call("DiagnosticsStatusNotification", {"status": "Uploaded"}) == {}
    finally:
        csms.stop()
        await task
        await redis.aclose()
