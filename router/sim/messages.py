"""Pre-encoded OCPP-J messages for the load generator and the bare responders.

The generator must be cheap per message (it shares the CPU with the system
under test), so every charger CALL is a constant byte string: only the message
id is spliced in (``b'[2,"' + id + b'",' + BODY``). All payloads are valid for
the OCA JSON schemas of their version; ``tests/bench/test_messages.py`` checks
them with ``jsonschema`` against the schemas shipped with the ``ocpp`` package.

OCPP-J 1.6 §4.2.1 / OCPP 2.0.1 Part 4 §4.2.1: a CALL is
``[2, "<messageId>", "<action>", {payload}]``; a CALLRESULT is
``[3, "<messageId>", {payload}]``; a CALLERROR is
``[4, "<messageId>", "<errorCode>", "<errorDescription>", {errorDetails}]``.
"""

from __future__ import annotations

from typing import Any

import orjson

PROTOCOLS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")

# A fixed, schema-valid time stamp: the payloads are pre-encoded once, and no
# system under test checks clock skew.
_TS = "2026-11-21T12:00:00.000Z"
_ID_TAG = "04A2B3C4D5E6F7"


def _boot(proto: str) -> dict[str, Any]:
    if proto == "ocpp1.6":
        return {"chargePointVendor": "BenchCo", "chargePointModel": "Sim-22",
                "chargePointSerialNumber": "SIM0000001", "firmwareVersion": "1.4.2"}
    return {"reason": "PowerUp",
            "chargingStation": {"model": "Sim-22", "vendorName": "BenchCo",
                                "serialNumber": "SIM0000001", "firmwareVersion": "1.4.2"}}


def _meter_values(proto: str) -> dict[str, Any]:
    # Several sampled values per reading, as real chargers send them (energy
    # register, power, voltage and current per phase, state of charge).
    if proto == "ocpp1.6":
        sampled = [
            {"value": "12345.6", "context": "Sample.Periodic",
             "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "7200.0", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
            {"value": "31.2", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
            {"value": "31.0", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
            {"value": "30.9", "measurand": "Current.Import", "phase": "L3", "unit": "A"},
            {"value": "57", "measurand": "SoC", "unit": "Percent"},
        ]
        return {"connectorId": 1, "transactionId": 1,
                "meterValue": [{"timestamp": _TS, "sampledValue": sampled}]}
    sampled2 = [
        {"value": 12345.6, "context": "Sample.Periodic",
         "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
        {"value": 7200.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
        {"value": 230.1, "measurand": "Voltage", "phase": "L1-N", "unitOfMeasure": {"unit": "V"}},
        {"value": 31.2, "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "A"}},
        {"value": 31.0, "measurand": "Current.Import", "phase": "L2", "unitOfMeasure": {"unit": "A"}},
        {"value": 30.9, "measurand": "Current.Import", "phase": "L3", "unitOfMeasure": {"unit": "A"}},
        {"value": 57, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
    ]
    return {"evseId": 1, "meterValue": [{"timestamp": _TS, "sampledValue": sampled2}]}


def _status(proto: str, status: str) -> dict[str, Any]:
    if proto == "ocpp1.6":
        return {"connectorId": 1, "errorCode": "NoError", "status": status, "timestamp": _TS}
    return {"timestamp": _TS, "connectorStatus": "Occupied" if status == "Charging" else "Available",
            "evseId": 1, "connectorId": 1}


def _tx_start(proto: str) -> tuple[str, dict[str, Any]]:
    if proto == "ocpp1.6":
        return "StartTransaction", {"connectorId": 1, "idTag": _ID_TAG, "meterStart": 12000,
                                    "timestamp": _TS}
    return "TransactionEvent", {
        "eventType": "Started", "timestamp": _TS, "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "TX-0001", "chargingState": "Charging"},
        "idToken": {"idToken": _ID_TAG, "type": "ISO14443"},
        "evse": {"id": 1, "connectorId": 1},
    }


def _tx_stop(proto: str) -> tuple[str, dict[str, Any]]:
    if proto == "ocpp1.6":
        return "StopTransaction", {"transactionId": 1, "idTag": _ID_TAG, "meterStop": 24000,
                                   "timestamp": _TS, "reason": "EVDisconnected"}
    return "TransactionEvent", {
        "eventType": "Ended", "timestamp": _TS, "triggerReason": "EVCommunicationLost",
        "seqNo": 2, "transactionInfo": {"transactionId": "TX-0001", "stoppedReason": "EVDisconnected"},
    }


def _authorize(proto: str) -> dict[str, Any]:
    if proto == "ocpp1.6":
        return {"idTag": _ID_TAG}
    return {"idToken": {"idToken": _ID_TAG, "type": "ISO14443"}}


def _body(action: str, payload: dict[str, Any]) -> bytes:
    """The part of a CALL after the message id: ``"Action",{payload}]``."""
    return b'"' + action.encode() + b'",' + orjson.dumps(payload) + b"]"


def boot_body(proto: str) -> bytes:
    """The pre-encoded BootNotification CALL tail for ``proto``."""
    return _body("BootNotification", _boot(proto))


def mix(proto: str) -> list[tuple[str, bytes]]:
    """The closed-loop message cycle of one charger, as ``(action, body)`` pairs.

    The mix follows what a charging session looks like on the wire: meter
    values dominate (one reading per sample interval), status changes and
    heartbeats in between, one transaction start and stop per cycle.
    Chargers start at different offsets in the cycle, so the aggregate mix
    is the cycle's mix at every moment.
    """
    meter = _body("MeterValues", _meter_values(proto))
    start_action, start = _tx_start(proto)
    stop_action, stop = _tx_stop(proto)
    cycle = [
        ("StatusNotification", _body("StatusNotification", _status(proto, "Preparing"))),
        ("Authorize", _body("Authorize", _authorize(proto))),
        (start_action, _body(start_action, start)),
        ("StatusNotification", _body("StatusNotification", _status(proto, "Charging"))),
        ("MeterValues", meter),
        ("MeterValues", meter),
        ("Heartbeat", _body("Heartbeat", {})),
        ("MeterValues", meter),
        ("MeterValues", meter),
        ("MeterValues", meter),
        (stop_action, _body(stop_action, stop)),
        ("StatusNotification", _body("StatusNotification", _status(proto, "Available"))),
    ]
    return cycle


def call(message_id: bytes, body: bytes) -> bytes:
    """A complete CALL frame payload from an id and a pre-encoded body."""
    return b'[2,"' + message_id + b'",' + body


# --- answers of a CSMS to charger CALLs (the bare responders) -----------------

def _csms_responses(proto: str) -> dict[str, dict[str, Any]]:
    if proto == "ocpp1.6":
        accepted = {"idTagInfo": {"status": "Accepted"}}
        return {
            "BootNotification": {"status": "Accepted", "currentTime": _TS, "interval": 300},
            "Heartbeat": {"currentTime": _TS},
            "StatusNotification": {},
            "MeterValues": {},
            "Authorize": accepted,
            "StartTransaction": {"transactionId": 1, "idTagInfo": {"status": "Accepted"}},
            "StopTransaction": accepted,
            "DataTransfer": {"status": "Accepted"},
            "DiagnosticsStatusNotification": {},
            "FirmwareStatusNotification": {},
        }
    return {
        "BootNotification": {"status": "Accepted", "currentTime": _TS, "interval": 300},
        "Heartbeat": {"currentTime": _TS},
        "StatusNotification": {},
        "MeterValues": {},
        "Authorize": {"idTokenInfo": {"status": "Accepted"}},
        "TransactionEvent": {},
        "DataTransfer": {"status": "Accepted"},
        "NotifyEvent": {},
        "NotifyReport": {},
        "FirmwareStatusNotification": {},
        "LogStatusNotification": {},
        "SecurityEventNotification": {},
    }


CSMS_RESPONSES: dict[str, dict[str, bytes]] = {
    proto: {action: orjson.dumps(payload) for action, payload in _csms_responses(proto).items()}
    for proto in PROTOCOLS
}
"""``CSMS_RESPONSES[proto][action]``: a schema-valid CALLRESULT payload (bytes)."""


def callresult(message_id: bytes, payload: bytes) -> bytes:
    """A complete CALLRESULT frame payload."""
    return b'[3,"' + message_id + b'",' + payload + b"]"


def callerror(message_id: bytes, code: str, description: str) -> bytes:
    """A complete CALLERROR frame payload with empty details."""
    return orjson.dumps([4, message_id.decode(), code, description, {}])


# --- answers of a charger to backend CALLs (the simulated chargers) -----------

_CHARGER_ACCEPTED_16 = (
    "RemoteStartTransaction", "RemoteStopTransaction", "Reset", "ChangeAvailability",
    "ChangeConfiguration", "ClearCache", "TriggerMessage", "DataTransfer",
    "SetChargingProfile", "ClearChargingProfile", "ReserveNow", "CancelReservation",
    "SendLocalList",
)
_CHARGER_ACCEPTED_2X = (
    "RequestStartTransaction", "RequestStopTransaction", "Reset", "ChangeAvailability",
    "ClearCache", "TriggerMessage", "DataTransfer", "SetChargingProfile",
    "ClearChargingProfile", "ReserveNow", "CancelReservation", "SendLocalList",
    "UnlockConnector",
)


def charger_response(proto: str, action: str, payload: Any) -> bytes | None:
    """A schema-valid CALLRESULT payload a charger sends for a backend CALL.

    Args:
        proto: the connection's subprotocol.
        action: the backend CALL's action.
        payload: the backend CALL's decoded payload (some answers echo it).

    Returns:
        The encoded payload, or ``None`` if the simulated charger does not
        implement ``action`` (answer with CALLERROR ``NotImplemented``).
    """
    if proto == "ocpp1.6":
        if action in _CHARGER_ACCEPTED_16:
            return b'{"status":"Accepted"}'
        if action == "UnlockConnector":
            return b'{"status":"Unlocked"}'
        if action == "GetConfiguration":
            keys = payload.get("key") or ["HeartbeatInterval"]
            return orjson.dumps({"configurationKey": [
                {"key": k, "readonly": True, "value": "300"} for k in keys]})
        if action == "GetLocalListVersion":
            return b'{"listVersion":1}'
        if action == "GetDiagnostics":
            return b"{}"
        if action == "UpdateFirmware":
            return b"{}"
        if action == "GetCompositeSchedule":
            return b'{"status":"Rejected"}'
        return None
    if action in _CHARGER_ACCEPTED_2X:
        if action == "UnlockConnector":
            return b'{"status":"Unlocked"}'
        if action == "RequestStartTransaction":
            return b'{"status":"Accepted","transactionId":"TX-0001"}'
        return b'{"status":"Accepted"}'
    if action == "GetVariables":
        return orjson.dumps({"getVariableResult": [
            {"attributeStatus": "Accepted", "attributeValue": "300",
             "component": item["component"], "variable": item["variable"]}
            for item in payload.get("getVariableData", [])]})
    if action == "SetVariables":
        return orjson.dumps({"setVariableResult": [
            {"attributeStatus": "Accepted",
             "component": item["component"], "variable": item["variable"]}
            for item in payload.get("setVariableData", [])]})
    if action == "GetLocalListVersion":
        return b'{"versionNumber":1}'
    if action == "GetBaseReport":
        return b'{"status":"Accepted"}'
    return None
